"""containerd (Debian's 1.6 and its runc v2 shim) drives the runtime under test through
`ctr run --runc-binary`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.engine_helpers import run_in_pty
from engines.engine_setup import Containerd, start_containerd
from harness import HANDCAR, poll, wait_for

pytestmark = pytest.mark.slow

IMAGE = "localhost/bb:latest"


@pytest.fixture(scope="module")
def ctd(engine_dir: Path, image_archive: Path) -> Iterator[Containerd]:
    with start_containerd(engine_dir / "containerd") as engine:
        result = engine.ctr("image", "import", str(image_archive), timeout=120)
        assert result.returncode == 0, result
        yield engine
        for cid in engine.ctr("task", "ls", "-q").stdout.split():
            engine.ctr("task", "kill", "-s", "9", cid)
            poll(lambda: "STOPPED" in engine.ctr("task", "ls").stdout, 10, 0.1)
            engine.ctr("task", "rm", "-f", cid)
        for cid in engine.ctr("container", "ls", "-q").stdout.split():
            engine.ctr("container", "rm", cid)


def runtime_flags(ctd: Containerd) -> list[str]:
    return ["--runc-binary", HANDCAR, "--runc-root", str(ctd.runtime_root)]


def new_id() -> str:
    return "hct-" + uuid.uuid4().hex[:8]


def task_status(ctd: Containerd, cid: str) -> str:
    for line in ctd.ctr("task", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[2]
    return ""


def test_run_rm(ctd: Containerd) -> None:
    cid = new_id()
    result = ctd.ctr("run", "--rm", *runtime_flags(ctd), IMAGE, cid, "echo", "hello")
    assert (result.returncode, result.stdout) == (0, "hello\n"), result
    result = ctd.ctr("run", "--rm", *runtime_flags(ctd), IMAGE, new_id(), "sh", "-c", "exit 3")
    assert result.returncode == 3, result
    assert cid not in ctd.ctr("container", "ls", "-q").stdout


def test_missing_executable(ctd: Containerd) -> None:
    cid = new_id()
    result = ctd.ctr("run", "--rm", *runtime_flags(ctd), IMAGE, cid, "no-such-command")
    assert result.returncode != 0
    assert 'exec: "no-such-command": executable file not found in $PATH' in result.stderr
    ctd.ctr("container", "rm", cid)


def test_task_lifecycle(ctd: Containerd) -> None:
    """run -d with a memory limit, exec, ps, pause/resume, metrics, kill, rm."""
    cid = new_id()
    result = ctd.ctr(
        "run",
        "-d",
        *runtime_flags(ctd),
        "--memory-limit",
        str(64 << 20),
        IMAGE,
        cid,
        "sh",
        "-c",
        "while :; do sleep 0.1; done",
    )
    assert result.returncode == 0, result
    assert wait_for(lambda: task_status(ctd, cid) == "RUNNING", 20)
    # the runtime keeps its state under --runc-root/<namespace>/<id>
    assert (ctd.runtime_root / "hct" / cid).is_dir()

    exec_result = ctd.ctr(
        "task", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo in-exec; exit 4"
    )
    assert (exec_result.returncode, exec_result.stdout) == (4, "in-exec\n"), exec_result
    missing = ctd.ctr("task", "exec", "--exec-id", "e2", cid, "no-such-command")
    assert missing.returncode != 0
    assert "executable file not found" in missing.stderr, missing

    ps = ctd.ctr("task", "ps", cid)
    assert ps.returncode == 0 and len(ps.stdout.splitlines()) >= 2, ps

    assert ctd.ctr("task", "pause", cid).returncode == 0
    assert task_status(ctd, cid) == "PAUSED"
    assert ctd.ctr("task", "resume", cid).returncode == 0
    assert task_status(ctd, cid) == "RUNNING"

    metrics = ctd.ctr("task", "metrics", cid)
    assert metrics.returncode == 0, metrics
    limits = [line.split() for line in metrics.stdout.splitlines() if "limit" in line]
    assert any(
        fields[0] in ("memory.limit_in_bytes", "memory.limit") and fields[1] == str(64 << 20)
        for fields in limits
    ), metrics.stdout

    assert ctd.ctr("task", "kill", "-s", "9", cid).returncode == 0
    assert wait_for(lambda: task_status(ctd, cid) == "STOPPED", 20)
    assert ctd.ctr("task", "rm", cid).returncode == 0
    assert ctd.ctr("container", "rm", cid).returncode == 0
    assert not (ctd.runtime_root / "hct" / cid).exists()


def test_kill_term_and_delete(ctd: Containerd) -> None:
    cid = new_id()
    script = 'trap "exit 0" TERM; while :; do sleep 0.1; done'
    result = ctd.ctr("run", "-d", *runtime_flags(ctd), IMAGE, cid, "sh", "-c", script)
    assert result.returncode == 0, result
    assert wait_for(lambda: task_status(ctd, cid) == "RUNNING", 20)
    assert ctd.ctr("task", "kill", cid).returncode == 0  # SIGTERM
    assert wait_for(lambda: task_status(ctd, cid) == "STOPPED", 20)
    # a second kill of a stopped task is "not found" to containerd, never a hang
    assert ctd.ctr("task", "rm", cid).returncode == 0
    assert ctd.ctr("container", "rm", cid).returncode == 0


def test_run_tty(ctd: Containerd) -> None:
    """ctr run -t: the shim receives the pty master over --console-socket."""
    argv = ["ctr", "-a", ctd.sock, "-n", "hct", "run", "--rm", "-t", *runtime_flags(ctd)]
    result = run_in_pty(
        [*argv, IMAGE, new_id(), "sh", "-c", "tty; echo READY; exec sh"],
        [(b"READY", b"echo typed-$((6*7)); exit 5\n")],
    )
    assert result.code == 5, result
    assert "/dev/pts/0" in result.text and "typed-42" in result.text, result


def test_exec_tty(ctd: Containerd) -> None:
    """ctr task exec -t: the exec's pty master goes to the shim over --console-socket."""
    cid = new_id()
    result = ctd.ctr("run", "-d", *runtime_flags(ctd), IMAGE, cid, "sleep", "1000")
    assert result.returncode == 0, result
    argv = ["ctr", "-a", ctd.sock, "-n", "hct", "task", "exec", "-t", "--exec-id", "tty1", cid]
    try:
        result2 = run_in_pty(
            [*argv, "sh", "-c", "tty; echo READY; exec sh"],
            [(b"READY", b"echo typed-$((6*7)); exit 6\n")],
        )
        assert result2.code == 6, result2
        assert "/dev/pts/" in result2.text and "typed-42" in result2.text, result2
    finally:
        ctd.ctr("task", "kill", "-s", "9", cid)
        poll(lambda: task_status(ctd, cid) == "STOPPED", 20, 0.1)
        ctd.ctr("task", "rm", cid)
        ctd.ctr("container", "rm", cid)
