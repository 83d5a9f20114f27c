"""User namespaces on real containers: id maps, setgroups, pid 1, devices, joining by path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness import Runtime, add_userns


def _userns_config(hc: Runtime, rootfs: Path, args: list[str]) -> dict[str, Any]:
    config = hc.config(args)
    config["root"]["path"] = str(rootfs)
    add_userns(config)
    return config


def test_maps_pid1_and_ownership(hc: Runtime, open_rootfs: Path, tmp_path: Path) -> None:
    shared = Path(f"/tmp/handcar-userns-{os.getpid()}")
    shared.mkdir(mode=0o777, exist_ok=True)
    shared.chmod(0o777)
    try:
        config = _userns_config(
            hc,
            open_rootfs,
            [
                "sh",
                "-c",
                "echo $$; id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; "
                "cat /proc/self/setgroups; touch /root/f; stat -c '%u %g' /root/f; "
                "readlink /proc/self/ns/user",
            ],
        )
        config["mounts"].append(
            {"destination": "/root", "type": "bind", "source": str(shared), "options": ["rbind"]}
        )
        result = hc.run(config["process"]["args"], config)
        assert result.rc == 0, result
        lines = result.out.splitlines()
        assert lines[:3] == ["1", "0", "0"]
        assert lines[3].split() == ["0", "100000", "65536"]
        assert lines[4].split() == ["0", "100000", "65536"]
        assert lines[5] == "allow"  # a privileged runtime maps freely: setgroups stays allowed
        assert lines[6] == "0 0"
        assert lines[7] != os.readlink("/proc/self/ns/user")
        st = os.stat(shared / "f")
        assert (st.st_uid, st.st_gid) == (100000, 100000)
    finally:
        for child in shared.iterdir():
            child.unlink()
        shared.rmdir()


def test_user_and_groups_inside_the_namespace(hc: Runtime, open_rootfs: Path) -> None:
    config = _userns_config(hc, open_rootfs, ["sh", "-c", "id -u; id -g; id -G"])
    config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}
    result = hc.run(config["process"]["args"], config)
    assert result.rc == 0, result
    assert result.out.split("\n")[:3] == ["1000", "1000", "1000 10 20"]


def test_devices_are_bound_from_the_host(hc: Runtime, open_rootfs: Path) -> None:
    """mknod is refused in a user namespace: the default devices are bind mounts of the host's
    nodes, and they work."""
    config = _userns_config(
        hc,
        open_rootfs,
        [
            "sh",
            "-c",
            "stat -c '%t:%T %F' /dev/null /dev/zero /dev/tty; echo x > /dev/null && "
            "head -c 4 /dev/zero | wc -c; grep -c ' /dev/null ' /proc/self/mountinfo",
        ],
    )
    result = hc.run(config["process"]["args"], config)
    assert result.rc == 0, result
    lines = result.out.splitlines()
    assert lines[0] == "1:3 character special file"
    assert lines[1] == "1:5 character special file"
    assert lines[3] == "4" and int(lines[4]) >= 1


def test_join_a_user_namespace_by_path(hc: Runtime, open_rootfs: Path) -> None:
    first = hc.create(_userns_config(hc, open_rootfs, ["sleep", "300"]))
    pid = hc.state(first)["pid"]
    config = hc.config(["sh", "-c", "readlink /proc/self/ns/user; cat /proc/self/uid_map; id -u"])
    config["root"]["path"] = str(open_rootfs)
    config["linux"]["namespaces"].append({"type": "user", "path": f"/proc/{pid}/ns/user"})
    result = hc.run(config["process"]["args"], config)
    assert result.rc == 0, result
    lines = result.out.splitlines()
    assert lines[0] == os.readlink(f"/proc/{pid}/ns/user")
    assert lines[1].split() == ["0", "100000", "65536"]
    assert lines[2] == "0"


def test_bad_map_is_a_clear_error(hc: Runtime, open_rootfs: Path) -> None:
    config = _userns_config(hc, open_rootfs, ["true"])
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 0}]
    result = hc.run(["true"], config)
    assert result.rc == 1
    assert "linux.uidMappings" in result.msg, result
    assert list(hc.root.iterdir()) == []
