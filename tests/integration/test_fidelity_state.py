"""State that never lies: while create runs, when state.json is lost or damaged, and when the
--root filesystem is full. runc runs beside handcar where it has an answer to compare."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness import Runtime, wait_for


def blocking_hook_config(hc: Runtime, gate: Path) -> dict[str, object]:
    """A createRuntime hook that holds create open until `gate` appears."""
    config = hc.config(["sleep", "300"])
    script = f"while [ ! -e {gate} ]; do sleep 0.02; done"
    config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}
    return config


@pytest.mark.parametrize("runtime_name", ["handcar", "runc"])
def test_state_during_create_is_creating_never_stopped(
    hc: Runtime, runc: Runtime, runtime_name: str
) -> None:
    runtime = hc if runtime_name == "handcar" else runc
    gate = hc.tmp / f"gate-{runtime_name}"
    bundle = hc.bundle(blocking_hook_config(hc, gate))
    cid = runtime.new_id()
    creating = runtime.popen("create", "--bundle", str(bundle), cid, stdin=subprocess.DEVNULL)
    try:
        # The hook holds create open until the gate appears: any moment now is inside it.
        assert wait_for(lambda: (runtime.root / cid).is_dir(), what="the state directory")
        seen = runtime("state", cid)
        listed = runtime("list", "--format", "json")
        if seen.rc == 0:
            state = json.loads(seen.out)
            assert state["status"] == "creating", state
            assert [c["status"] for c in json.loads(listed.out)] == ["creating"]
        else:  # runc's other answer: the container does not exist yet
            assert runtime_name == "runc" and "does not exist" in seen.err, seen
    finally:
        gate.touch()
        assert creating.wait(timeout=60) == 0
    assert runtime.state(cid)["status"] == "created"


def test_a_create_that_died_is_stopped_not_creating(hc: Runtime) -> None:
    gate = hc.tmp / "gate-never"
    bundle = hc.bundle(blocking_hook_config(hc, gate))
    cid = hc.new_id()
    creating = hc.popen("create", "--bundle", str(bundle), cid, stdin=subprocess.DEVNULL)
    assert wait_for(lambda: (hc.root / cid / "state.json").exists(), what="state.json")
    creating.kill()
    creating.wait(timeout=30)
    assert wait_for(lambda: hc.state(cid)["status"] == "stopped", what="stopped")
    assert hc("delete", "--force", cid).rc == 0
    gate.touch()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_damaged_state_still_reports_and_kills(hc: Runtime, damage: str) -> None:
    """runc reports such a container as gone and leaks its processes; handcar keeps a
    recovery copy, says so, and still kills it."""
    cid = hc.create(args=["sleep", "300"])
    assert hc("start", cid).rc == 0
    pid = hc.state(cid)["pid"]
    state_file = hc.root / cid / "state.json"
    if damage == "missing":
        state_file.unlink()
    else:
        state_file.write_text('{"id": ')
    seen = hc("state", cid)
    assert seen.rc == 0 and json.loads(seen.out)["status"] == "running", seen
    assert "using its recovery record" in seen.err and "level=warning" in seen.err
    listed = hc("list", "-q")
    assert listed.out.split() == [cid] and "recovery record" in listed.err
    assert hc("delete", "--force", cid).rc == 0
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the init gone")
    assert not (hc.root / cid).exists()


def test_a_full_root_gives_one_line_and_no_phantom(hc: Runtime, tmp_path: Path) -> None:
    full = tmp_path / "full-root"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
    try:
        fill = os.open(full / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fill, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(fill)
        tiny = Runtime(full, hc.tmp, hc.rootfs)
        cid = tiny.new_id()
        result = tiny("create", "--bundle", str(hc.bundle(args=["true"])), cid)
        assert result.rc != 0
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and "no space left on device" in lines[0], result
        assert "Traceback" not in result.err and "Error:" not in result.err.split("msg=")[-1]
        assert tiny("list", "-q").out.strip() == ""
        assert [p.name for p in full.iterdir()] == ["filler"]
    finally:
        subprocess.run(["umount", str(full)], check=False)
    assert not os.path.ismount(full)
