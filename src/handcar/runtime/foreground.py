"""A process in the foreground: forward the signals we get to it, and reap it for its status."""

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


def forward_signals(pid: int) -> None:
    """Send every catchable signal we receive on to `pid` (our child, so never recycled)."""

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in range(1, _signal.NSIG):
        if signum in NOT_FORWARDED or signum in (32, 33):  # glibc keeps 32/33 for itself
            continue
        try:
            _signal.signal(signum, forward)
        except (OSError, ValueError):
            continue


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
