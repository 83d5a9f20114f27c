"""cgroup logic that needs no root: cgroupsPath semantics, systemd paths, the layout, state
round trips, update flags, resource validation, v2 conversions, the import cost."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from handcar.cgroups.fs import CgroupError, clean_path, detect_layout, own_cgroups
from handcar.cgroups.manager import (
    V1Manager,
    V2Manager,
    expand_slice,
    from_paths,
    open_manager,
    systemd_path,
)
from handcar.cgroups.update import resources_from_update_flags, validate_resources
from handcar.cgroups.v2 import blkio_weight_to_io_weight, shares_to_weight, swap_to_v2

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def test_layout_of_this_host() -> None:
    assert detect_layout() == "hybrid"


def test_absolute_relative_and_default_paths() -> None:
    absolute = open_manager("/a/b", "ctr").paths()
    assert absolute["memory"] == "/sys/fs/cgroup/memory/a/b"
    assert absolute["name=systemd"] == "/sys/fs/cgroup/systemd/a/b"
    assert absolute[""] == "/sys/fs/cgroup/unified/a/b"
    own = own_cgroups()
    relative = open_manager("a/b", "ctr").paths()
    assert relative["memory"] == f"/sys/fs/cgroup/memory{own['memory'].rstrip('/')}/a/b"
    default = open_manager(None, "ctr").paths()
    assert default["pids"] == f"/sys/fs/cgroup/pids{own['pids'].rstrip('/')}/ctr"
    # `..` cannot climb out of the hierarchy.
    assert open_manager("/../../etc", "x").paths()["pids"] == "/sys/fs/cgroup/pids/etc"
    assert clean_path("a/../../b") == "b"


def test_v2_relative_path_is_below_the_parent_of_own_cgroup() -> None:
    manager = open_manager("x/y", "c", layout="v2", unified_mount="/sys/fs/cgroup/unified")
    parent = own_cgroups()[""].rpartition("/")[0]
    assert manager.paths() == {"": f"/sys/fs/cgroup/unified{parent}/x/y"}


def test_systemd_paths_fall_back_to_cgroupfs() -> None:
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert expand_slice("-.slice") == "/"
    assert systemd_path("system.slice:docker:abc", "id") == "/system.slice/docker-abc.scope"
    assert systemd_path("", "id") == "/system.slice/runc-id.scope"
    assert systemd_path("", "id", rootless=True) == "/user.slice/runc-id.scope"
    assert systemd_path("a.slice:p:kube-x.slice", "id") == "/kube.slice/kube-x.slice"
    paths = open_manager("machine.slice:libpod:1", "1", systemd=True).paths()
    assert paths["memory"] == "/sys/fs/cgroup/memory/machine.slice/libpod-1.scope"
    with pytest.raises(CgroupError, match='format "slice:prefix:name"'):
        open_manager("/not/systemd", "x", systemd=True)
    with pytest.raises(CgroupError, match="invalid systemd slice name"):
        expand_slice("a--b.slice")


def test_from_paths_infers_the_layout() -> None:
    assert isinstance(from_paths({"": "/sys/fs/cgroup/x"}), V2Manager)
    reopened = from_paths(open_manager("/x", "x").paths())
    assert isinstance(reopened, V1Manager) and reopened.layout == "hybrid"
    state = open_manager("/x", "x").state()
    assert state["layout"] == "hybrid" and state["created"] == []


def test_update_flags_as_runc_parses_them() -> None:
    resources = resources_from_update_flags(
        {
            "--memory": "100m",
            "memory-swap": "-1",
            "memory-reservation": "1.5GiB",
            "cpu-quota": "-1",
            "cpu-period": "100000",
            "cpu-share": "512",
            "cpuset-cpus": "0-1",
            "pids-limit": "100",
            "blkio-weight": "300",
            "kernel-memory": "",
        }
    )
    assert resources == {
        "memory": {"limit": 100 << 20, "swap": -1, "reservation": 1610612736},
        "cpu": {"quota": -1, "period": 100000, "shares": 512, "cpus": "0-1"},
        "pids": {"limit": 100},
        "blockIO": {"weight": 300},
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"memory": "lots"}, "--memory: invalid value 'lots'"),
        ({"cpu-period": "-5"}, "--cpu-period: invalid value '-5'"),
        ({"blkio-weight": "5"}, "--blkio-weight: invalid value '5'"),
        ({"cpuset-cpus": "3-1"}, "--cpuset-cpus: invalid value '3-1'"),
        ({"l3-cache-schema": "L3:0=f"}, "--l3-cache-schema: L3:0=f: Intel RDT"),
        ({"bogus": "1"}, "--bogus: unknown update flag"),
    ],
)
def test_update_flag_errors_name_the_flag(flags: dict[str, str], message: str) -> None:
    with pytest.raises(CgroupError) as err:
        resources_from_update_flags(flags)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"memory": {"limit": "1g"}}, 'r.memory.limit: "1g": expected an integer'),
        ({"memory": {"swappiness": 200}}, "r.memory.swappiness: 200: must be 0-100"),
        ({"cpu": {"shares": -1}}, "r.cpu.shares: -1: expected an unsigned integer"),
        ({"cpu": {"cpus": "a"}}, "r.cpu.cpus: 'a': invalid cpu/mem list"),
        ({"blockIO": {"weight": 2000}}, "r.blockIO.weight: 2000: must be between 10 and 1000"),
        ({"blockIO": {"throttleReadBpsDevice": [{"major": 8}]}}, "r.blockIO.throttleRead"),
        ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]}, "r.hugepageLimits[0].pageSize"),
        ({"devices": [{"allow": True, "access": "rwx"}]}, "r.devices[0].access: 'rwx'"),
        ({"devices": [{"access": "rw"}]}, "r.devices[0].allow: missing"),
        ({"pids": {"limit": True}}, "r.pids.limit: true: expected an integer"),
        ({"memroy": {}}, "r.memroy: unknown field"),
        ([], "r: expected an object"),
    ],
)
def test_validate_resources_names_the_json_path(resources: object, message: str) -> None:
    with pytest.raises(CgroupError) as err:
        validate_resources(resources, "r")
    assert str(err.value).startswith(message)


def test_validate_accepts_a_full_config() -> None:
    validate_resources(
        {
            "devices": [{"allow": False, "access": "rwm"}],
            "memory": {"limit": 1 << 30, "swap": -1, "disableOOMKiller": False},
            "cpu": {"shares": 1024, "quota": 100000, "period": 100000, "cpus": "0", "idle": 0},
            "pids": {"limit": -1},
            "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 10}]},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "network": {"classID": 1, "priorities": [{"name": "eth0", "priority": 1}]},
            "rdma": {"mlx5_1": {"hcaHandles": 3}},
            "unified": {"memory.high": "max"},
        }
    )


def test_hot_path_imports_nothing_heavy() -> None:
    """create + add_pid must not pull in re, enum, typing, json, subprocess or logging."""
    code = (
        "import sys; import handcar.cgroups.manager as c;"
        "m = c.open_manager('/x', 'x');"
        "heavy = {'re', 'enum', 'typing', 'json', 'subprocess', 'logging', 'ctypes'};"
        "bad = heavy & set(sys.modules);"
        "print(sorted(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {SRC!r}); {code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_v2_conversions_match_runc() -> None:
    assert shares_to_weight(0) == 0
    assert shares_to_weight(2) == 1
    assert shares_to_weight(1024) == 100
    assert shares_to_weight(262144) == 10000
    assert 1 < shares_to_weight(512) < 100
    assert blkio_weight_to_io_weight(10) == 1
    assert blkio_weight_to_io_weight(1000) == 10000
    assert blkio_weight_to_io_weight(500) == 1 + 490 * 9999 // 990
    assert swap_to_v2(300, 100) == 200
    assert swap_to_v2(0, -1) == -1
    assert swap_to_v2(-1, 100) == -1
    assert swap_to_v2(100, 100) == 0
    with pytest.raises(CgroupError, match="without memory limit"):
        swap_to_v2(100, 0)
    with pytest.raises(CgroupError, match="must be at least memory.limit"):
        swap_to_v2(50, 100)
