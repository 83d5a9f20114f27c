"""create, start, state, kill, delete and run on real containers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from harness import Runtime, process_gone, signal_handled, wait_for


def test_create_blocks_on_exec_fifo_until_start(hc: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    config = hc.config(["sh", "-c", "echo started > /out/marker; sleep 300"])
    config["mounts"].append(
        {"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind", "rw"]}
    )
    cid = hc.create(config)
    state = hc.state(cid)
    assert state["status"] == "created"
    pid = state["pid"]
    assert pid > 0
    fifo = hc.root / cid / "exec.fifo"
    assert fifo.exists()
    links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert str(fifo) in links, "containerd checks that the init holds exec.fifo"
    assert not (out / "marker").exists()
    assert hc("start", cid).rc == 0
    assert wait_for(lambda: (out / "marker").exists())
    assert hc.state(cid)["status"] == "running"
    assert not fifo.exists()
    again = hc("start", cid)
    assert again.rc == 1 and "cannot start an already running container" in again.err


def test_state_fields_follow_runc(hc: Runtime) -> None:
    config = hc.config(["sleep", "300"])
    config["annotations"] = {"org.example/key": "value"}
    cid = hc.create(config)
    result = hc("state", cid)
    state = json.loads(result.out)
    assert list(state) == [
        "ociVersion",
        "id",
        "pid",
        "status",
        "bundle",
        "rootfs",
        "created",
        "annotations",
        "owner",
    ]
    assert result.out.startswith('{\n  "ociVersion"')
    assert os.path.isabs(state["bundle"]) and os.path.isabs(state["rootfs"])
    assert state["annotations"] == {"org.example/key": "value"}
    assert state["created"].endswith("Z") and "." in state["created"]


def test_delete_rules(hc: Runtime) -> None:
    cid = hc.create(args=["sleep", "300"])
    assert hc("start", cid).rc == 0
    result = hc("delete", cid)
    assert result.rc == 1
    assert f"cannot delete container {cid} that is not stopped: running" in result.err
    pid = hc.state(cid)["pid"]
    assert hc("delete", "--force", cid).rc == 0
    assert not (hc.root / cid).exists()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    second = hc("delete", cid)
    assert second.rc == 1 and "container does not exist" in second.err


def test_a_created_container_may_be_deleted(hc: Runtime) -> None:
    cid = hc.create(args=["sleep", "300"])
    pid = hc.state(cid)["pid"]
    assert hc("delete", cid).rc == 0
    assert wait_for(
        lambda: (
            not Path(f"/proc/{pid}").exists()
            or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
        )
    )


def test_kill_signal_forms_and_stopped_rules(hc: Runtime) -> None:
    for form in ("9", "KILL", "SIGKILL", "kill"):
        cid = hc.create(args=["sleep", "300"])
        assert hc("start", cid).rc == 0
        assert hc("kill", cid, form).rc == 0, form

        def stopped(cid: str = cid) -> bool:
            return bool(hc.state(cid)["status"] == "stopped")

        assert wait_for(stopped, what=f"{cid} to stop after kill {form}")
        state = hc.state(cid)
        assert state["pid"] == 0
        result = hc("kill", cid, "9")
        assert result.rc == 1 and "container not running" in result.err
        assert hc("kill", "--all", cid, "9").rc == 0
        assert hc("delete", cid).rc == 0


def test_kill_default_is_sigterm_and_unknown_signal_errors(hc: Runtime) -> None:
    cid = hc.create(args=["sh", "-c", "trap 'exit 7' TERM; while true; do sleep 0.1; done"])
    assert hc("start", cid).rc == 0
    pid = hc.state(cid)["pid"]
    wait_for(lambda: signal_handled(pid, signal.SIGTERM), what="the shell to trap SIGTERM")
    bad = hc("kill", cid, "SIGFOO")
    assert bad.rc == 1 and "unknown signal" in bad.err
    assert hc("kill", cid).rc == 0
    assert wait_for(lambda: hc.state(cid)["status"] == "stopped")


def test_start_of_stopped_container(hc: Runtime) -> None:
    cid = hc.create(args=["true"])
    assert hc("start", cid).rc == 0
    assert wait_for(lambda: hc.state(cid)["status"] == "stopped")
    result = hc("start", cid)
    assert result.rc == 1 and "cannot start a container that has stopped" in result.err


def test_run_returns_exit_code_and_output(hc: Runtime) -> None:
    result = hc.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert result.rc == 3
    assert result.out == "out\n"
    assert "err\n" in result.err
    assert list(hc.root.iterdir()) == []


def test_run_reports_death_by_signal_as_128_plus_signal(hc: Runtime) -> None:

    bundle = hc.bundle(args=["sleep", "300"])
    cid = hc.new_id()
    proc = hc.popen("run", "--bundle", str(bundle), cid)
    assert wait_for(lambda: hc("state", cid).rc == 0 and hc.state(cid)["status"] == "running")
    assert hc("kill", cid, "KILL").rc == 0
    assert proc.wait(timeout=20) == 128 + 9
    assert not (hc.root / cid).exists()


def test_run_forwards_signals(hc: Runtime) -> None:
    bundle = hc.bundle(
        args=[
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.1; done",
        ]
    )
    proc = hc.popen("run", "--bundle", str(bundle), hc.new_id(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 42
    assert "got-term" in proc.stdout.read()


def test_run_detach(hc: Runtime) -> None:
    bundle = hc.bundle(args=["sleep", "300"])
    cid = hc.new_id()
    result = hc("run", "--detach", "--bundle", str(bundle), cid)
    assert result.rc == 0, result
    assert hc.state(cid)["status"] == "running"


def test_list_formats(hc: Runtime) -> None:
    first = hc.create(args=["sleep", "300"])
    second = hc.create(args=["sleep", "300"])
    assert hc("start", second).rc == 0
    table = hc("list").out.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows[first][2] == "created" and rows[second][2] == "running"
    assert rows[first][5] == "root"
    items = json.loads(hc("list", "--format", "json").out)
    assert {i["id"] for i in items} == {first, second}
    assert sorted(hc("list", "-q").out.split()) == sorted([first, second])


def test_pid_file_is_written_atomically_without_newline(hc: Runtime, tmp_path: Path) -> None:
    bundle = hc.bundle(args=["sleep", "300"])
    cid = hc.new_id()
    pid_file = tmp_path / "init.pid"
    assert hc("create", "--bundle", str(bundle), "--pid-file", str(pid_file), cid).rc == 0
    text = pid_file.read_text()
    assert text == str(hc.state(cid)["pid"])
    assert not text.endswith("\n")


def test_recycled_pid_is_never_signalled(hc: Runtime) -> None:
    cid = hc.create(args=["sleep", "300"])
    state_file = hc.root / cid / "state.json"
    data = json.loads(state_file.read_text())
    real_pid = data["pid"]
    data["init_start_time"] = "1"  # as if the pid now belonged to another process
    state_file.write_text(json.dumps(data))
    assert hc.state(cid)["status"] == "stopped"
    result = hc("kill", cid, "9")
    assert result.rc == 1 and "container not running" in result.err
    assert Path(f"/proc/{real_pid}").exists()
    os.kill(real_pid, 9)


def test_concurrent_creates_of_one_id(hc: Runtime) -> None:

    bundle = hc.bundle(args=["sleep", "300"])
    cid = hc.new_id()
    # Files, not pipes: the winning container's init inherits its create's stderr.
    logs = [hc.tmp / f"create-{i}.err" for i in range(4)]
    procs = [
        hc.popen(
            "create",
            "--bundle",
            str(bundle),
            cid,
            stderr=log.open("w"),
        )
        for log in logs
    ]
    codes = [p.wait(timeout=60) for p in procs]
    assert sorted(codes) == [0, 1, 1, 1]
    errors = [log.read_text() for log in logs]
    assert sum("container with id exists" in e for e in errors) == 3
    assert hc.state(cid)["status"] == "created"


def test_kill_9_of_create_is_cleaned_by_delete_force(hc: Runtime, tmp_path: Path) -> None:
    marker = tmp_path / "hook-pid"
    config = hc.config(["sleep", "300"])
    # A createRuntime hook that blocks holds create mid-way, with the init already forked. It
    # writes its pid (kept by exec) so the test can stop it, and nothing else, at the end.
    config["hooks"] = {
        "createRuntime": [
            {"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {marker}; exec sleep 301"]}
        ]
    }
    bundle = hc.bundle(config)
    cid = hc.new_id()
    proc = hc.popen("create", "--bundle", str(bundle), cid)
    try:
        assert wait_for(lambda: marker.exists() and marker.read_text().endswith("\n"), 20)
        state = json.loads((hc.root / cid / "state.json").read_text())
        init_pid = state["pid"]
        assert init_pid > 0 and state["cgroup_paths"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert hc("delete", "--force", cid).rc == 0
        assert not (hc.root / cid).exists()
        assert wait_for(
            lambda: (
                not Path(f"/proc/{init_pid}").exists()
                or Path(f"/proc/{init_pid}/stat").read_text().split(") ")[1][0] == "Z"
            )
        )
    finally:
        if marker.exists():
            _kill_hook(int(marker.read_text()))


def _kill_hook(pid: int) -> None:
    """SIGKILL the hook by pid, if that pid is still the hook (`sleep 301`), and reap nothing:
    it is not our child."""
    try:
        if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00301\x00":
            os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass
    wait_for(lambda: process_gone(pid), what=f"the hook {pid} to exit")
