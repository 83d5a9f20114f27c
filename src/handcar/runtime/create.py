"""The create sequence on the runtime's side: validate, claim the id, fork the bootstrap,
serve the children's requests (id maps, cgroup, hooks), commit, or undo everything.

The child's side of the same sequence is in handcar.init.bootstrap.
"""

from __future__ import annotations

import os

from handcar.errors import ConfigError, HandcarError
from handcar.procfs import read_proc_stat
from handcar.runtime.lifecycle import (
    CreateOptions,
    kill_and_wait,
    require_sealed_exe,
    rfc3339_now,
    run_hooks,
    write_pid_file,
)
from handcar.runtime.state import ContainerState
from handcar.spec import validate as spec
from handcar.spec.paths import rootfs_path
from handcar.sync import Channel, ChannelError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from handcar.cgroups.types import CgroupManager
    from handcar.init.plan import InitPlan
    from handcar.runtime.container import Runtime
    from handcar.seccomp.compile import CompiledFilter
    from handcar.spec.types import Spec


def create_container(
    runtime: Runtime, container_id: str, options: CreateOptions, config: Spec | None
) -> int:
    """Create the container; return the init's host pid once it blocks on exec.fifo."""
    require_sealed_exe("create")
    bundle = os.path.abspath(options.bundle)
    if config is None:
        config = spec.load_config(bundle)
    runtime.store.path(container_id)  # validates the id before any work
    _validate_resources(config)
    _check_console(config, options)
    rootfs = rootfs_path(bundle, config["root"]["path"])
    seccomp = _compile_seccomp(config)
    state = runtime.store.new(
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
            "rootless": runtime.rootless,
            "creating": True,
        },
    )
    try:
        return _Creation(runtime, state, config, options, seccomp).run()
    finally:
        state.unlock()


def _validate_resources(config: Spec) -> None:
    resources = (config.get("linux") or {}).get("resources")
    if not resources:
        return
    from handcar.cgroups.fs import CgroupError
    from handcar.cgroups.update import validate_resources

    try:
        validate_resources(resources, "linux.resources")
    except CgroupError as err:
        raise ConfigError(f"config.json: {err}") from None


def _check_console(config: Spec, options: CreateOptions) -> None:
    terminal = bool(config["process"].get("terminal"))
    if terminal and not options.console_socket and options.console_fd < 0:
        raise HandcarError(
            "cannot allocate tty if handcar will detach without setting console socket"
        )
    if not terminal and options.console_socket:
        raise HandcarError("cannot use console socket if handcar will not detach or allocate tty")


def _compile_seccomp(config: Spec) -> CompiledFilter | None:
    section = (config.get("linux") or {}).get("seccomp")
    if not section:
        return None
    from handcar.seccomp.compile import compile_filter

    return compile_filter(section)


# ---- the create sequence ---------------------------------------------------------------------


class _Creation:
    """One create: fork the bootstrap, serve its requests, commit or clean everything up."""

    __slots__ = (
        "runtime",
        "state",
        "config",
        "options",
        "seccomp",
        "boot",
        "init",
        "child",
        "cgroup",
    )

    def __init__(
        self,
        runtime: Runtime,
        state: ContainerState,
        config: Spec,
        options: CreateOptions,
        seccomp: CompiledFilter | None,
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

    def _plan(self) -> InitPlan:
        from handcar.init.plan import InitPlan

        plan = InitPlan(self.state.id, self.config, self.state.bundle, self.state.data["rootfs"])
        plan.fifo_path = self.state.fifo_path
        plan.namespaces = spec.namespaces(self.config)
        plan.preserve_fds = self.options.preserve_fds
        plan.no_pivot = self.options.no_pivot
        plan.no_new_keyring = self.options.no_new_keyring
        plan.seccomp = self.seccomp
        if any(m.get("uidMappings") or m.get("gidMappings") for m in self.config.get("mounts", [])):
            from handcar.runtime.idmap import prepare

            plan.idmap_fds = prepare(self.config, self.state.bundle)
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
            from handcar.init.bootstrap import bootstrap

            bootstrap(plan)
        self.child = pid
        boot_child.close()
        init_child.close()
        if plan.console_socket >= 0:
            os.close(plan.console_socket)
        os.close(plan.fifo_fd)
        os.close(plan.state_dir_fd)
        for fd in plan.idmap_fds.values():
            os.close(fd)
        if "user" not in plan.namespaces or plan.namespaces["user"]:
            self.cgroup.add_pid(pid)

    def _serve_bootstrap(self) -> None:
        assert self.boot is not None
        while True:
            kind, payload = self.boot.recv()
            if kind == "userns":
                from handcar.runtime.userns import write_id_maps

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

                    self.options.was_subreaper = linux.is_child_subreaper()
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
            run_hooks(self.state, "prestart", "creating", fatal=True)
            run_hooks(self.state, "createRuntime", "creating", fatal=True)
        self.init.send("hooks-done")
        if self.seccomp is not None and self.seccomp.needs_listener:
            from handcar.runtime.listener import serve_until

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
        self.state.commit()

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
            kill_and_wait(self.state)
        if self.cgroup is not None:
            self.cgroup.destroy(own_leaves=False)
        self.state.remove()


def _open_cgroup(runtime: Runtime, state: ContainerState, config: Spec) -> CgroupManager:
    from handcar.cgroups.manager import open_manager

    linux_cfg = config.get("linux") or {}
    manager = open_manager(
        linux_cfg.get("cgroupsPath"), state.id, runtime.systemd_cgroup, runtime.rootless
    )
    state.data["cgroup_paths"] = manager.paths()
    state.save()  # recorded before the first mkdir, so a crash from here on is cleanable
    try:
        manager.create()
        state.data["cgroup_created"] = manager.created()
        manager.check_usable()
        manager.apply(linux_cfg.get("resources") or {}, devices=not runtime.rootless)
    except BaseException:
        # A value the kernel refuses: the caller never sees this manager, so remove its
        # cgroups here (the init has not joined them yet).
        manager.destroy(own_leaves=False)
        raise
    return manager
