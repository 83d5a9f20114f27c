"""The whole lifecycle through the library, with no CLI: `import handcar` as a program would.

Each test makes real containers with `handcar.runtime.container.Runtime` in this process, and
checks what the kernel shows (cgroup files, /proc) rather than what the library says. A
program that forks into a container's sight must run from a read-only interpreter image, so
test_library_launcher.py runs this file under `handcar-python`; run from the host's writable
interpreter (plain pytest), the library refuses, and these tests are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handcar.errors import ContainerNotRunning, ExecSetupError, HandcarError
from handcar.procfs import writable_exe
from handcar.runtime.container import Runtime
from handcar.runtime.exec import ExecOptions
from handcar.runtime.lifecycle import CreateOptions
from harness import Runtime as Cli
from harness import wait_for

pytestmark = pytest.mark.skipif(
    bool(writable_exe()), reason="run under handcar-python by test_library_launcher.py"
)


@pytest.fixture
def lib(hc: Cli) -> Iterator[Runtime]:
    """A library Runtime on the harness's root, so the harness's teardown checks for leaks."""
    yield Runtime(root=str(hc.root))


def _create(hc: Cli, lib: Runtime, args: list[str] | None = None) -> tuple[str, int]:
    cid = hc.new_id()
    bundle = hc.bundle(args=args or ["sleep", "300"])
    pid = lib.create(cid, CreateOptions(str(bundle)))
    return cid, pid


def _cgroup_file(lib: Runtime, cid: str, controller: str, name: str) -> str:
    paths = lib.store.load(cid, lock=False).data["cgroup_paths"]
    path = paths.get(controller) or paths[""]
    return Path(path, name).read_text().strip()


def test_create_start_state_kill_delete(hc: Cli, lib: Runtime) -> None:
    cid, pid = _create(hc, lib)
    assert lib.state(cid)["status"] == "created"
    assert lib.state(cid)["pid"] == pid
    lib.start(cid)
    assert lib.state(cid)["status"] == "running"
    assert [s["id"] for s in lib.list()] == [cid]
    lib.kill(cid, 9)
    assert wait_for(lambda: lib.state(cid)["status"] == "stopped")
    lib.delete(cid)
    assert not (hc.root / cid).exists()
    with pytest.raises(HandcarError):
        lib.state(cid)


def test_exec_returns_the_exit_code(hc: Cli, lib: Runtime) -> None:
    cid, _ = _create(hc, lib)
    lib.start(cid)
    assert lib.exec(cid, {"args": ["sh", "-c", "exit 7"], "cwd": "/"}) == 7
    # Inside the container's pid namespace, its init is pid 1 and runs `sleep 300`.
    probe = ["sh", "-c", "grep -q sleep /proc/1/cmdline"]
    assert lib.exec(cid, {"args": probe, "cwd": "/"}) == 0
    options = ExecOptions()
    options.detach = True
    assert lib.exec(cid, {"args": ["sleep", "1"], "cwd": "/"}, options) == 0
    with pytest.raises(ExecSetupError):
        lib.exec(cid, {"args": ["/no/such/program"], "cwd": "/"})
    lib.delete(cid, force=True)


def test_pause_resume_update_ps_stats(hc: Cli, lib: Runtime) -> None:
    cid, pid = _create(hc, lib)
    lib.start(cid)
    assert pid in lib.ps(cid)
    lib.pause(cid)
    assert lib.state(cid)["status"] == "paused"
    assert "FROZEN" in _cgroup_file(lib, cid, "freezer", "freezer.state")
    lib.resume(cid)
    assert lib.state(cid)["status"] == "running"
    with pytest.raises(HandcarError, match="not paused"):
        lib.resume(cid)
    lib.update(cid, {"pids": {"limit": 42}})
    assert _cgroup_file(lib, cid, "pids", "pids.max") == "42"
    stats = lib.stats(cid)
    assert stats["pids"]["current"] >= 1
    with pytest.raises(HandcarError, match=r"resources\.pids\.limit"):
        bad: Any = {"pids": {"limit": "many"}}
        lib.update(cid, bad)
    lib.delete(cid, force=True)
    with pytest.raises(HandcarError):
        lib.pause(cid)


def test_events_stream_ends_when_the_container_stops(hc: Cli, lib: Runtime) -> None:
    cid, _ = _create(hc, lib, ["sleep", "1"])
    lib.start(cid)
    events = list(lib.events(cid, interval=0.2))
    assert events and all(e["type"] in ("stats", "oom") and e["id"] == cid for e in events)
    assert events[0]["type"] == "stats" and "pids" in events[0]["data"]
    with pytest.raises(HandcarError, match="is not running"):
        lib.stats(cid)
    lib.delete(cid)


def test_run_detached_and_in_the_foreground(hc: Cli, lib: Runtime) -> None:
    cid = hc.new_id()
    bundle = hc.bundle(args=["sh", "-c", "exit 3"])
    assert lib.run(cid, CreateOptions(str(bundle))) == 3
    assert not (hc.root / cid).exists()  # deleted after the foreground run
    cid = hc.new_id()
    assert lib.run(cid, CreateOptions(str(hc.bundle(args=["sleep", "300"]))), detach=True) == 0
    assert lib.state(cid)["status"] == "running"
    lib.kill(cid, 9)
    assert wait_for(lambda: lib.state(cid)["status"] == "stopped")
    with pytest.raises(ContainerNotRunning):
        lib.kill(cid, 9)
    lib.delete(cid)


def test_features_and_default_spec(lib: Runtime) -> None:
    features = lib.features()
    assert features["ociVersionMax"].startswith("1.")
    assert "bind" in features["mountOptions"]
    spec = lib.default_spec()
    assert spec["process"]["args"] == ["sh"]
    rootless = lib.default_spec(rootless=True)
    assert any(ns["type"] == "user" for ns in rootless["linux"]["namespaces"])
    assert os.path.isabs(lib.store.root)


def _caller_state() -> tuple[object, set[int], bool]:
    import ctypes
    import signal

    flag = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(37, ctypes.byref(flag), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    return signal.getsignal(signal.SIGTERM), set(mask), bool(flag.value)


def test_foreground_exec_and_run_leave_the_callers_signals_alone(hc: Cli, lib: Runtime) -> None:
    """A library caller's program goes on after exec and run: its signal handlers, mask and
    subreaper flag are its own again (the CLI exits, so it never noticed)."""
    before = _caller_state()
    cid, _ = _create(hc, lib)
    lib.start(cid)
    assert lib.exec(cid, {"args": ["true"], "cwd": "/"}) == 0
    assert _caller_state() == before
    assert lib.run(hc.new_id(), CreateOptions(str(hc.bundle(args=["true"])))) == 0
    assert _caller_state() == before
    lib.delete(cid, force=True)
