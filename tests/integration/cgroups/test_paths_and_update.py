"""cgroup paths on real cgroups, and what joining one costs (the path logic: tests/unit/)."""

from __future__ import annotations

import subprocess
import time

from handcar.cgroups.manager import V1Manager, open_manager, paths_frozen


def test_paths_frozen(v1_manager: V1Manager) -> None:
    assert not paths_frozen(v1_manager.paths())
    v1_manager.freeze()
    assert paths_frozen(v1_manager.paths())
    v1_manager.thaw()
    assert not paths_frozen({})


def test_create_and_join_cost(cgroup_name: str) -> None:
    """Report what create + add_pid cost (the first migration waits for an RCU grace period)."""
    procs = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        timings = []
        for i, proc in enumerate(procs):
            manager = open_manager(f"/{cgroup_name}-{i}", "x")
            start = time.perf_counter()
            manager.create()
            created = time.perf_counter()
            manager.add_pid(proc.pid)
            joined = time.perf_counter()
            timings.append(((created - start) * 1000, (joined - created) * 1000))
        print("create ms, add_pid ms:", [f"{c:.2f}, {j:.2f}" for c, j in timings])
        assert all(c < 50 for c, _ in timings)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        from .conftest import sweep

        sweep(cgroup_name)
