"""The runtime <-> child handshake: one SOCK_SEQPACKET message per step, "KIND payload".

A child blocked in recv() sees EOF when the runtime dies, so a `kill -9` of handcar mid-create
makes the half-built container exit instead of waiting forever.
"""

from __future__ import annotations

import _socket
import os

# Imported here, not on failure: a child that fails after its chroot can no longer load them.
from handcar import log
from handcar.errors import HandcarError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

SCM_RIGHTS = _socket.SCM_RIGHTS
SOL_SOCKET = _socket.SOL_SOCKET


class Channel:
    __slots__ = ("sock",)

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC, 0)
        return Channel(_socket.socket(fileno=a.detach())), Channel(
            _socket.socket(fileno=b.detach())
        )

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, kind: str, payload: str = "") -> None:
        self.sock.send(f"{kind} {payload}".encode())

    def recv(self) -> tuple[str, str]:
        """The next message as (kind, payload); ("eof", "") once the peer is gone."""
        try:
            raw = self.sock.recv(65536)
        except ConnectionResetError:
            raw = b""
        if not raw:
            return "eof", ""
        kind, _, payload = raw.decode(errors="replace").partition(" ")
        return kind, payload

    def expect(self, kind: str) -> str:
        got, payload = self.recv()
        if got != kind:
            raise ChannelError(got, payload)
        return payload

    def close(self) -> None:
        self.sock.close()


def report_and_exit(channel: Channel | None, err: BaseException) -> NoReturn:
    """A child's last act on failure: one "error MESSAGE" line for the runtime, then exit.

    Whatever goes wrong here, the child exits: it must never return into its parent's code
    (a library caller's program, forked)."""
    try:
        if log.is_debug():
            import traceback

            traceback.print_exception(err)
        if channel is not None:
            channel.send("error", _message(err))
    finally:
        os._exit(1)


def _message(err: BaseException) -> str:
    if isinstance(err, HandcarError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        return err.strerror if not err.filename else f"{err.filename}: {err.strerror}"
    return f"{type(err).__name__}: {err}"


class ChannelError(Exception):
    """The peer sent something other than the expected step: an error report, or EOF."""

    def __init__(self, kind: str, payload: str) -> None:
        super().__init__(payload if kind == "error" else f"unexpected {kind!r} from the container")
        self.kind = kind


def send_fd(sock: _socket.socket, fd: int, payload: bytes) -> None:
    sock.sendmsg([payload], [(SOL_SOCKET, SCM_RIGHTS, fd.to_bytes(4, "little"))])


def recv_fd(sock: _socket.socket) -> tuple[int, bytes]:
    data, ancdata, _flags, _addr = sock.recvmsg(4096, _socket.CMSG_SPACE(4))
    for level, kind, raw in ancdata:
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            return int.from_bytes(raw[:4], "little", signed=True), data
    raise OSError("no file descriptor in the message")


def connect_unix(path: str) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC, 0)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def send_pidfd(path: str, pid: int) -> None:
    """--pidfd-socket: send a pidfd of `pid` to the unix socket at `path` (SCM_RIGHTS)."""
    import os

    try:
        pidfd = os.pidfd_open(pid)
    except OSError as err:
        raise OSError(err.errno, f"--pidfd-socket: pidfd_open {pid}: {err.strerror}") from None
    try:
        sock = connect_unix(path)
        try:
            send_fd(sock, pidfd, b"pidfd")
        finally:
            sock.close()
    except OSError as err:
        raise OSError(err.errno, f"--pidfd-socket {path}: {err.strerror}") from None
    finally:
        os.close(pidfd)
