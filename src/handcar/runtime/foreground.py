"""A process in the foreground: forward the signals we get to it, and reap it for its status.

The CLI exits afterwards, but a library caller's program goes on: `CallerState` puts back
its signal handlers, signal mask and child-subreaper flag once the process is done.
"""

from __future__ import annotations

import _signal
import os

NOT_FORWARDED = {
    _signal.SIGCHLD,
    _signal.SIGKILL,
    _signal.SIGSTOP,
    _signal.SIGURG,
    _signal.SIGWINCH,
}


def forward_signals(pid: int) -> dict[int, object]:
    """Send every catchable signal we receive on to `pid` (our child, so never recycled).
    Returns the handlers it replaced."""

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    previous: dict[int, object] = {}
    for signum in range(1, _signal.NSIG):
        if signum in NOT_FORWARDED or signum in (32, 33):  # glibc keeps 32/33 for itself
            continue
        try:
            previous[signum] = _signal.signal(signum, forward)
        except (OSError, ValueError):
            continue
    return previous


def wait_for_exit(pid: int) -> int:
    """Reap children until `pid` exits; its exit code, or 128+signal as runc reports it."""
    while True:
        try:
            child, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if child == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)


def restore_handlers(previous: dict[int, object]) -> None:
    """Put back handlers that forward_signals replaced (None: one not set from Python)."""
    for signum, handler in previous.items():
        if handler is not None:
            _signal.signal(signum, handler)


class CallerState:
    """What the foreground changes in the calling process, saved to be put back."""

    __slots__ = ("handlers", "mask", "subreaper")

    def __init__(self) -> None:
        self.handlers: dict[int, object] = {}
        self.mask: set[int] | None = None
        self.subreaper: bool | None = None

    def block(self, signals: set[int]) -> set[int]:
        """Block `signals` until forwarding is in place; returns the caller's mask."""
        mask: set[int] = _signal.pthread_sigmask(_signal.SIG_BLOCK, signals)
        if self.mask is None:
            self.mask = mask
        return mask

    def forward_to(self, pid: int) -> None:
        for signum, handler in forward_signals(pid).items():
            self.handlers.setdefault(signum, handler)

    def become_subreaper(self) -> None:
        from handcar import linux

        if self.subreaper is None:
            self.subreaper = linux.is_child_subreaper()
        linux.set_child_subreaper(True)

    def restore(self) -> None:
        restore_handlers(self.handlers)
        self.handlers.clear()
        if self.mask is not None:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, self.mask)
            self.mask = None
        if self.subreaper is False:
            from handcar import linux

            linux.set_child_subreaper(False)
        self.subreaper = None
