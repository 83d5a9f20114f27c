"""The child side of `create`: the two forked stages that become the container's init.

bootstrap (forked by the runtime)
    joins or creates the namespaces (the user namespace first, so the runtime can write its id
    maps), waits until the runtime has put it in the container's cgroup, creates the cgroup
    namespace, and forks again so that the next process is pid 1 of the new pid namespace.
    It stays as that process's parent until the runtime says the container is committed, so
    that a failed create is reaped here and leaves no zombie behind.
init (pid 1)
    builds the rootfs, switches into it, applies the process settings, reports "ready" and
    blocks on exec.fifo until `start`; then execs the user's program.

Both stages are single-threaded and report any failure as one "error MESSAGE" line on their
channel. Nothing here may return into the runtime's code: every path ends in os._exit.
"""

from __future__ import annotations

import os

from handcar.errors import HandcarError
from handcar.sync import Channel, report_and_exit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from handcar import linux
    from handcar.init.plan import InitPlan
    from handcar.spec.types import Process, Spec
else:
    # Imported by the children, not the runtime: ctypes then loads while the runtime makes
    # the cgroups, instead of before the fork.
    linux = None


# ---- stage 1: namespaces -------------------------------------------------------------------


def bootstrap(plan: InitPlan) -> NoReturn:
    channel = plan.boot_channel
    assert channel is not None
    try:
        _load_child_modules(plan)
        linux.set_dumpable(False)
        _enter_namespaces(plan, channel)
        _join_cgroup(plan, channel)
        init_pid = os.fork()
        if init_pid == 0:
            channel.close()
            run_init(plan)
        # The init's end of its channel is the init's alone: were it kept open here, the
        # runtime would never see EOF when the init dies mid-create, and would wait forever.
        if plan.init_channel is not None:
            plan.init_channel.close()
        channel.send("pid", str(init_pid))
        _guard_init(channel, init_pid)
    except BaseException as err:  # noqa: B036 - the child must report every failure
        report_and_exit(channel, err)
    os._exit(0)


def _load_child_modules(plan: InitPlan) -> None:
    """Everything the init will need, loaded while the runtime is busy with the cgroups."""
    global linux
    from handcar import linux as linux_module
    from handcar.init import trampoline  # noqa: F401

    linux = linux_module
    if plan.seccomp is not None:
        import handcar.seccomp.load  # noqa: F401 - out of reach once the rootfs is pivoted
    if plan.config.get("mounts"):
        import handcar.init.cgroupfs  # noqa: F401
    if (plan.config.get("process") or {}).get("terminal"):
        import handcar.init.console  # noqa: F401 - out of reach once the rootfs is pivoted


def _join_cgroup(plan: InitPlan, channel: Channel) -> None:
    """Wait until the runtime has moved us into the container's cgroup (the init inherits it),
    then root the cgroup namespace there."""
    channel.send("cgroup?")
    channel.expect("cgroup")
    path = plan.namespaces.get("cgroup")
    if path:
        _join("cgroup", path)
    elif path is not None:
        linux.unshare(linux.CLONE_NEWCGROUP)


