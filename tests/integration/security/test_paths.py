"""Attacks through the config's paths and kernel parameters (issue 11, holes 3, 4, 6 and 7).

Each test performs the attack against a real handcar container and runs the same bundle under
runc 1.1.5 (its own --root under tmp) as the oracle: handcar must refuse, or contain, exactly
what runc refuses or contains, with runc's wording. The host's sysctls are read before and
after every attempt, and restored if an attempt changed them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import Result, Runtime, add_userns, wait_for

# Docker's default capability set: enough for `unshare -r` (a user namespace with a mapped
# root) inside the container, far from privileged.
DOCKER_CAPS = [
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
]


def run_both(hc: Runtime, runc: Runtime, bundle: Path, *flags: str) -> tuple[Result, Result]:
    mine = hc("run", *flags, "--bundle", str(bundle), hc.new_id())
    theirs = runc("run", *flags, "--bundle", str(bundle), runc.new_id())
    return mine, theirs


def reason(result: Result) -> str:
    """The error without the `runc run failed: ` / `handcar run failed: ` lead-in."""
    return result.msg.split(" run failed: ", 1)[-1]


def write_config(bundle: Path, config: dict[str, Any]) -> None:
    (bundle / "config.json").write_text(json.dumps(config, indent=1))


def drop_namespace(config: dict[str, Any], kind: str) -> None:
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != kind]


def join_namespace(config: dict[str, Any], kind: str, path: str) -> None:
    drop_namespace(config, kind)
    config["linux"]["namespaces"].append({"type": kind, "path": path})


def host_ns(kind: str) -> str:
    """This process's namespace of `kind`: the host's, as the runtimes see it."""
    return f"/proc/{os.getpid()}/ns/{'net' if kind == 'network' else kind}"


# ---- hole 3: relative paths are relative to the bundle ---------------------------------------


def test_relative_bind_sources_and_root_path_resolve_in_the_bundle(
    hc: Runtime, runc: Runtime
) -> None:
    """`"source": "."` once bound the host's / read-write; per the spec it is the bundle."""
    config = hc.config(["sh", "-c", "ls /tmp/bundle; echo --; ls /tmp/data"])
    bundle = hc.bundle(config)
    (bundle / "bundle-marker").write_text("")
    (bundle / "data").mkdir()
    (bundle / "data" / "data-marker").write_text("")
    config["root"]["path"] = os.path.relpath(hc.rootfs, bundle)
    config["mounts"] += [
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/tmp/bundle", "type": "bind", "source": ".", "options": ["rbind", "ro"]},
        {"destination": "/tmp/data", "type": "bind", "source": "data", "options": ["bind", "ro"]},
    ]
    write_config(bundle, config)
    mine, theirs = run_both(hc, runc, bundle)
    assert theirs.rc == 0, theirs
    listing = theirs.out.split()
    assert "bundle-marker" in listing and "data-marker" in listing, theirs
    assert "usr" not in listing, theirs
    assert (mine.rc, mine.out) == (theirs.rc, theirs.out), mine


# ---- hole 4: sysctls only in namespaces the container owns -----------------------------------


