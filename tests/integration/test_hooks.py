"""OCI hooks on real containers: order, where they run, the state each one sees, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from harness import Runtime, process_gone, wait_for

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def _logging_hook(kind: str, log: str) -> dict[str, Any]:
    """Appends `KIND <state JSON> <mount ns> <hostname>` to log."""
    script = 'echo "$0 $(cat) $(readlink /proc/self/ns/mnt) $HOOKVAR" >> ' + log
    return {"path": "/bin/sh", "args": ["sh", "-c", script, kind], "env": [f"HOOKVAR=v-{kind}"]}


def _config_with_hooks(hc: Runtime, logdir: Path, args: list[str]) -> dict[str, Any]:
    config = hc.config(args)
    config["mounts"].append(
        {"destination": "/hooklog", "type": "bind", "source": str(logdir), "options": ["rbind"]}
    )
    config["annotations"] = {"org.example/hooks": "yes"}
    config["hooks"] = {
        # startContainer runs inside the container: its path and its log are the container's.
        kind: [_logging_hook(kind, "/hooklog/log" if kind == "startContainer" else f"{logdir}/log")]
        for kind in KINDS
    }
    return config


def _entries(logdir: Path) -> list[tuple[str, dict[str, Any], str, str]]:
    entries = []
    for line in (logdir / "log").read_text().splitlines():
        kind, rest = line.split(" ", 1)
        state_text, mnt, var = rest.rsplit(" ", 2)
        entries.append((kind, json.loads(state_text), mnt, var))
    return entries


def test_hook_order_and_the_state_each_hook_sees(hc: Runtime, tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    config = _config_with_hooks(hc, logdir, ["sleep", "300"])
    cid = hc.create(config)
    host_pid = hc.state(cid)["pid"]
    assert [e[0] for e in _entries(logdir)] == ["prestart", "createRuntime", "createContainer"]
    assert hc("start", cid).rc == 0
    assert wait_for(lambda: len(_entries(logdir)) == 5)
    assert hc("delete", "--force", cid).rc == 0
    entries = _entries(logdir)
    assert [e[0] for e in entries] == list(KINDS)
    host_mnt = os.readlink("/proc/self/ns/mnt")
    seen = {kind: (state, mnt, var) for kind, state, mnt, var in entries}
    for kind, (state, _, var) in seen.items():
        assert state["id"] == cid and state["bundle"].startswith(str(hc.tmp) + "/bundle-")
        assert state["annotations"] == {"org.example/hooks": "yes"}
        assert var == f"v-{kind}", "each hook gets its own env"
    assert {k: seen[k][0]["status"] for k in KINDS} == {
        "prestart": "creating",
        "createRuntime": "creating",
        "createContainer": "creating",
        "startContainer": "created",
        "poststart": "running",
        "poststop": "stopped",
    }
    # Runtime-namespace hooks see the host pid; container-namespace hooks the container's.
    for kind in ("prestart", "createRuntime", "poststart"):
        assert seen[kind][0]["pid"] == host_pid
        assert seen[kind][1] == host_mnt
    for kind in ("createContainer", "startContainer"):
        assert seen[kind][0]["pid"] == 1
        assert seen[kind][1] != host_mnt, f"{kind} runs in the container's mount namespace"
    assert seen["createContainer"][1] == seen["startContainer"][1]
    assert not (hc.root / cid).exists()


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_failing_create_hook_fails_create_and_cleans_up(
    hc: Runtime, tmp_path: Path, kind: str
) -> None:
    config = hc.config(["sleep", "300"])
    config["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 3"]}]}
    cid = hc.new_id()
    bundle = hc.bundle(config)
    result = hc("create", "--bundle", str(bundle), cid)
    assert result.rc == 1
    assert f"hooks.{kind}[0] (/bin/sh): exit status 3: boom" in result.err, result
    assert hc("state", cid).rc == 1, "no state left behind"
    assert not (hc.root / cid).exists()
    leftovers = [p for p in Path("/sys/fs/cgroup").glob(f"*/{cid}")]
    assert leftovers == []


def test_failing_start_container_hook_fails_start(hc: Runtime) -> None:
    config = hc.config(["sleep", "300"])
    config["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 4"]}]}
    cid = hc.create(config)
    pid = hc.state(cid)["pid"]
    result = hc("start", cid)
    assert result.rc == 1
    assert "hooks.startContainer[0] (/bin/sh): exit status 4" in result.err, result
    assert wait_for(lambda: process_gone(pid))
    assert hc.state(cid)["status"] == "stopped"
    assert hc("delete", cid).rc == 0
    # In `run`, the same failure ends with the container deleted.
    rid = hc.new_id()
    run = hc("run", "--bundle", str(hc.bundle(config)), rid)
    assert run.rc == 1 and "hooks.startContainer[0]" in run.err
    assert not (hc.root / rid).exists()


def test_failing_poststart_and_poststop_hooks_only_warn(hc: Runtime) -> None:
    config = hc.config(["sleep", "300"])
    fail = {"path": "/bin/sh", "args": ["sh", "-c", "exit 5"]}
    config["hooks"] = {"poststart": [fail], "poststop": [fail]}
    cid = hc.create(config)
    start = hc("start", cid)
    assert start.rc == 0
    assert "warning" in start.err and "hooks.poststart[0]" in start.err
    assert hc.state(cid)["status"] == "running"
    delete = hc("delete", "--force", cid)
    assert delete.rc == 0
    assert "warning" in delete.err and "hooks.poststop[0]" in delete.err
    assert not (hc.root / cid).exists()


def test_hook_timeout(hc: Runtime) -> None:
    config = hc.config(["sleep", "300"])
    config["hooks"] = {
        "createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]
    }
    cid = hc.new_id()
    result = hc("create", "--bundle", str(hc.bundle(config)), cid)
    assert (
        result.rc == 1 and "hooks.createRuntime[0] (/bin/sleep): timed out after 1s" in result.err
    )


def test_run_runs_poststop_and_removes_state(hc: Runtime, tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    config = _config_with_hooks(hc, logdir, ["sh", "-c", "exit 6"])
    cid = hc.new_id()
    result = hc("run", "--bundle", str(hc.bundle(config)), cid)
    assert result.rc == 6, result
    assert [e[0] for e in _entries(logdir)] == list(KINDS)
    assert not (hc.root / cid).exists()
