"""The root filesystem: mounts, /dev, masking, read-only paths, propagation, path safety."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness import Runtime


def _run_ok(hc: Runtime, script: str, config: dict[str, Any] | None = None) -> str:
    result = hc.run(["sh", "-c", script], config)
    assert result.rc == 0, result
    return result.out


def test_default_mounts_and_readonly_root(hc: Runtime) -> None:
    out = _run_ok(hc, "cat /proc/self/mounts; touch /x 2>&1 || echo ro-root")
    for where in (" /proc ", " /dev ", " /dev/pts ", " /dev/shm ", " /dev/mqueue ", " /sys "):
        assert where in out, where
    assert "ro-root" in out


def test_bind_tmpfs_options_and_propagation(hc: Runtime, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "file").write_text("host data\n")
    config = hc.config()
    config["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(shared), "options": ["rbind", "ro"]},
        {
            "destination": "/scratch",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "size=1m", "mode=700", "rprivate"],
        },
    ]
    out = _run_ok(
        hc,
        "cat /data/file; touch /data/new 2>/dev/null || echo data-ro; "
        "grep ' /scratch ' /proc/self/mounts; stat -c %a /scratch",
        config,
    )
    assert "host data" in out and "data-ro" in out
    assert "size=1024k" in out and "nosuid" in out and "nodev" in out
    assert out.strip().endswith("700")
    assert not (shared / "new").exists()


def test_devices_and_links(hc: Runtime) -> None:
    config = hc.config()
    config["linux"]["devices"] = [
        {"path": "/dev/fuse-like", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600}
    ]
    config["linux"]["resources"]["devices"].append(
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    )
    out = _run_ok(
        hc,
        "ls -l /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /dev/fuse-like; "
        "for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; echo x > /dev/fuse-like",
        config,
    )
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        assert f"/dev/{name}" in out
    assert "crw-------" in out  # the fileMode of linux.devices
    assert "/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\npts/ptmx" in out


def test_masked_and_readonly_paths(hc: Runtime) -> None:
    out = _run_ok(
        hc,
        "cat /proc/kcore | wc -c; ls /sys/firmware | wc -l; "
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo sys-ro; "
        "umount /proc/kcore 2>/dev/null || echo still-masked",
    )
    lines = out.split()
    assert lines[0] == "0" and lines[1] == "0"
    assert "sys-ro" in out and "still-masked" in out


def test_hostname_domainname_and_sysctl(hc: Runtime) -> None:
    config = hc.config()
    config["hostname"] = "box1"
    config["domainname"] = "example.org"
    config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    out = _run_ok(
        hc, "hostname; cat /proc/sys/kernel/domainname /proc/sys/net/ipv4/ip_forward", config
    )
    assert out.split() == ["box1", "example.org", "1"]
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() in ("0", "1")


def test_no_pivot(hc: Runtime) -> None:
    bundle = hc.bundle(args=["sh", "-c", "ls /bin/busybox && cat /proc/1/cmdline"])
    result = hc("run", "--no-pivot", "--bundle", str(bundle), hc.new_id())
    assert result.rc == 0, result
    assert "/bin/busybox" in result.out


def test_symlink_in_rootfs_cannot_redirect_a_mount_to_the_host(hc: Runtime, tmp_path: Path) -> None:
    """A rootfs symlink pointing at a host path is resolved inside the rootfs."""
    rootfs = tmp_path / "evil-rootfs"
    os.system(f"cp -a {hc.rootfs} {rootfs}")
    host_target = tmp_path / "host-target"
    host_target.mkdir()
    (rootfs / "escape").symlink_to(str(host_target))
    (rootfs / "dotdot").symlink_to("../../../../../../" + str(host_target))
    config = hc.config()
    config["root"]["path"] = str(rootfs)
    config["mounts"] += [
        {"destination": "/escape/m1", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/dotdot/m2", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/../../../../m3", "type": "tmpfs", "source": "tmpfs"},
    ]
    _run_ok(hc, "grep -c tmpfs /proc/self/mounts", config)
    assert list(host_target.iterdir()) == []
    assert (rootfs / str(host_target).lstrip("/") / "m1").is_dir()
    assert (rootfs / "m3").is_dir()
    assert not Path("/m3").exists()


def test_mount_failure_is_one_line_naming_the_mount(hc: Runtime) -> None:
    config = hc.config()
    config["mounts"].append({"destination": "/bad", "type": "nosuchfs", "source": "x"})
    result = hc.run(["true"], config)
    assert result.rc == 1
    assert result.msg == 'handcar run failed: mount "x" on /bad: no such device'
    assert len(result.err.strip().splitlines()) == 1
    assert list(hc.root.iterdir()) == []


def test_bind_source_missing(hc: Runtime) -> None:
    config = hc.config()
    config["mounts"].append(
        {"destination": "/bad", "type": "bind", "source": "/no/such/dir", "options": ["bind"]}
    )
    result = hc.run(["true"], config)
    assert result.rc == 1
    assert result.msg.endswith("mounts[7]: bind source /no/such/dir: no such file or directory")


def test_rootfs_propagation_shared(hc: Runtime) -> None:
    config = hc.config()
    config["linux"]["rootfsPropagation"] = "rslave"
    out = _run_ok(hc, "cat /proc/self/mountinfo | head -1", config)
    assert "master:" in out or "shared:" not in out
