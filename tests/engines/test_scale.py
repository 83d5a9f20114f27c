"""Scale on one machine: 50 containers at once through the runtime directly (`run -d` in
parallel) and 20 through podman. All come up, all are cleaned up, nothing is left behind.

The times go to the test output (`-s`) and, with HANDCAR_ENGINE_TIMINGS=FILE, to that file; run
the module once as is and once with HANDCAR_TEST_RUNTIME=/usr/sbin/runc to compare."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from engines.engine_helpers import processes_mentioning
from engines.engine_setup import Podman, record_timing
from harness import wait_for

pytestmark = pytest.mark.slow

DIRECT = 50
PODMAN = 20


def test_fifty_detached_containers(hc: Any) -> None:
    """hc: tests/conftest.py's runtime with a private --root; its teardown fails the test if a
    state dir or cgroup is left."""
    bundle = hc.bundle(args=["sleep", "600"])
    ids = [hc.new_id() for _ in range(DIRECT)]
    started = time.monotonic()
    with ThreadPoolExecutor(DIRECT) as pool:
        results = list(
            pool.map(lambda cid: hc("run", "-d", "--bundle", str(bundle), cid, timeout=240), ids)
        )
    up = time.monotonic() - started
    assert all(r.rc == 0 for r in results), [r for r in results if r.rc != 0][:3]
    states = json.loads(hc("list", "--format", "json").out)
    assert sorted(s["id"] for s in states if s["status"] == "running") == sorted(ids)
    pids = [s["pid"] for s in states]

    started = time.monotonic()
    with ThreadPoolExecutor(DIRECT) as pool:
        deleted = list(pool.map(lambda cid: hc("delete", "--force", cid, timeout=240), ids))
    down = time.monotonic() - started
    assert all(r.rc == 0 for r in deleted), [r for r in deleted if r.rc != 0][:3]
    assert hc("list", "-q").out == ""

    def gone(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # the slow reaper's zombie
        except OSError:
            return True

    assert wait_for(lambda: all(gone(p) for p in pids), 30)
    record_timing(f"{DIRECT} x run -d in parallel", up)
    record_timing(f"{DIRECT} x delete --force in parallel", down)


def test_twenty_podman_containers(podman: Podman) -> None:
    tag = "hcs-" + uuid.uuid4().hex[:6]
    names = [f"{tag}-{i}" for i in range(PODMAN)]
    started = time.monotonic()
    with ThreadPoolExecutor(PODMAN) as pool:
        results = list(
            pool.map(
                lambda n: podman(
                    "run", "-d", "--name", n, "localhost/bb", "sleep", "600", timeout=300
                ),
                names,
            )
        )
    up = time.monotonic() - started
    assert all(r.returncode == 0 for r in results), [r for r in results if r.returncode][:3]
    running = podman.ok("ps", "--filter", f"name={tag}", "--format", "{{.Names}}").split()
    assert sorted(running) == sorted(names)

    started = time.monotonic()
    podman.ok("rm", "-f", "-t", "0", *names, timeout=300)
    down = time.monotonic() - started
    assert podman.ok("ps", "-a", "--filter", f"name={tag}", "-q") == ""
    assert wait_for(lambda: not processes_mentioning(tag), 30), processes_mentioning(tag)
    record_timing(f"podman: {PODMAN} x run -d in parallel", up)
    record_timing(f"podman: {PODMAN} x rm -f", down)
