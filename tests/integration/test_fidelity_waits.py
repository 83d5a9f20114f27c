"""Every wait ends when the process waited on dies: an init killed at each stage of create."""

from __future__ import annotations

import json
import time

import pytest

from harness import Runtime

# The hook gets the OCI state on stdin; `pid` is the init's pid as the hook sees it.
KILL_FROM_STATE = 'pid=$(sed -n "s/.*\\"pid\\": *\\([0-9]*\\).*/\\1/p"); kill -9 "$pid"'


@pytest.mark.parametrize(
    ("hook", "script"),
    [
        ("prestart", KILL_FROM_STATE),  # in the runtime, the init waiting on it
        ("createRuntime", KILL_FROM_STATE),
    ],
)
def test_create_ends_when_the_init_dies(hc: Runtime, hook: str, script: str) -> None:
    config = hc.config(["sleep", "300"])
    config["hooks"] = {hook: [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}
    bundle = hc.bundle(config)
    cid = hc.new_id()
    started = time.monotonic()
    result = hc("create", "--bundle", str(bundle), cid, timeout=30)
    assert result.rc != 0, result
    assert time.monotonic() - started < 15
    assert len(result.err.strip().splitlines()) == 1, result
    # Nothing holds the id: start and delete --force answer at once.
    assert hc("start", cid, timeout=10).rc != 0
    assert hc("delete", "--force", cid, timeout=10).rc == 0
    listed = hc("list", "--format", "json")
    assert json.loads(listed.out) is None  # runc prints null for no containers
