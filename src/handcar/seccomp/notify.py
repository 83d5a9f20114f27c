"""Hand a seccomp notify listener fd to the agent at linux.seccomp.listenerPath, as runc does."""

from __future__ import annotations


def send_listener_fd(listener_path: str, fd: int, state_json: bytes, metadata: str) -> None:
    """Send the OCI container process state and the listener fd to the seccomp agent at
    listener_path (one connection, one message, then close), as runc does.

    state_json is the container's state (`runtime.md#state`) already serialized; its `pid` is
    used as the process state's `pid`.
    """
    from handcar import OCI_VERSION

    payload = b'{"ociVersion":%s,"fds":["seccompFd"],"pid":%d,"metadata":%s,"state":%s}' % (
        _json_string(OCI_VERSION),
        _state_pid(state_json),
        _json_string(metadata),
        state_json,
    )
    _send_with_fd(listener_path, payload, fd)


def _send_with_fd(path: str, payload: bytes, fd: int) -> None:
    # _socket rather than socket: the socket module imports enum.
    import _socket
    import array

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
        sent = sock.sendmsg([payload], rights)
        # The fd travels with the first sendmsg only, as the spec requires.
        while sent < len(payload):
            sent += sock.send(payload[sent:])
    except OSError as err:
        raise OSError(err.errno, f"seccomp listener {path}: {err.strerror}") from None
    finally:
        sock.close()


def _json_string(text: str) -> bytes:
    from handcar import jsonio

    return jsonio.dumps(text).encode()


def _state_pid(state_json: bytes) -> int:
    from handcar import jsonio

    state = jsonio.loads(state_json, "container state")
    pid = state.get("pid") if isinstance(state, dict) else None
    if not isinstance(pid, int):
        raise ValueError("container state has no pid")
    return pid