def proc_sys(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def other_value(key: str, current: str) -> str:
    """A value for `key` that differs from the host's, so a write to the host would show."""
    if key == "net.ipv4.ping_group_range":
        return "0 0" if current.split() != ["0", "0"] else "1 0"
    if key == "kernel.hostname":
        return current  # never rename the host, even on a broken runtime: the refusal shows
    if key == "kernel.domainname":
        return "handcar-attack" if current != "handcar-attack" else "handcar-other"
    number = int(current)
    return str(1 - number) if number in (0, 1) else str(number - 1)


# (sysctl, how the container's namespaces differ from the default config)
REFUSED = [
    ("kernel.msgmax", "no ipc"),
    ("kernel.shm_rmid_forced", "no ipc"),
    ("fs.mqueue.queues_max", "no ipc"),
    ("net.ipv4.ping_group_range", "no network"),
    ("net.ipv4.ping_group_range", "host network"),
    ("kernel.domainname", "no uts"),
    ("kernel.hostname", "no uts"),
    ("kernel.hostname", "own uts"),
    ("vm.swappiness", "own namespaces"),
]


def sysctl_config(hc: Runtime, key: str, namespaces: str, value: str) -> dict[str, Any]:
    config = hc.config(["cat", str(proc_sys(key))])
    config.pop("hostname", None)  # or runc refuses a missing uts for the hostname first
    kind = namespaces.split(" ")[-1]
    if namespaces.startswith("no "):
        drop_namespace(config, kind)
    elif namespaces.startswith("host "):
        join_namespace(config, kind, host_ns(kind))
    config["linux"]["sysctl"] = {key: value}
    return config


class HostSysctl:
    """The host's value of one sysctl, put back if an attempt changed it."""

    def __init__(self, key: str) -> None:
        self.path = proc_sys(key)
        self.before = self.path.read_text().rstrip("\n")

    def now(self) -> str:
        return self.path.read_text().rstrip("\n")

    def restore(self) -> None:
        if self.now() != self.before:
            self.path.write_text(self.before)


def run_guarded(
    hc: Runtime, runc: Runtime, bundle: Path, host: HostSysctl
) -> tuple[Result, Result, str]:
    """run_both; then the host's value, which is put back whatever happened."""
    try:
        mine, theirs = run_both(hc, runc, bundle)
        return mine, theirs, host.now()
    finally:
        host.restore()


def assert_set_as_by_runc(mine: Result, theirs: Result, value: str) -> None:
    assert theirs.rc == 0 and theirs.out.split() == value.split(), theirs
    assert (mine.rc, mine.out) == (theirs.rc, theirs.out), mine


@pytest.mark.parametrize(("key", "namespaces"), REFUSED)
def test_sysctl_outside_the_containers_namespaces_is_refused(
    hc: Runtime, runc: Runtime, key: str, namespaces: str
) -> None:
    host = HostSysctl(key)
    bundle = hc.bundle(sysctl_config(hc, key, namespaces, other_value(key, host.before)))
    mine, theirs, after = run_guarded(hc, runc, bundle, host)
    assert theirs.rc != 0, theirs
    assert mine.rc != 0, mine
    assert after == host.before, f"{key} changed on the host: {host.before!r} -> {after!r}"
    assert mine.msg.endswith(f"linux.sysctl: {reason(theirs)}"), (mine, theirs)
    assert "\n" not in mine.err.strip(), mine


@pytest.mark.parametrize("kind", ["ipc", "uts"])
def test_sysctl_in_the_hosts_namespace_joined_by_path_is_refused(hc: Runtime, kind: str) -> None:
    """Stricter than runc, which counts any ipc or uts entry as the container's own and so
    writes these to the host when the path is the host's namespace (seen with runc 1.1.5).
    handcar judges them as runc judges a network path: the runtime's own namespace is the host's.
    runc is not run here: it would change the host."""
    key = "fs.mqueue.queues_max" if kind == "ipc" else "kernel.domainname"
    host = HostSysctl(key)
    config = sysctl_config(hc, key, "own namespaces", other_value(key, host.before))
    join_namespace(config, kind, host_ns(kind))
    try:
        mine = hc.run(config["process"]["args"], config)
        after = host.now()
    finally:
        host.restore()
    assert mine.rc != 0, mine
    assert after == host.before, f"{key} changed on the host: {host.before!r} -> {after!r}"
    where = "ipc" if kind == "ipc" else "uts"
    assert mine.msg.endswith(
        f'linux.sysctl: sysctl "{key}" is not allowed in the hosts {where} namespace'
    ), mine


ALLOWED = [
    ("kernel.msgmax", "4096"),
    ("fs.mqueue.queues_max", "100"),
    ("net.ipv4.ping_group_range", "0 0"),
    ("net/ipv4/ping_group_range", "0 0"),
    ("kernel.domainname", "handcar-test"),
]


@pytest.mark.parametrize(("key", "value"), ALLOWED)
def test_sysctl_in_the_containers_own_namespace_is_set(
    hc: Runtime, runc: Runtime, key: str, value: str
) -> None:
    dotted = key.replace("/", ".")
    host = HostSysctl(dotted)
    config = hc.config(["cat", str(proc_sys(dotted))])
    config["linux"]["sysctl"] = {key: value}
    mine, theirs, after = run_guarded(hc, runc, hc.bundle(config), host)
    assert_set_as_by_runc(mine, theirs, value)
    assert after == host.before


# ---- hole 6: --no-pivot leaves nothing of the host's mounts ----------------------------------


NO_PIVOT_ATTACK = (
    "unshare -mrpf true && echo userns-ok; "
    "unshare -mrpf mount -t proc proc /tmp && echo procfs-mounted; exit 0"
)


def no_pivot_attack(hc: Runtime) -> dict[str, Any]:
    config = hc.config(["sh", "-c", NO_PIVOT_ATTACK])
    caps = config["process"]["capabilities"]
    for key in ("bounding", "effective", "permitted"):
        caps[key] = DOCKER_CAPS
    caps.pop("ambient", None)
    return config


@pytest.mark.parametrize("userns", [False, True], ids=["host-ids", "userns"])
def test_no_pivot_leaves_no_host_procfs_to_mount_over(
    hc: Runtime, runc: Runtime, open_rootfs: Path, userns: bool
) -> None:
    """With the host's full /proc still in the container's mount namespace, the kernel lets a
    new user namespace mount a fresh, unmasked procfs (runc's no_pivot.bats forbids it). In a
    user namespace the host's mounts are locked and cannot go: they must be covered."""
    config = no_pivot_attack(hc)
    if userns:
        add_userns(config)
        config["root"]["path"] = str(open_rootfs)
    bundle = hc.bundle(config)
    mine, theirs = run_both(hc, runc, bundle, "--no-pivot")
    assert theirs.rc == 0 and "userns-ok" in theirs.out, theirs
    assert "procfs-mounted" not in theirs.out, theirs
    assert mine.rc == 0 and "userns-ok" in mine.out, mine
    assert "procfs-mounted" not in mine.out, mine
    assert mine.err == theirs.err, (mine, theirs)


def test_no_pivot_still_runs_the_container_in_its_rootfs(hc: Runtime, runc: Runtime) -> None:
    config = hc.config(["sh", "-c", "ls /; cat /proc/self/mountinfo | wc -l"])
    bundle = hc.bundle(config)
    mine, theirs = run_both(hc, runc, bundle, "--no-pivot")
    assert theirs.rc == 0, theirs
    assert mine.rc == 0, mine
    assert mine.out.split()[:-1] == theirs.out.split()[:-1], (mine, theirs)


# ---- hole 7: symlinks runc refuses -----------------------------------------------------------


@pytest.fixture
def own_rootfs(hc: Runtime) -> Path:
    """A private copy of the busybox rootfs, for a test that changes it."""
    path = hc.tmp / "own-rootfs"
    shutil.copytree(hc.rootfs, path, symlinks=True)
    return path


@pytest.mark.parametrize(
    ("name", "fstype", "make"),
    [
        ("proc", "proc", "absolute symlink"),
        ("proc", "proc", "relative symlink"),
        ("sys", "sysfs", "absolute symlink"),
        ("proc", "proc", "file"),
    ],
)
def test_proc_and_sys_must_be_ordinary_directories(
    hc: Runtime, runc: Runtime, own_rootfs: Path, name: str, fstype: str, make: str
) -> None:
    (own_rootfs / "elsewhere").mkdir()
    (own_rootfs / name).rmdir()
    if make == "file":
        (own_rootfs / name).write_text("")
    else:
        (own_rootfs / name).symlink_to("/elsewhere" if make.startswith("absolute") else "elsewhere")
    config = hc.config(["ls", "/elsewhere"])
    config["root"]["path"] = str(own_rootfs)
    index = next(i for i, m in enumerate(config["mounts"]) if m["destination"] == f"/{name}")
    bundle = hc.bundle(config)
    mine, theirs = run_both(hc, runc, bundle)
    assert theirs.rc != 0, theirs
    expected = f'filesystem "{fstype}" must be mounted on ordinary directory'
    assert theirs.msg.endswith(expected), theirs
    core = theirs.msg.rsplit("error during container init: ", 1)[-1]
    assert mine.rc != 0, mine
    assert mine.msg.endswith(f"mounts[{index}].destination: {core}"), (mine, theirs)
    assert os.listdir(own_rootfs / "elsewhere") == []


@pytest.mark.parametrize("link", ["absolute root.path", "relative root.path", "parent directory"])
def test_root_path_through_a_symlink_is_refused(hc: Runtime, runc: Runtime, link: str) -> None:
    config = hc.config(["true"])
    bundle = hc.bundle(config)
    if link == "absolute root.path":
        (hc.tmp / "rootfs-link").symlink_to(hc.rootfs)
        config["root"]["path"] = str(hc.tmp / "rootfs-link")
    elif link == "relative root.path":
        (bundle / "rootfs").symlink_to(hc.rootfs)
        config["root"]["path"] = "rootfs"
    else:
        (bundle / "up").symlink_to(hc.rootfs.parent)
        config["root"]["path"] = f"up/{hc.rootfs.name}"
    write_config(bundle, config)
    mine, theirs = run_both(hc, runc, bundle)
    assert theirs.rc != 0, theirs
    assert reason(theirs) == "invalid rootfs: not an absolute path, or a symlink", theirs
    assert mine.rc != 0, mine
    assert mine.msg.endswith(f"root.path: {reason(theirs)}"), (mine, theirs)


def test_sysctl_with_a_missing_netns_path_is_refused_naming_the_path(
    hc: Runtime, runc: Runtime
) -> None:
    config = sysctl_config(hc, "net.ipv4.ping_group_range", "own namespaces", "0 0")
    join_namespace(config, "network", str(hc.tmp / "no-such-netns"))
    bundle = hc.bundle(config)
    mine, theirs = run_both(hc, runc, bundle)
    assert theirs.rc != 0 and reason(theirs).startswith("invalid netns path: stat "), theirs
    index = len(config["linux"]["namespaces"]) - 1
    assert mine.rc != 0, mine
    assert mine.msg.endswith(f"linux.namespaces[{index}].path: {reason(theirs)}"), (mine, theirs)


def test_net_sysctl_in_a_network_namespace_joined_by_path_is_set(
    hc: Runtime, runc: Runtime
) -> None:
    """A namespace joined by path is the container's own unless it is the host's."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    try:
        path = f"/proc/{holder.pid}/ns/net"
        assert wait_for(lambda: os.stat(path).st_ino != os.stat(host_ns("network")).st_ino)
        key, value = "net.ipv4.ping_group_range", "0 0"
        host = HostSysctl(key)
        config = sysctl_config(hc, key, "own namespaces", value)
        join_namespace(config, "network", path)
        mine, theirs, after = run_guarded(hc, runc, hc.bundle(config), host)
    finally:
        holder.kill()
        holder.wait()
    assert_set_as_by_runc(mine, theirs, value)
    assert after == host.before
