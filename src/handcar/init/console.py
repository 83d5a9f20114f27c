"""The container's terminal: a pty made inside the container, its master sent to the caller.

The console-socket protocol (runc's): one message on the unix socket carrying the master fd as
SCM_RIGHTS and the pty's path as payload. The slave becomes the process's stdio and
controlling terminal, and /dev/console.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import struct

from handcar import linux
from handcar.errors import HandcarError
from handcar.sync import send_fd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.spec.types import Box


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, linux.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def attach_console(console_socket: int, size: Box | None, bind_console: bool = True) -> None:
    """Make a pty (from this mount namespace's /dev/ptmx), send its master, take the slave as
    stdio and controlling terminal; the init also binds it over /dev/console, exec does not."""
    if console_socket < 0:
        raise HandcarError("process.terminal: a terminal needs --console-socket")
    master, slave = os.openpty()
    slave_path = os.ttyname(slave)
    if size:
        set_window_size(slave, size.get("height", 0), size.get("width", 0))
    sock = _socket.socket(fileno=os.dup(console_socket))
    try:
        send_fd(sock, master, slave_path.encode())
    except OSError as err:
        raise HandcarError(f"--console-socket: cannot send the pty: {err.strerror}") from None
    finally:
        sock.close()
        os.close(master)
    try:
        if bind_console:
            linux.mount(slave_path, "/dev/console", None, linux.MS_BIND)
    except OSError:
        pass  # no /dev/console target (no tmpfs /dev): the process still gets the pty
    for target in (0, 1, 2):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)
    fcntl.ioctl(0, linux.TIOCSCTTY, 0)
