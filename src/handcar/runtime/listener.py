"""The runtime's half of the seccomp listener's trip from the init to the agent.

The init loads a filter with SCMP_ACT_NOTIFY and gets a listener fd. It sends that fd to the
runtime over its init channel (SCM_RIGHTS, message "seccomp-listener") and waits for
"seccomp-sent": by then the runtime has passed the fd and the container's state to the agent,
so the agent can answer the first notified syscall the init makes. runc does the same through
its sync pipe.
"""

from __future__ import annotations

import os

from handcar.sync import Channel, ChannelError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.runtime.state import ContainerState


def serve_until(channel: Channel, state: ContainerState, expected: str) -> str:
    """In the runtime: answer listener hand-overs until the init sends `expected`."""
    while True:
        data, ancdata, _flags, _addr = channel.sock.recvmsg(65536, _cmsg_space())
        fds = _fds(ancdata)
        kind, _, payload = data.decode(errors="replace").partition(" ")
        if not data:
            kind = "eof"
        if kind != "seccomp-listener":
            for fd in fds:
                os.close(fd)
            if kind != expected:
                raise ChannelError(kind, payload)
            return payload
        if not fds:
            raise ChannelError("error", "seccomp listener: no fd from the container")
        try:
            _send_to_agent(state, fds[0])
        finally:
            for fd in fds:
                os.close(fd)
        channel.send("seccomp-sent")


def _send_to_agent(state: ContainerState, fd: int) -> None:
    from handcar import jsonio
    from handcar.errors import HandcarError
    from handcar.runtime.lifecycle import oci_state
    from handcar.seccomp.notify import send_listener_fd

    section = state.config["linux"]["seccomp"]  # a listener: compile saw its listenerPath
    state_json = jsonio.dumps(oci_state(state, "creating")).encode()
    try:
        send_listener_fd(
            section["listenerPath"], fd, state_json, section.get("listenerMetadata", "")
        )
    except OSError as err:
        raise HandcarError(f"linux.seccomp.listenerPath: {err.strerror}") from None


def _cmsg_space() -> int:
    import _socket

    return _socket.CMSG_SPACE(4)


def _fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    import _socket

    fds = []
    for level, kind, raw in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [
                int.from_bytes(raw[i : i + 4], "little", signed=True)
                for i in range(0, len(raw) - len(raw) % 4, 4)
            ]
    return fds
