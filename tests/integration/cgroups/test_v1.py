"""The cgroup manager on this host's v1 controllers (a hybrid host), with real processes."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from handcar.cgroups.fs import CgroupError
from handcar.cgroups.manager import Manager, from_paths, open_manager
from harness import wait_for

from .conftest import UNIFIED, Gate, read, sweep, unique_name

PY = f"{sys.executable} -I -S -c"
GateFactory = Callable[[str], Gate]


def test_create_join_destroy_leaves_nothing(v1_manager: Manager, gate: GateFactory) -> None:
    paths = v1_manager.paths()
    assert {"cpu", "memory", "pids", "devices", "freezer", "name=systemd"} <= set(paths)
    assert all(os.path.isdir(p) for p in paths.values())
    g = gate("sleep 30")
    v1_manager.add_pid(g.pid)
    for controller, path in paths.items():
        assert str(g.pid) in read(path + "/cgroup.procs").split(), controller
    # The cpuset was filled from the parent, or the join above would have failed.
    assert read(paths["cpuset"] + "/cpuset.cpus")
    assert v1_manager.pids() == [g.pid]
    v1_manager.kill_all(signal.SIGKILL)
    g.proc.wait(5)
    assert v1_manager.wait_empty(2.0)
    v1_manager.destroy()
    assert not any(os.path.exists(p) for p in paths.values())


def test_destroy_removes_made_parents_but_not_existing_ones() -> None:
    outer = unique_name("outer")
    try:
        os.mkdir(f"/sys/fs/cgroup/pids/{outer}")  # pre-existing on one hierarchy only
        manager = open_manager(f"/{outer}/a/b", "b")
        manager.create()
        assert f"/sys/fs/cgroup/pids/{outer}" not in manager.created()
        assert f"/sys/fs/cgroup/memory/{outer}" in manager.created()
        reopened = from_paths(manager.paths(), manager.created())
        reopened.destroy()
        assert os.path.isdir(f"/sys/fs/cgroup/pids/{outer}")
        assert not os.path.exists(f"/sys/fs/cgroup/pids/{outer}/a")
        assert not os.path.exists(f"/sys/fs/cgroup/memory/{outer}")
    finally:
        sweep(outer)


def test_crash_before_state_saved_removes_leaves(cgroup_name: str) -> None:
    manager = open_manager("/" + cgroup_name, cgroup_name)
    paths = manager.paths()  # what the lead stores before create()
    manager.create()
    from_paths(paths).destroy()
    assert not any(os.path.exists(p) for p in paths.values())


def test_memory_limit_oom_kills_and_is_reported(v1_manager: Manager, gate: GateFactory) -> None:
    v1_manager.apply({"memory": {"limit": 48 << 20, "swap": 48 << 20}})
    with v1_manager.oom_events() as watcher:
        g = gate(f"exec {PY} \"b = bytearray(b'x') * (400 << 20)\"")
        v1_manager.add_pid(g.pid)
        g.open()
        assert g.proc.wait(20) == -signal.SIGKILL
        assert watcher.wait(5.0) >= 1
    memory = v1_manager.paths()["memory"]
    assert "oom_kill 1" in read(memory + "/memory.oom_control")


def test_pids_limit_stops_a_fork_bomb(v1_manager: Manager, gate: GateFactory) -> None:
    v1_manager.apply({"pids": {"limit": 16}})
    g = gate("bomb() { bomb & bomb & wait; }; bomb 2>/dev/null")
    v1_manager.add_pid(g.pid)
    g.open()
    pids_dir = v1_manager.paths()["pids"]
    assert wait_for(lambda: int(read(pids_dir + "/pids.events").split()[1]) > 0)
    assert int(read(pids_dir + "/pids.current")) <= 16
    assert len(v1_manager.pids()) <= 16
    v1_manager.kill_all(signal.SIGKILL)
    assert v1_manager.wait_empty(5.0)


def test_freeze_stops_a_busy_process_and_thaw_resumes(
    v1_manager: Manager, gate: GateFactory
) -> None:
    g = gate("while :; do :; done")
    v1_manager.add_pid(g.pid)
    g.open()
    usage = v1_manager.paths()["cpuacct"] + "/cpuacct.usage"
    v1_manager.freeze()
    assert v1_manager.is_frozen()
    before = int(read(usage))
    time.sleep(0.15)
    assert int(read(usage)) == before
    v1_manager.thaw()
    assert not v1_manager.is_frozen()
    assert wait_for(lambda: int(read(usage)) > before, 2.0)


def test_kill_all_reaches_every_process(v1_manager: Manager, gate: GateFactory) -> None:
    g = gate("sleep 30 & sleep 30 & (sleep 30 & wait) & wait")
    v1_manager.add_pid(g.pid)
    g.open()
    assert wait_for(lambda: len(v1_manager.pids()) == 5)
    # SIGTERM goes the freeze/signal/thaw way; SIGKILL would use cgroup.kill.
    v1_manager.kill_all(signal.SIGTERM)
    assert v1_manager.wait_empty(5.0)
    assert not v1_manager.is_frozen()


def test_kill_all_keeps_a_paused_container_paused(v1_manager: Manager, gate: GateFactory) -> None:
    g = gate("sleep 30")
    v1_manager.add_pid(g.pid)
    v1_manager.freeze()
    v1_manager.kill_all(signal.SIGTERM)
    assert v1_manager.is_frozen()
    v1_manager.thaw()
    assert g.proc.wait(5) == -signal.SIGTERM


def test_every_resource_this_host_has(v1_manager: Manager) -> None:
    vda = os.stat("/dev/vda").st_rdev
    major, minor = os.major(vda), os.minor(vda)
    resources: Any = {
        "memory": {
            "limit": 256 << 20,
            "reservation": 128 << 20,
            "swap": 512 << 20,
            "swappiness": 10,
            "disableOOMKiller": True,
        },
        "cpu": {
            "shares": 512,
            "quota": 50000,
            "period": 100000,
            "burst": 10000,
            "realtimeRuntime": 1000,
            "realtimePeriod": 100000,
            "cpus": "0",
            "mems": "0",
            "idle": 0,
        },
        "pids": {"limit": 100},
        "blockIO": {
            "weight": 300,
            "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
            "throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": 2097152}],
            "throttleReadIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
            "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 200}],
        },
    }
    # Where hugetlb lives changes at run time: on cgroup2 (this host's default), as a v1
    # hierarchy (the benchmark mounts one for crun), or nowhere.
    p = v1_manager.paths()
    on_v1 = "hugetlb" in p
    on_unified = "" in p and "hugetlb" in read(UNIFIED + "/cgroup.controllers").split()
    if on_v1 or on_unified:
        resources["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 << 20}]
    # `unified` keys need a cgroup2 file: a hugetlb one when cgroup2 has it, else a core one.
    unified_key = ("hugetlb.1GB.max", "0") if on_unified else ("cgroup.max.descendants", "7")
    if "" in p:
        resources["unified"] = {unified_key[0]: unified_key[1]}
    v1_manager.apply(resources)
    assert read(p["memory"] + "/memory.limit_in_bytes") == str(256 << 20)
    assert read(p["memory"] + "/memory.soft_limit_in_bytes") == str(128 << 20)
    assert read(p["memory"] + "/memory.memsw.limit_in_bytes") == str(512 << 20)
    assert read(p["memory"] + "/memory.swappiness") == "10"
    assert "oom_kill_disable 1" in read(p["memory"] + "/memory.oom_control")
    assert read(p["cpu"] + "/cpu.shares") == "512"
    assert read(p["cpu"] + "/cpu.cfs_quota_us") == "50000"
    assert read(p["cpu"] + "/cpu.cfs_period_us") == "100000"
    assert read(p["cpu"] + "/cpu.cfs_burst_us") == "10000"
    assert read(p["cpu"] + "/cpu.rt_runtime_us") == "1000"
    assert read(p["cpuset"] + "/cpuset.cpus") == "0"
    assert read(p["pids"] + "/pids.max") == "100"
    assert read(p["blkio"] + "/blkio.bfq.weight").split()[-1] == "300"
    assert f"{major}:{minor} 1048576" in read(p["blkio"] + "/blkio.throttle.read_bps_device")
    assert f"{major}:{minor} 200" in read(p["blkio"] + "/blkio.throttle.write_iops_device")
    if on_v1:
        assert read(p["hugetlb"] + "/hugetlb.2MB.limit_in_bytes") == str(4 << 20)
    elif on_unified:  # hugetlb on cgroup2 of a hybrid host: handcar uses it there
        assert read(p[""] + "/hugetlb.2MB.max") == str(4 << 20)
    if "" in p:
        assert read(p[""] + "/" + unified_key[0]) == unified_key[1]
    # A second apply of lower values works in the other write order (memory+swap first).
    v1_manager.apply({"memory": {"limit": 64 << 20, "swap": 64 << 20}})
    assert read(p["memory"] + "/memory.memsw.limit_in_bytes") == str(64 << 20)


def test_refused_value_names_field_and_value(v1_manager: Manager, gate: GateFactory) -> None:
    g = gate(f"exec {PY} \"b = bytearray(b'x') * (24 << 20); import time; time.sleep(30)\"")
    v1_manager.add_pid(g.pid)
    g.open()
    usage = v1_manager.paths()["memory"] + "/memory.usage_in_bytes"
    assert wait_for(lambda: int(read(usage)) > 20 << 20)
    with pytest.raises(CgroupError) as err:
        v1_manager.apply({"memory": {"limit": 1}})
    assert str(err.value) == "linux.resources.memory.limit: 1: device or resource busy"
    with pytest.raises(CgroupError, match=r"^linux.resources.memory.limit: 4096: rejecting"):
        v1_manager.apply({"memory": {"limit": 4096, "checkBeforeUpdate": True}})
    with pytest.raises(CgroupError, match=r"^linux.resources.cpu.shares: 1: the minimum"):
        v1_manager.apply({"cpu": {"shares": 1}})


def test_controllers_this_host_lacks_are_errors(v1_manager: Manager) -> None:
    with pytest.raises(CgroupError, match="network.classID: the net_cls cgroup controller"):
        v1_manager.apply({"network": {"classID": 1048577}})
    with pytest.raises(CgroupError, match="rdma.mlx4_0: the rdma cgroup controller"):
        v1_manager.apply({"rdma": {"mlx4_0": {"hcaHandles": 2}}})
    with pytest.raises(CgroupError, match="blockIO.leafWeight: 500: blkio.leaf_weight is not"):
        v1_manager.apply({"blockIO": {"leafWeight": 500}})
    # BFQ takes per-device weights only for disks it schedules; vda runs mq-deadline here.
    vda = os.stat("/dev/vda").st_rdev
    device: Any = {"major": os.major(vda), "minor": os.minor(vda), "weight": 400}
    with pytest.raises(CgroupError, match=r"weightDevice\[0\].weight: 400: operation not supp"):
        v1_manager.apply({"blockIO": {"weightDevice": [device]}})


def test_v1_device_rules(v1_manager: Manager, gate: GateFactory) -> None:
    # runc's spec default: deny everything; runc's default devices are appended.
    v1_manager.apply({"devices": [{"allow": False, "access": "rwm"}]})
    rules = read(v1_manager.paths()["devices"] + "/devices.list").splitlines()
    assert "c 1:3 rwm" in rules and "c *:* m" in rules and "c 136:* rwm" in rules
    assert "a *:* rwm" not in rules
    g = gate(
        "(exec 3</dev/kmsg) 2>/dev/null && echo kmsg-open || echo kmsg-denied;"
        " echo x >/dev/null && echo null-open"
    )
    v1_manager.add_pid(g.pid)
    g.open()
    assert g.output().split() == ["kmsg-denied", "null-open"]
    # Re-applying the same rules writes nothing (no window of denied access).
    v1_manager.apply({"devices": [{"allow": False, "access": "rwm"}]})
    assert read(v1_manager.paths()["devices"] + "/devices.list").splitlines() == rules


def hugetlb_available(paths: dict[str, str]) -> bool:
    """hugetlb as a v1 hierarchy, or on the hybrid cgroup2 (it moves at run time here)."""
    if "hugetlb" in paths:
        return True
    return "" in paths and "hugetlb" in read(UNIFIED + "/cgroup.controllers").split()


def test_stats_have_runc_field_names(v1_manager: Manager, gate: GateFactory) -> None:
    has_hugetlb = hugetlb_available(v1_manager.paths())
    resources: Any = {"pids": {"limit": 50}, "memory": {"limit": 128 << 20}}
    if has_hugetlb:
        resources["hugepageLimits"] = [{"pageSize": "2MB", "limit": 2 << 20}]
    v1_manager.apply(resources)
    g = gate("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30")
    v1_manager.add_pid(g.pid)
    g.open()
    cpuacct = v1_manager.paths()["cpuacct"] + "/cpuacct.usage"
    assert wait_for(lambda: int(read(cpuacct)) > 10_000_000)
    stats = v1_manager.stats()
    assert set(stats) >= {"cpu", "memory", "pids", "blkio", "hugetlb"}
    assert stats["cpu"]["usage"]["total"] > 0
    assert len(stats["cpu"]["usage"]["percpu"]) == os.cpu_count()
    assert {"kernel", "user"} <= set(stats["cpu"]["usage"])
    assert stats["memory"]["usage"]["limit"] == 128 << 20
    assert {"usage", "swap", "kernel", "kernelTCP", "raw"} <= set(stats["memory"])
    assert stats["pids"] == {"current": 1, "limit": 50}
    assert "2MB" in stats["hugetlb"] or not has_hugetlb
