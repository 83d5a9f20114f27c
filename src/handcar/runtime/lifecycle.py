"""What the runtime does to one container's state: describe it, release its init, signal it,
end it. `Runtime` (handcar.runtime.container) and create, run and exec build on these.
"""

from __future__ import annotations

import os
import time

from handcar import OCI_VERSION
from handcar.errors import ContainerNotRunning, HandcarError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.cgroups.types import CgroupManager
    from handcar.runtime.state import ContainerState
    from handcar.spec.types import HookKind, RuncState, State, Status


class CreateOptions:
    """`create`'s flags. The defaults are runc's."""

    __slots__ = (
        "bundle",
        "pid_file",
        "console_socket",
        "pidfd_socket",
        "no_pivot",
        "no_new_keyring",
        "preserve_fds",
        "subreaper",
        "was_subreaper",
        "console_fd",
    )

    def __init__(self, bundle: str = ".") -> None:
        self.bundle = bundle
        self.pid_file = ""
        self.console_socket = ""
        self.pidfd_socket = ""
        self.no_pivot = False
        self.no_new_keyring = False
        self.preserve_fds = 0
        self.subreaper = False
        self.was_subreaper = False  # the caller's flag before create set it, to put it back
        self.console_fd = -1  # a connected console socket: `run -t` in the foreground


def require_sealed_exe(command: str) -> None:
    """Refuse to fork processes into a container's sight from a writable interpreter file.

    The init and exec's process are forks of this process, so their /proc/<pid>/exe is this
    process's image. The handcar launcher execs the interpreter from a read-only overlayfs
    file or a sealed memfd; a program that calls the library from its own interpreter, or
    `python -m`, runs the host's file, which the container could overwrite (CVE-2019-5736).
    """
    from handcar.procfs import writable_exe

    path = writable_exe()
    if path:
        raise HandcarError(
            f"{command}: this process runs {path}, a writable host file that the container "
            "would see as /proc/self/exe of handcar's processes and could overwrite "
            f"(CVE-2019-5736); run {command} through the handcar launcher, or the program "
            "with handcar-python"
        )


def rfc3339_now() -> str:
    """Go's time.RFC3339Nano in UTC: nanoseconds with trailing zeros trimmed."""
    now = time.time_ns()
    seconds, nanos = divmod(now, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else base + "Z"


def write_pid_file(path: str, pid: int) -> None:
    """The decimal pid, no newline, written atomically (engines read it as soon as it exists)."""
    path = os.path.abspath(path)
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def describe(state: ContainerState) -> RuncState:
    """The `state` command's object, with runc's field order."""
    status = state.status()
    config = state.config
    result: RuncState = {
        "ociVersion": config.get("ociVersion", OCI_VERSION),
        "id": state.id,
        "pid": state.pid if status != "stopped" else 0,
        "status": status,
        "bundle": state.bundle,
        "rootfs": state.data.get("rootfs", ""),
        "created": state.data.get("created", "0001-01-01T00:00:00Z"),
    }
    if state.data.get("annotations"):
        result["annotations"] = state.data["annotations"]
    result["owner"] = ""
    return result


def oci_state(state: ContainerState, status: Status) -> State:
    """The OCI state object that hooks receive on stdin."""
    result: State = {
        "ociVersion": state.config.get("ociVersion", OCI_VERSION),
        "id": state.id,
        "status": status,
        "pid": state.pid,
        "bundle": state.bundle,
    }
    if state.data.get("annotations"):
        result["annotations"] = state.data["annotations"]
    return result


def cgroup_manager(state: ContainerState) -> CgroupManager:
    """The container's cgroup manager, reopened from the paths saved in its state."""
    from handcar.cgroups.manager import from_paths

    return from_paths(state.data["cgroup_paths"], state.data.get("cgroup_created"))


# ---- start, kill and delete helpers ---------------------------------------------------------


def release_init(state: ContainerState) -> None:
    """Open exec.fifo for reading: the blocked init writes one byte and goes on to exec."""
    import select

    try:
        fd = os.open(state.fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HandcarError("cannot start an already running container") from None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll(100):
            if not state.is_alive():
                raise HandcarError("cannot start a container that has stopped")
        reply = os.read(fd, 4096)
        if reply != b"0":
            if reply[:6] == b"hooks.":
                # A startContainer hook failed; the init has exited.
                raise HandcarError(reply.decode(errors="replace"))
            raise HandcarError("cannot start an already running container")
    finally:
        os.close(fd)
    os.unlink(state.fifo_path)


def signal_init(state: ContainerState, signum: int) -> None:
    """Signal the init through a pidfd checked against its start time: never a recycled pid."""
    try:
        pidfd = os.pidfd_open(state.pid)
    except ProcessLookupError:
        raise ContainerNotRunning() from None
    try:
        if not state.is_alive():
            raise ContainerNotRunning()
        import _signal

        _signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        raise ContainerNotRunning() from None
    finally:
        os.close(pidfd)


def kill_and_wait(state: ContainerState) -> None:
    """SIGKILL every process of the container and wait until the init is gone."""
    if state.data.get("cgroup_paths"):
        manager = cgroup_manager(state)
        try:
            manager.kill_all(9)
            manager.wait_empty(1.0)
        except OSError:
            pass
    try:
        pidfd = os.pidfd_open(state.pid)
    except (ProcessLookupError, ValueError):
        return
    try:
        if not state.is_alive():
            return
        import _signal
        import select

        _signal.pidfd_send_signal(pidfd, 9)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll(10_000)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def destroy(state: ContainerState) -> None:
    """The end of a container: poststop hooks, its cgroups, its state directory."""
    if state.config.get("hooks"):
        run_hooks(state, "poststop", "stopped", fatal=False)
    if state.data.get("cgroup_paths"):
        if not _owns_pid_namespace(state):
            # runc's destroy: without a pid namespace of its own the init's death does not end
            # the container's other processes, and the cgroup could not be removed.
            signal_leftovers(state, 9)
        cgroup_manager(state).destroy()
    state.remove()


def _owns_pid_namespace(state: ContainerState) -> bool:
    """A new pid namespace of its own (a `pid` entry without a path); read from the saved
    config directly, so that delete loads no spec module."""
    linux = state.config.get("linux") or {}
    return any(
        isinstance(ns, dict) and ns.get("type") == "pid" and not ns.get("path")
        for ns in linux.get("namespaces") or []
    )


def signal_leftovers(state: ContainerState, signum: int) -> None:
    """Signal every process still in the container's cgroup (none, or no cgroup, is fine)."""
    if not state.data.get("cgroup_paths"):
        return
    manager = cgroup_manager(state)
    try:
        if not manager.pids():
            return
        manager.kill_all(signum)
        if signum == 9:
            manager.wait_empty(1.0)
    except (OSError, HandcarError):
        pass  # the cgroup is gone or emptied meanwhile


def run_hooks(state: ContainerState, kind: HookKind, status: Status, fatal: bool) -> None:
    """Run the config's `kind` hooks in the runtime, with the OCI state on their stdin."""
    from handcar import jsonio
    from handcar.hooks import run_hook_list

    hooks = (state.config.get("hooks") or {}).get(kind) or []
    if not hooks:
        return
    run_hook_list(hooks, kind, jsonio.dumps(oci_state(state, status)).encode(), fatal)
