"""The container lifecycle on the runtime's side: create, start, state, kill, delete.

This is handcar's library API; the CLI is a thin layer over it.
"""

from __future__ import annotations

import os
import time

from handcar import OCI_VERSION, spec
from handcar.errors import ConfigError, ContainerNotFound, ContainerNotRunning, HandcarError
from handcar.state import ContainerState, StateStore, read_proc_stat
from handcar.sync import Channel, ChannelError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/handcar"


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
        self.console_fd = -1  # a connected console socket: `run -t` in the foreground


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


class Runtime:
    """One runtime root (runc's --root) and its global options."""

    __slots__ = ("store", "systemd_cgroup", "rootless")

    def __init__(
        self, root: str = DEFAULT_ROOT, systemd_cgroup: bool = False, rootless: bool = False
    ) -> None:
        self.store = StateStore(root)
        self.systemd_cgroup = systemd_cgroup
        self.rootless = rootless

    # ---- create --------------------------------------------------------------------------

    def create(self, container_id: str, options: CreateOptions) -> int:
        """Create the container; return the init's host pid once it blocks on exec.fifo."""
        bundle = os.path.abspath(options.bundle)
        config = spec.load_config(bundle)
        self.store.path(container_id)  # validates the id before any work
        _validate_resources(config)
        _check_console(config, options)
        rootfs = os.path.join(bundle, config["root"]["path"])
        if not os.path.isdir(rootfs):
            raise HandcarError(f"root.path: rootfs ({rootfs}) does not exist")
        seccomp = _compile_seccomp(config)
        state = self.store.new(
            container_id,
            {
                "id": container_id,
                "pid": 0,
                "init_start_time": "",
                "bundle": bundle,
                "rootfs": rootfs,
                "created": rfc3339_now(),
                "annotations": config.get("annotations") or {},
                "config": config,
                "rootless": self.rootless,
            },
        )
        try:
            return _Creation(self, state, config, options, seccomp).run()
        finally:
            state.unlock()

    # ---- start, state, kill, delete -------------------------------------------------------

    def load(self, container_id: str) -> ContainerState:
        return self.store.load(container_id)

    def start(self, container_id: str) -> None:
        state = self.store.load(container_id)
        try:
            status = state.status()
            if status == "stopped":
                raise HandcarError("cannot start a container that has stopped")
            if status != "created":
                raise HandcarError("cannot start an already running container")
            _release_init(state)
        finally:
            state.unlock()
        if state.config.get("hooks"):
            from handcar.hooks import run_hooks

            run_hooks(state, "poststart", "running", fatal=False)

    def state(self, container_id: str) -> dict[str, Any]:
        return describe(self.store.load(container_id, lock=False))

    def list(self) -> list[dict[str, Any]]:
        states = []
        for container_id in self.store.ids():
            try:
                states.append(describe(self.store.load(container_id, lock=False)))
            except (ContainerNotFound, HandcarError):
                continue
        return states

    def kill(self, container_id: str, signum: int, all_processes: bool = False) -> None:
        state = self.store.load(container_id, lock=False)
        status = state.status()
        if status == "stopped":
            if all_processes:
                return
            raise ContainerNotRunning()
        if all_processes and state.data.get("cgroup_paths"):
            _cgroup_manager(state).kill_all(signum)
            return
        signal_init(state, signum)

    def delete(self, container_id: str, force: bool = False) -> None:
        try:
            state = self.store.load(container_id)
        except ContainerNotFound:
            if force:
                return
            raise
        try:
            if "id" in state.data and "config" not in state.data:
                state.data["config"] = {}
            status = state.status()
            if status in ("running", "paused") and not force:
                raise HandcarError(
                    f"cannot delete container {container_id} that is not stopped: {status}"
                )
            if status != "stopped":
                _kill_and_wait(state)
            destroy(state)
        finally:
            state.unlock()


def _validate_resources(config: dict[str, Any]) -> None:
    resources = (config.get("linux") or {}).get("resources")
    if not resources:
        return
    from handcar.cgroups import CgroupError, validate_resources

    try:
        validate_resources(resources, "linux.resources")
    except CgroupError as err:
        raise ConfigError(f"config.json: {err}") from None