def _join(ns_type: str, path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise HandcarError(f"linux.namespaces: {ns_type} path {path}: {err.strerror}") from None
    try:
        linux.setns(fd, linux.NAMESPACE_FLAGS[ns_type])
    except OSError as err:
        raise HandcarError(f"linux.namespaces: join {ns_type} {path}: {err.strerror}") from None
    finally:
        os.close(fd)


def _enter_namespaces(plan: InitPlan, channel: Channel) -> None:
    namespaces = plan.namespaces
    if "user" in namespaces:
        if namespaces["user"]:
            _join("user", namespaces["user"])
        else:
            rootless = os.geteuid() != 0
            linux.unshare(linux.CLONE_NEWUSER)
            if rootless:
                # /proc/<pid>/{uid_map,setgroups} of a non-dumpable process belong to root:
                # an unprivileged runtime could not write them (runc does the same dance).
                linux.set_dumpable(True)
            channel.send("userns")
            channel.expect("mapped")
            if rootless:
                linux.set_dumpable(False)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    new_flags = 0
    for ns_type, path in namespaces.items():
        if ns_type in ("user", "cgroup"):
            continue
        if path:
            _join(ns_type, path)
        else:
            new_flags |= linux.NAMESPACE_FLAGS[ns_type]
    if new_flags:
        try:
            linux.unshare(new_flags)
        except OSError as err:
            raise HandcarError(f"linux.namespaces: unshare: {err.strerror}") from None
    if new_flags & linux.CLONE_NEWTIME and (plan.config.get("linux") or {}).get("timeOffsets"):
        from handcar.init.security import write_time_offsets

        write_time_offsets(plan.config["linux"])


def _guard_init(channel: Channel, init_pid: int) -> None:
    """Stay the init's parent until the runtime commits; on failure or EOF kill and reap it."""
    kind, _ = channel.recv()
    if kind == "release":
        return
    try:
        os.kill(init_pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(init_pid, 0)


# ---- stage 2: the init --------------------------------------------------------------------


def run_init(plan: InitPlan) -> NoReturn:
    channel = plan.init_channel
    assert channel is not None
    try:
        os.setsid()
        _keep_only_needed_fds(plan)
        fifo_fd = plan.fifo_fd
        if fifo_fd < 0:
            fifo_fd = os.open(plan.fifo_path, os.O_PATH | os.O_CLOEXEC)
        _setup_container(plan, channel)
        channel.send("ready")
        channel.expect("start-wait")
    except BaseException as err:  # noqa: B036
        report_and_exit(channel, err)
    channel.close()
    _wait_for_start(fifo_fd, plan)
    _exec_user_process(plan)


def _keep_only_needed_fds(plan: InitPlan) -> None:
    """Close every inherited fd but stdio, --preserve-fds and our own channels.

    Marking them close-on-exec is not enough: a host directory fd still open during setup
    could be used as the process's cwd (CVE-2024-21626).
    """
    keep = {
        plan.init_channel.fileno() if plan.init_channel else -1,
        plan.console_socket,
        plan.fifo_fd,
        plan.state_dir_fd,
        *plan.idmap_fds.values(),
    }
    from handcar.init.process import close_fds_from

    close_fds_from(3 + plan.preserve_fds, keep)


def _setup_container(plan: InitPlan, channel: Channel) -> None:
    from handcar.init import process as proc
    from handcar.init import rootfs as rootfs_mod

    config = plan.config
    process: Process = config["process"]
    listener = plan.seccomp is not None and plan.seccomp.needs_listener
    if listener:
        import handcar.init.listener  # noqa: F401 - out of reach once the rootfs is pivoted
    if proc.uses_security_settings(process):
        import handcar.init.security  # noqa: F401
        import handcar.linux.sched  # noqa: F401 - out of reach once the rootfs is pivoted
    if "network" in plan.namespaces and not plan.namespaces["network"]:
        linux.loopback_up()
    if "uts" in plan.namespaces:
        if "hostname" in config:
            linux.sethostname(config["hostname"])
        if "domainname" in config:
            linux.setdomainname(config["domainname"])
    in_mount_ns = "mount" in plan.namespaces
    if in_mount_ns:
        builder = rootfs_mod.RootfsBuilder(
            plan.rootfs, plan.bundle, config, "user" in plan.namespaces
        )
        builder.idmap_fds = plan.idmap_fds
        builder.prepare()
        builder.mount_all(_cgroup_mounter("cgroup" in plan.namespaces))
        builder.setup_dev()
        # Opened before the switch: the masks use the host's null device, checked (1:3).
        null_fd = rootfs_mod.open_null_device()
    channel.send("hooks")
    channel.expect("hooks-done")
    hooks = config.get("hooks") or {}
    if hooks.get("createContainer") or hooks.get("startContainer"):
        from handcar import hooks as hooks_mod  # imported now: out of reach after pivot_root

        if hooks.get("createContainer"):
            # In the container's namespaces, before pivot_root: the path resolves as on the host.
            state_json = hooks_mod.container_state_json(
                config, plan.container_id, "creating", os.getpid(), plan.bundle
            )
            hooks_mod.run_hook_list(hooks["createContainer"], "createContainer", state_json, True)
    sysctls = _sysctl_files(config)  # before the switch: handcar.spec is out of reach after it
    console_fd = -1
    if in_mount_ns:
        builder.pivot(plan.no_pivot)
        builder.close()
        console_fd = builder.console_fd
    else:
        os.chroot(plan.rootfs)
        os.chdir("/")
    _write_sysctls(sysctls)
    linux_cfg = config.get("linux") or {}
    if in_mount_ns:
        rootfs_mod.readonly_paths(linux_cfg.get("readonlyPaths", []))
        rootfs_mod.mask_paths(linux_cfg.get("maskedPaths", []), null_fd)
        os.close(null_fd)
        if (config.get("root") or {}).get("readonly"):
            rootfs_mod.remount_root_readonly()
    if process.get("terminal"):
        from handcar.init.console import attach_console

        attach_console(plan.console_socket, process.get("consoleSize"), bind_console=False)
        if console_fd >= 0:
            rootfs_mod.bind_console(console_fd)  # onto the fd checked not to be a symlink
            os.close(console_fd)
    if plan.console_socket >= 0:
        os.close(plan.console_socket)
    early = None if plan.seccomp is None else lambda: _load_seccomp(plan, channel)
    plan.executable = proc.prepare(process, plan.container_id, not plan.no_new_keyring, early)
    if listener and plan.seccomp is not None:
        # A notify filter goes on while the channel is open, so the runtime can pass the
        # listener to the agent (runc too loads it before waiting on exec.fifo).
        _load_seccomp(plan, channel)


def _cgroup_mounter(in_cgroupns: bool) -> Any:
    def mount(builder: Any, dest: str, opts: Any) -> None:
        from handcar.init.cgroupfs import mount_cgroups

        mount_cgroups(builder, dest, opts, in_cgroupns)

    return mount


def _sysctl_files(config: Spec) -> list[tuple[str, str, str]]:
    """(key, /proc/sys file, value) for each linux.sysctl entry; validation refused any key
    outside the container's own namespaces, or without a file name."""
    sysctls = (config.get("linux") or {}).get("sysctl") or {}
    if not sysctls:
        return []
    from handcar.spec.sysctl import proc_path

    return [(key, proc_path(key) or "", value) for key, value in sysctls.items()]


def _write_sysctls(sysctls: list[tuple[str, str, str]]) -> None:
    for key, path, value in sysctls:
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as err:
            raise HandcarError(
                f"linux.sysctl.{key}: cannot set {value!r}: {err.strerror}"
            ) from None


def _wait_for_start(fifo_fd: int, plan: InitPlan) -> None:
    """Block until `start` opens exec.fifo for reading, as runc's init does.

    startContainer hooks run then, in the container; `start` reads "0" once they succeeded,
    or the failing hook's message, and the init exits.
    """
    try:
        fd = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=plan.state_dir_fd)
        os.close(plan.state_dir_fd)
        hooks = (plan.config.get("hooks") or {}).get("startContainer")
        if hooks:
            from handcar import hooks as hooks_mod

            state_json = hooks_mod.container_state_json(
                plan.config, plan.container_id, "created", os.getpid(), plan.bundle
            )
            try:
                hooks_mod.run_hook_list(hooks, "startContainer", state_json, True)
            except HandcarError as err:
                os.write(fd, str(err).encode()[:4000])
                os._exit(1)
        os.write(fd, b"0")
        os.close(fd)
        os.close(fifo_fd)
    except OSError as err:
        os.write(2, f"handcar init: exec.fifo: {err.strerror}\n".encode())
        os._exit(1)


def _exec_user_process(plan: InitPlan) -> NoReturn:
    process: Process = plan.config["process"]
    env = process.get("env", [])
    try:
        if plan.seccomp is not None and process.get("noNewPrivileges"):
            _load_seccomp(plan)
        from handcar.init.process import exec_environment
        from handcar.init.trampoline import exec_program

        exec_program(plan.executable, process["args"], exec_environment(env))
    except OSError as err:
        os.write(2, f"handcar init: exec {plan.executable}: {err.strerror}\n".encode())
    os._exit(127)


def _load_seccomp(plan: InitPlan, channel: Channel | None = None) -> None:
    from handcar.seccomp.load import load_filter

    fd = load_filter(plan.seccomp)
    plan.seccomp = None
    if fd is not None:
        if channel is None:
            os.close(fd)
            raise HandcarError("linux.seccomp.listenerPath: the listener has no way out")
        from handcar.init.listener import hand_over

        hand_over(channel, fd)
