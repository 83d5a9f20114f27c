"""The foreground terminal: `run -t` / `exec -t` without --console-socket.

handcar is then its own console socket: the container's side gets one end of a socketpair and
sends the pty master back; handcar puts its own terminal in raw mode, copies stdin to the
master and the master to stdout, follows window-size changes (SIGWINCH -> TIOCSWINSZ),
forwards every other signal to the process and restores the terminal when the process exits.
Single-threaded: one poll loop, with signals delivered through a wakeup pipe.
"""

from __future__ import annotations

import _signal
import _socket
import os

from handcar.runtime.foreground import forward_signals, restore_handlers
from handcar.sync import recv_fd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_CHUNK = 65536


class TerminalAttach:
    __slots__ = ("sock", "peer_fd", "master")

    def __init__(self) -> None:
        ours, theirs = _socket.socketpair(
            _socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC, 0
        )
        self.sock: _socket.socket | None = _socket.socket(fileno=ours.detach())
        self.peer_fd = theirs.detach()  # what the container's side sends the master on
        self.master = -1

    def receive(self) -> int:
        """The pty master, once the container's side has sent it."""
        if self.master < 0:
            assert self.sock is not None
            if self.peer_fd >= 0:
                os.close(self.peer_fd)  # EOF instead of a hang if the sender died
                self.peer_fd = -1
            self.master, _ = recv_fd(self.sock)
            self.sock.close()
            self.sock = None
        return self.master

    def close(self) -> None:
        if self.peer_fd >= 0:
            os.close(self.peer_fd)
            self.peer_fd = -1
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def run(self, pid: int) -> int:
        """Relay the terminal until `pid` (our child) exits; its exit code, 128+signal."""
        master = self.receive()
        saved = _enter_raw_mode(0)
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = _signal.set_wakeup_fd(write_end)
        previous: dict[int, object] = {}
        try:
            previous = _install_handlers(pid)
            _copy_window_size(0, master)
            return _relay(pid, master, read_end)
        finally:
            restore_handlers(previous)
            _signal.set_wakeup_fd(old_wakeup)
            os.close(read_end)
            os.close(write_end)
            if saved is not None:
                import termios

                termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _enter_raw_mode(fd: int) -> Any:
    if not os.isatty(fd):
        return None
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSADRAIN)
    return saved


def _copy_window_size(source: int, target: int) -> None:
    import fcntl

    from handcar import linux

    try:
        size = fcntl.ioctl(source, linux.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target, linux.TIOCSWINSZ, size)
    except OSError:
        pass  # stdin is not a terminal: keep the pty's size


def _install_handlers(pid: int) -> dict[int, object]:
    """Forwarding to `pid`, and wake-ups for SIGCHLD and SIGWINCH; returns what it replaced."""
    previous = forward_signals(pid)

    def wake(_signum: int, _frame: object) -> None:
        pass  # the wakeup fd carries the signal number to the poll loop

    previous[_signal.SIGCHLD] = _signal.signal(_signal.SIGCHLD, wake)
    previous[_signal.SIGWINCH] = _signal.signal(_signal.SIGWINCH, wake)
    return previous


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        data = data[written:]


def _reap(pid: int) -> int | None:
    """Reap every exited child; the exit code once `pid` is among them."""
    code = None
    while True:
        try:
            child, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 255 if code is None else code
        if child == 0:
            return code
        if child == pid:
            code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _relay(pid: int, master: int, wakeup: int) -> int:
    import select

    poller = select.poll()
    poller.register(master, select.POLLIN)
    poller.register(wakeup, select.POLLIN)
    stdin_open = True
    try:
        poller.register(0, select.POLLIN)
    except (OSError, ValueError):
        stdin_open = False
    code = _reap(pid)
    while code is None:
        for fd, events in poller.poll():
            if fd == wakeup:
                signals = os.read(wakeup, 256)
                if _signal.SIGWINCH in signals:
                    _copy_window_size(0, master)
                code = _reap(pid)
            elif fd == master:
                try:
                    data = os.read(master, _CHUNK)
                except OSError:
                    data = b""  # EIO: every slave fd is closed
                if data:
                    _write_all(1, data)
                else:
                    poller.unregister(master)
            elif fd == 0 and stdin_open:
                data = os.read(0, _CHUNK) if events & (select.POLLIN | select.POLLHUP) else b""
                if data:
                    _write_all(master, data)
                else:
                    # stdin reached EOF: pass it on as the terminal's EOF character.
                    poller.unregister(0)
                    stdin_open = False
                    _write_all(master, b"\x04")
    _drain(master)
    return code


def _drain(master: int) -> None:
    """What the process wrote before it exited and we have not copied yet."""
    os.set_blocking(master, False)
    while True:
        try:
            data = os.read(master, _CHUNK)
        except OSError:
            return
        if not data:
            return
        _write_all(1, data)
