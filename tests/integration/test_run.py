"""`handcar run`: foreground and detached, --keep, the terminal relay, signals."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import termios

from harness import Runtime, read_until


def _run(hc: Runtime, args: list[str], *flags: str) -> tuple[str, int, str]:
    cid = hc.new_id()
    bundle = hc.bundle(hc.config(args))
    result = hc("run", "--bundle", str(bundle), *flags, cid)
    return cid, result.rc, result.out + result.err


def test_foreground_exit_codes(hc: Runtime) -> None:
    cid, rc, out = _run(hc, ["sh", "-c", "echo hello; exit 3"])
    assert (rc, out) == (3, "hello\n")
    assert not (hc.root / cid).exists(), "state removed once the container exits"
    # Killed from outside (inside, pid 1 is immune to SIGKILL): 128+signal.
    cid = hc.new_id()
    bundle = hc.bundle(hc.config(["sh", "-c", "echo up; sleep 300"]))
    proc = subprocess.Popen(
        hc.argv("run", "--bundle", str(bundle), cid),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        assert hc("kill", cid, "KILL").rc == 0
        assert proc.wait(10) == 128 + signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


def test_keep_and_no_subreaper(hc: Runtime) -> None:
    cid, rc, _ = _run(hc, ["true"], "--keep")
    assert rc == 0
    assert hc.state(cid)["status"] == "stopped"
    assert hc("delete", cid).rc == 0
    cid, rc, _ = _run(hc, ["sh", "-c", "exit 9"], "--no-subreaper")
    assert rc == 9
    assert not (hc.root / cid).exists()


def test_detach(hc: Runtime) -> None:
    cid, rc, _ = _run(hc, ["sleep", "300"], "--detach")
    assert rc == 0
    assert hc.state(cid)["status"] == "running"


def test_foreground_forwards_signals(hc: Runtime) -> None:
    cid = hc.new_id()
    bundle = hc.bundle(
        hc.config(["sh", "-c", "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done"])
    )
    proc = subprocess.Popen(
        hc.argv("run", "--bundle", str(bundle), cid),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 42
    finally:
        proc.kill()
        proc.wait()
    assert not (hc.root / cid).exists()


def _take_ctty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_terminal_relay_raw_mode_resize_and_restore(hc: Runtime) -> None:
    config = hc.config(["sh"])
    config["process"]["terminal"] = True
    bundle = hc.bundle(config)
    cid = hc.new_id()
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(
        hc.argv("run", "--bundle", str(bundle), cid),
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True, preexec_fn=_take_ctty,
    )  # fmt: skip
    try:
        os.write(master, b"stty size; echo A-$((1+1))\n")
        out = read_until(master, b"A-2")
        assert b"30 100" in out, out
        during = termios.tcgetattr(slave)
        assert not during[3] & termios.ICANON, "our terminal is in raw mode while attached"
        # A window change reaches handcar as SIGWINCH and the container's pty follows.
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        # The resize reaches the container's pty a moment later: the shell waits for it.
        os.write(
            master, b'until [ "$(stty size)" = "40 120" ]; do sleep 0.01; done; echo B-$((2+2))\n'
        )
        read_until(master, b"B-4")
        os.write(master, b"tty; exit 5\n")
        assert proc.wait(10) == 5
        assert termios.tcgetattr(slave) == before, "terminal restored on exit"
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)
    assert not (hc.root / cid).exists()


def test_terminal_detached_needs_a_console_socket(hc: Runtime) -> None:
    config = hc.config(["sh"])
    config["process"]["terminal"] = True
    result = hc("run", "-d", "--bundle", str(hc.bundle(config)), hc.new_id())
    assert result.rc == 1 and "cannot allocate tty" in result.err
