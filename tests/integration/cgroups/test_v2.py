"""The cgroup manager on cgroup2, driven as on a pure v2 host (this host's cgroup2 mount holds
only hugetlb, so cpu/memory/io limits are covered by the conversion tests instead)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from handcar.cgroups.fs import CgroupError
from handcar.cgroups.manager import Manager, from_paths
from handcar.linux import bpf
from harness import wait_for

from .conftest import Gate, read

GateFactory = Callable[[str], Gate]


def test_create_join_freeze_thaw_destroy(v2_manager: Manager, gate: GateFactory) -> None:
    path = v2_manager.paths()[""]
    g = gate("while :; do :; done")
    v2_manager.add_pid(g.pid)
    g.open()
    assert read(path + "/cgroup.procs") == str(g.pid)
    v2_manager.freeze()
    assert v2_manager.is_frozen()
    assert "frozen 1" in read(path + "/cgroup.events")
    usage = int(read(path + "/cpu.stat").split()[1])
    time.sleep(0.15)
    assert int(read(path + "/cpu.stat").split()[1]) == usage
    v2_manager.thaw()
    assert not v2_manager.is_frozen()
    assert "frozen 0" in read(path + "/cgroup.events")
    v2_manager.kill_all(signal.SIGKILL)
    assert v2_manager.wait_empty(5.0)
    from_paths(v2_manager.paths(), v2_manager.created()).destroy()
    assert not os.path.exists(path)


def test_cgroup_kill_reaches_every_descendant(v2_manager: Manager, gate: GateFactory) -> None:
    g = gate("sleep 30 & (sleep 30 & sleep 30 & wait) & mkdir -p . ; wait")
    v2_manager.add_pid(g.pid)
    g.open()
    assert wait_for(lambda: len(v2_manager.pids()) == 5)
    # A process that moved itself into a child cgroup is found and killed too.
    child = v2_manager.paths()[""] + "/inner"
    os.mkdir(child)
    victim = v2_manager.pids()[-1]
    with open(child + "/cgroup.procs", "w") as f:
        f.write(str(victim))
    assert victim in v2_manager.pids()
    v2_manager.kill_all(signal.SIGKILL)
    assert v2_manager.wait_empty(5.0)
    assert g.proc.wait(5) == -signal.SIGKILL
    v2_manager.destroy()
    assert not os.path.exists(child)


def test_kill_all_other_signals_freeze_and_thaw(v2_manager: Manager, gate: GateFactory) -> None:
    g = gate("sleep 30 & sleep 30 & wait")
    v2_manager.add_pid(g.pid)
    g.open()
    assert wait_for(lambda: len(v2_manager.pids()) == 3)
    v2_manager.kill_all(signal.SIGTERM)
    assert v2_manager.wait_empty(5.0)
    assert not v2_manager.is_frozen()


# stderr is closed rather than sent to /dev/null, which may be the denied device.
DEVICE_PROBE = (
    "exec 2>&-; (echo x >/dev/null) && echo null-open || echo null-denied;"
    " (exec 3</dev/zero) && echo zero-open || echo zero-denied"
)


def _probe(manager: Manager, gate: GateFactory) -> list[str]:
    g = gate(DEVICE_PROBE)
    manager.add_pid(g.pid)
    g.open()
    return g.output().split()


def test_ebpf_device_filter(v2_manager: Manager, gate: GateFactory) -> None:
    from handcar.cgroups import devices

    path = v2_manager.paths()[""]
    # The container default: deny all, then runc's default devices (/dev/null, /dev/zero...).
    v2_manager.apply({"devices": [{"allow": False, "access": "rwm"}]})
    assert _probe(v2_manager, gate) == ["null-open", "zero-open"]
    assert _attached(path) == 1
    # runc appends its defaults, so a config cannot take /dev/null away; program a policy
    # without them to see a denial: deny all, allow /dev/zero for reading and writing.
    policy = devices.Policy()
    for kind, major, minor, access, allow in devices.parse_rules(
        [{"allow": False}, {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"}]
    ):
        policy.apply(kind, major, minor, access, allow)
    devices.apply_v2(path, policy)
    assert _probe(v2_manager, gate) == ["null-denied", "zero-open"]
    # The new program replaced the old one instead of stacking on it.
    assert _attached(path) == 1
    v2_manager.apply({"devices": []})
    assert _probe(v2_manager, gate) == ["null-open", "zero-open"]
    assert _attached(path) == 1


def test_ebpf_default_allow_with_denied_exception(v2_manager: Manager, gate: GateFactory) -> None:
    from handcar.cgroups import devices

    policy = devices.Policy()
    policy.apply("a", -1, -1, "rwm", True)
    policy.apply("c", 1, 3, "w", False)  # /dev/null: no writing
    devices.apply_v2(v2_manager.paths()[""], policy)
    assert _probe(v2_manager, gate) == ["null-denied", "zero-open"]


def _attached(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return len(bpf.query_programs(fd)[1])
    finally:
        os.close(fd)


def test_cgroup_namespace_shows_the_container_cgroup_as_root(
    v2_manager: Manager, gate: GateFactory
) -> None:
    g = gate("exec unshare --cgroup cat /proc/self/cgroup")
    v2_manager.add_pid(g.pid)
    g.open()
    lines = g.output().splitlines()
    assert "0::/" in lines
    # Without the namespace the same process would see its full path.
    g2 = gate("cat /proc/self/cgroup")
    v2_manager.add_pid(g2.pid)
    g2.open()
    name = v2_manager.paths()[""].rpartition("/")[2]
    assert f"0::/{name}" in g2.output().splitlines()


def test_cgroup_namespace_on_v1_hierarchies(v1_manager: Manager, gate: GateFactory) -> None:
    g = gate("exec unshare --cgroup cat /proc/self/cgroup")
    v1_manager.add_pid(g.pid)
    g.open()
    lines = g.output().splitlines()
    assert any(line.endswith(":memory:/") for line in lines)
    assert any(line.endswith(":pids:/") for line in lines)
    assert "0::/" in lines


def test_hugetlb_and_unified_on_v2(v2_manager: Manager) -> None:
    path = v2_manager.paths()[""]
    # hugetlb leaves this host's cgroup2 when someone mounts it as v1 (the benchmark does).
    mount = path.rsplit("/", 1)[0]
    has_hugetlb = "hugetlb" in read(mount + "/cgroup.controllers").split()
    if has_hugetlb:
        v2_manager.apply(
            {
                "hugepageLimits": [{"pageSize": "2MB", "limit": 8 << 20}],
                "unified": {"hugetlb.1GB.max": "0", "cgroup.max.descendants": "3"},
            }
        )
        assert read(path + "/hugetlb.2MB.max") == str(8 << 20)
    else:
        v2_manager.apply({"unified": {"cgroup.max.descendants": "3"}})
    assert read(path + "/cgroup.max.descendants") == "3"
    stats = v2_manager.stats()
    if has_hugetlb:
        assert stats["hugetlb"]["2MB"] == {"failcnt": 0}
    assert {"cpu", "memory", "pids", "blkio"} <= set(stats)
    with pytest.raises(CgroupError, match=r"unified.memory.max: 1m: no such file .*memory"):
        v2_manager.apply({"unified": {"memory.max": "1m"}})
    with pytest.raises(CgroupError, match="unified.../x: 1: not a cgroup2 interface file"):
        v2_manager.apply({"unified": {"../x": "1"}})
    with pytest.raises(CgroupError, match="cpu.realtimeRuntime: 5: realtime cpu is not"):
        v2_manager.apply({"cpu": {"realtimeRuntime": 5}})


def test_oom_watcher_v2_stops_when_cgroup_goes(v2_manager: Manager) -> None:
    # No memory controller on this host's cgroup2, so the file is missing: a clear error.
    if not os.path.exists(v2_manager.paths()[""] + "/memory.events"):
        with pytest.raises(FileNotFoundError):
            v2_manager.oom_events()
        return
    watcher = v2_manager.oom_events()  # pragma: no cover - pure v2 hosts only
    v2_manager.destroy()
    assert watcher.wait(0.1) == 0 and watcher.gone
    watcher.close()