def _check_console(config: dict[str, Any], options: CreateOptions) -> None:
    terminal = bool(config["process"].get("terminal"))
    if terminal and not options.console_socket and options.console_fd < 0:
        raise HandcarError(
            "cannot allocate tty if handcar will detach without setting console socket"
        )
    if not terminal and options.console_socket:
        raise HandcarError("cannot use console socket if handcar will not detach or allocate tty")


def _compile_seccomp(config: dict[str, Any]) -> Any:
    section = (config.get("linux") or {}).get("seccomp")
    if not section:
        return None
    from handcar.seccomp import compile_filter

    return compile_filter(section)


def describe(state: ContainerState) -> dict[str, Any]:
    """The `state` command's object, with runc's field order."""
    status = state.status()
    config = state.config
    result: dict[str, Any] = {
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


def oci_state(state: ContainerState, status: str) -> dict[str, Any]:
    """The OCI state object that hooks receive on stdin."""
    result: dict[str, Any] = {
        "ociVersion": state.config.get("ociVersion", OCI_VERSION),
        "id": state.id,
        "status": status,
        "pid": state.pid,
        "bundle": state.bundle,
    }
    if state.data.get("annotations"):
        result["annotations"] = state.data["annotations"]
    return result


# ---- the create sequence ---------------------------------------------------------------------


class _Creation:
    """One create: fork the bootstrap, serve its requests, commit or clean everything up."""

    __slots__ = ("runtime", "state", "config", "options", "seccomp", "boot", "init", "child",
                 "cgroup")

    def __init__(
        self,
        runtime: Runtime,
        state: ContainerState,
        config: dict[str, Any],
        options: CreateOptions,
        seccomp: Any,
    ) -> None:
        self.runtime = runtime
        self.state = state
        self.config = config
        self.options = options
        self.seccomp = seccomp
        self.boot: Channel | None = None
        self.init: Channel | None = None
        self.child = 0
        self.cgroup: Any = None

    def run(self) -> int:
        try:
            self._fork()
            self._serve_bootstrap()
            self._serve_init()
            return self.state.pid
        except BaseException as err:
            self._abort()
            if isinstance(err, ChannelError):
                raise HandcarError(str(err)) from None
            raise

    def _plan(self) -> Any:
        from handcar.init import InitPlan

        plan = InitPlan(self.state.id, self.config, self.state.bundle, self.state.data["rootfs"])
        plan.fifo_path = self.state.fifo_path
        plan.namespaces = spec.namespaces(self.config)
        plan.preserve_fds = self.options.preserve_fds
        plan.no_pivot = self.options.no_pivot
        plan.no_new_keyring = self.options.no_new_keyring
        plan.seccomp = self.seccomp
        if self.options.console_fd >= 0:
            plan.console_socket = os.dup(self.options.console_fd)
        elif self.options.console_socket:
            from handcar.sync import connect_unix

            try:
                sock = connect_unix(self.options.console_socket)
            except OSError as err:
                raise HandcarError(
                    f"--console-socket {self.options.console_socket}: {err.strerror}"
                ) from None
            plan.console_socket = sock.detach()
        return plan

    def _fork(self) -> None:
        os.mkfifo(self.state.fifo_path, 0o622)
        os.chmod(self.state.fifo_path, 0o622)  # past the umask: a userns init writes it
        plan = self._plan()
        plan.fifo_fd = os.open(self.state.fifo_path, os.O_PATH | os.O_CLOEXEC)
        plan.state_dir_fd = os.open(self.state.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.boot, boot_child = Channel.pair()
        self.init, init_child = Channel.pair()
        plan.boot_channel, plan.init_channel = boot_child, init_child
        # The cgroups are made before the fork so that the child can be moved at once: the first
        # migration in a burst waits for an RCU grace period, and the child's module loading and
        # unsharing overlap with that wait.
        self.cgroup = _open_cgroup(self.runtime, self.state, self.config)
        pid = os.fork()
        if pid == 0:
            self.boot.close()
            self.init.close()
            from handcar.init import bootstrap

            bootstrap(plan)
        self.child = pid
        boot_child.close()
        init_child.close()
        if plan.console_socket >= 0:
            os.close(plan.console_socket)
        os.close(plan.fifo_fd)
        os.close(plan.state_dir_fd)
        if "user" not in plan.namespaces or plan.namespaces["user"]:
            self.cgroup.add_pid(pid)

    def _serve_bootstrap(self) -> None:
        assert self.boot is not None
        while True:
            kind, payload = self.boot.recv()
            if kind == "userns":
                from handcar.userns import write_id_maps

                write_id_maps(self.child, self.config)
                self.boot.send("mapped")
                self.cgroup.add_pid(self.child)
            elif kind == "cgroup?":
                self.boot.send("cgroup")
            elif kind == "pid":
                self._record_init(int(payload))
                if self.options.subreaper:
                    # Needed only once the bootstrap exits and the init is re-parented to us;
                    # loading ctypes now overlaps with the init's rootfs setup.
                    from handcar import linux

                    linux.set_child_subreaper()
                return
            else:
                raise ChannelError(kind, payload)

    def _record_init(self, pid: int) -> None:
        stat = read_proc_stat(pid)
        self.state.data["pid"] = pid
        self.state.data["init_start_time"] = stat[1] if stat else ""
        self.state.save()

    def _serve_init(self) -> None:
        assert self.init is not None and self.boot is not None
        self.init.expect("hooks")
        if self.config.get("hooks"):
            from handcar.hooks import run_hooks

            run_hooks(self.state, "prestart", "creating", fatal=True)
            run_hooks(self.state, "createRuntime", "creating", fatal=True)
        self.init.send("hooks-done")
        if self.seccomp is not None and self.seccomp.needs_listener:
            from handcar.listener import serve_until

            serve_until(self.init, self.state, "ready")
        else:
            self.init.expect("ready")
        if self.options.pid_file:
            write_pid_file(self.options.pid_file, self.state.pid)
        if self.options.pidfd_socket:
            from handcar.sync import send_pidfd

            try:
                send_pidfd(self.options.pidfd_socket, self.state.pid)
            except OSError as err:
                raise HandcarError(str(err)) from None
        self.init.send("start-wait")
        self.boot.send("release")
        os.waitpid(self.child, 0)
        self.child = 0

    def _abort(self) -> None:
        """Undo a failed create: the bootstrap kills and reaps the init, then everything goes."""
        if self.boot is not None:
            try:
                self.boot.send("abort")
            except OSError:
                pass
            self.boot.close()
        if self.init is not None:
            self.init.close()
        if self.child:
            try:
                os.kill(self.child, 9)
            except ProcessLookupError:
                pass
            os.waitpid(self.child, 0)
        if self.state.pid:
            _kill_and_wait(self.state)
        if self.cgroup is not None:
            self.cgroup.destroy()
        self.state.remove()


def _open_cgroup(runtime: Runtime, state: ContainerState, config: dict[str, Any]) -> Any:
    from handcar.cgroups import open_manager

    linux_cfg = config.get("linux") or {}
    manager = open_manager(
        linux_cfg.get("cgroupsPath"), state.id, runtime.systemd_cgroup, runtime.rootless
    )
    state.data["cgroup_paths"] = manager.paths()
    state.save()  # recorded before the first mkdir, so a crash from here on is cleanable
    try:
        manager.create()
        state.data["cgroup_created"] = manager.created()
        manager.apply(linux_cfg.get("resources") or {}, devices=not runtime.rootless)
    except BaseException:
        # A value the kernel refuses: the caller never sees this manager, so remove its
        # cgroups here (the init has not joined them yet).
        manager.destroy()
        raise
    return manager


def _cgroup_manager(state: ContainerState) -> Any:
    from handcar.cgroups import from_paths

    return from_paths(state.data["cgroup_paths"], state.data.get("cgroup_created"))


# ---- start, kill and delete helpers ---------------------------------------------------------


def _release_init(state: ContainerState) -> None:
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


def _kill_and_wait(state: ContainerState) -> None:
    """SIGKILL every process of the container and wait until the init is gone."""
    if state.data.get("cgroup_paths"):
        manager = _cgroup_manager(state)
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
        from handcar.hooks import run_hooks

        run_hooks(state, "poststop", "stopped", fatal=False)
    if state.data.get("cgroup_paths"):
        _cgroup_manager(state).destroy()
    state.remove()
