"""Running OCI hooks, for the runtime and the init alike: each gets the container's state JSON
on stdin, its args, env and timeout.

A failing createRuntime, createContainer or startContainer hook fails the container; a failing
poststart or poststop hook is logged as a warning and the lifecycle goes on (the spec's rule).
"""

from __future__ import annotations

import os
import select
import time

from handcar import jsonio
from handcar.errors import HandcarError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.spec.types import Hook, HookKind, Spec, State, Status


def _spawn(hook: Hook, stdin_data: bytes) -> tuple[int, int, int]:
    """Fork and exec the hook; return (pid, stdin write end, output read end)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            args = hook.get("args") or [hook["path"]]
            env = dict(e.partition("=")[::2] for e in hook.get("env", []))
            os.execve(hook["path"], args, env)
        except OSError as err:
            os.write(2, f"exec {hook['path']}: {err.strerror}".encode())
        os._exit(127)
    os.close(in_r)
    os.close(out_w)
    try:
        os.write(in_w, stdin_data)
    except BrokenPipeError:
        pass
    os.close(in_w)
    return pid, in_w, out_r


def run_hook(hook: Hook, state_json: bytes, where: str) -> None:
    """Run one hook to completion; raise HandcarError naming `where` when it fails."""
    pid, _, out_r = _spawn(hook, state_json)
    timeout = hook.get("timeout")
    deadline = time.monotonic() + timeout if timeout else None
    output = b""
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    timed_out = False
    try:
        while True:
            wait_ms = (
                None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            )
            if not poller.poll(wait_ms):
                timed_out = True
                os.kill(pid, 9)
                break
            chunk = os.read(out_r, 65536)
            if not chunk:
                break
            output = (output + chunk)[-4096:]
    finally:
        os.close(out_r)
        _, status = os.waitpid(pid, 0)
    if timed_out:
        raise HandcarError(f"{where}: timed out after {timeout}s")
    if status != 0:
        code = os.waitstatus_to_exitcode(status)
        detail = output.decode(errors="replace").strip().replace("\n", " ")
        why = f"exit status {code}" if code >= 0 else f"killed by signal {-code}"
        raise HandcarError(f"{where}: {why}" + (f": {detail}" if detail else ""))


def container_state_json(
    config: Spec, container_id: str, status: Status, pid: int, bundle: str
) -> bytes:
    """The state for hooks run inside the container (createContainer, startContainer): there
    the spec wants the pid as the container sees it."""
    from handcar import OCI_VERSION

    result: State = {
        "ociVersion": config.get("ociVersion", OCI_VERSION),
        "id": container_id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
    }
    if config.get("annotations"):
        result["annotations"] = config["annotations"]
    return jsonio.dumps(result).encode()


def run_hook_list(hooks: list[Hook], kind: HookKind, state_json: bytes, fatal: bool) -> None:
    for index, hook in enumerate(hooks):
        where = f"hooks.{kind}[{index}] ({hook['path']})"
        try:
            run_hook(hook, state_json, where)
        except HandcarError as err:
            if fatal:
                raise
            from handcar import log

            log.warning(str(err))
