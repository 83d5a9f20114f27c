"""The init's half of the seccomp listener hand-over (linux.seccomp.listenerPath).

The init loads a filter with SCMP_ACT_NOTIFY and gets a listener fd. It sends that fd to the
runtime over its init channel (SCM_RIGHTS, message "seccomp-listener") and waits for
"seccomp-sent": by then the runtime has passed the fd and the container's state to the agent
(handcar.runtime.listener), so the agent can answer the first notified syscall the init makes.
"""

from __future__ import annotations

import os

from handcar.sync import Channel, send_fd


def hand_over(channel: Channel, fd: int) -> None:
    """In the init: give the listener fd to the runtime and wait until the agent has it."""
    try:
        send_fd(channel.sock, fd, b"seccomp-listener ")
    finally:
        os.close(fd)
    channel.expect("seccomp-sent")
