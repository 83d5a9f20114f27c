"""What the engines' shims rely on, checked on the runtime directly (and on runc, for fairness).

A CRI container in its pod's pid namespace (pid=POD) has no pid namespace of its own: when its
init exits, its other processes live on in its cgroup. containerd's shim then runs
`kill --all ID 9` and `delete ID`; both must end those processes, or the cgroup cannot be
removed and containerd retries the delete forever.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from harness import wait_for

pytestmark = pytest.mark.slow


def with_cmdline(cmdline: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() == cmdline:
                    with open(f"/proc/{entry}/stat") as st:
                        if st.read().rsplit(")", 1)[1].split()[0] != "Z":
                            found.append(int(entry))
        except OSError:
            continue
    return found


def stopped_with_leftover(hc: Any, marker: str) -> str:
    """A started container without a pid namespace whose init exited, leaving a child."""
    config = hc.config(["sh", "-c", f"sleep {marker} & exit 0"])
    config["linux"]["namespaces"] = [
        ns for ns in config["linux"]["namespaces"] if ns["type"] != "pid"
    ]
    cid = hc.create(config)
    result = hc("start", cid)
    assert result.rc == 0, result
    assert wait_for(lambda: hc.state(cid)["status"] == "stopped", 20)
    assert wait_for(lambda: bool(with_cmdline(f"sleep\0{marker}\0".encode())), 10)
    return str(cid)


def test_kill_all_of_a_stopped_container_ends_its_leftovers(hc: Any) -> None:
    cid = stopped_with_leftover(hc, "1241")
    assert hc("kill", cid, "9").rc != 0  # the init is gone: "container not running"
    result = hc("kill", "--all", cid, "9")
    assert result.rc == 0, result
    assert wait_for(lambda: not with_cmdline(b"sleep\x001241\x00"), 10)
    assert hc("delete", cid).rc == 0


def test_delete_of_a_stopped_container_ends_its_leftovers(hc: Any) -> None:
    cid = stopped_with_leftover(hc, "1243")
    result = hc("delete", cid)
    assert result.rc == 0, result
    assert wait_for(lambda: not with_cmdline(b"sleep\x001243\x00"), 10)
    assert hc("state", cid).rc != 0
