"""exec's child side: the joiner enters the running container, and forks the process.

joiner (forked by the runtime, host pid namespace)
    non-dumpable, closes every inherited fd but stdio and --preserve-fds, opens the init's
    /proc/PID/ns/* (checked against the init's start time, so never a recycled pid), joins
    the user namespace first and then the others, chroots to the init's root and forks: the
    pid and time namespaces take effect only in children.
process (forked by the joiner, inside every namespace)
    a new session, the terminal (a pty made from the container's /dev/ptmx, its master sent
    over the console socket), the process settings shared with the init (handcar.init.process),
    seccomp, and execve.

Everything here is imported by the runtime before the fork: inside the container, handcar's
own files are out of reach.
"""

from __future__ import annotations

import os

from handcar import linux
from handcar.errors import HandcarError
from handcar.sync import Channel, report_and_exit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

# /proc/PID/ns names, in the order they are joined: the user namespace first (it grants the
# rights to join the others, which it owns), the mount namespace last but for pid and time,
# which only apply to children anyway.
JOIN_ORDER = ("user", "cgroup", "ipc", "uts", "net", "mnt", "pid", "time")
_PROC_NS_FLAGS = {
    "user": linux.CLONE_NEWUSER,
    "cgroup": linux.CLONE_NEWCGROUP,
    "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS,
    "net": linux.CLONE_NEWNET,
    "mnt": linux.CLONE_NEWNS,
    "pid": linux.CLONE_NEWPID,
    "time": linux.CLONE_NEWTIME,
}


class ExecPlan:
    """What the joiner and the process need, decided by the runtime before the fork."""

    __slots__ = (
        "container_id",
        "init_pid",
        "init_start_time",
        "process",
        "channel",
        "console_fd",
        "preserve_fds",
        "seccomp",
        "no_new_keyring",
    )

    def __init__(
        self,
        container_id: str,
        init_pid: int,
        init_start_time: str,
        process: dict[str, Any],
        channel: Channel,
    ) -> None:
        self.container_id = container_id
        self.init_pid = init_pid
        self.init_start_time = init_start_time
        self.process = process
        self.channel = channel
        self.console_fd = -1
        self.preserve_fds = 0
        self.seccomp: Any = None
        self.no_new_keyring = False


# ---- the joiner ----------------------------------------------------------------------------


def open_namespaces(pid: int) -> list[tuple[str, int]]:
    """The init's namespaces that differ from ours, as open fds in JOIN_ORDER."""
    opened: list[tuple[str, int]] = []
    for name in JOIN_ORDER:
        try:
            fd = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # this kernel has no such namespace type
        except ProcessLookupError:
            raise HandcarError("cannot exec in a stopped container") from None
        try:
            if os.fstat(fd).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                os.close(fd)
                continue
        except FileNotFoundError:
            pass
        opened.append((name, fd))
    return opened


def run_joiner(plan: ExecPlan) -> NoReturn:
    channel = plan.channel
    try:
        linux.set_dumpable(False)
        from handcar.init.process import close_fds_from

        close_fds_from(3 + plan.preserve_fds, {channel.fileno(), plan.console_fd})
        namespaces = open_namespaces(plan.init_pid)
        root_fd = os.open(f"/proc/{plan.init_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        from handcar.procfs import process_is_alive

        # Opened first, checked after: the fds belong to the init we recorded, not to a
        # process that got its pid since.
        if not process_is_alive(plan.init_pid, plan.init_start_time):
            raise HandcarError("cannot exec in a stopped container")
        joined_user = False
        for name, fd in namespaces:
            try:
                linux.setns(fd, _PROC_NS_FLAGS[name])
            except OSError as err:
                raise HandcarError(f"join the container's {name} namespace: {err}") from None
            os.close(fd)
            joined_user = joined_user or name == "user"
        if joined_user:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        os.fchdir(root_fd)
        os.chroot(".")
        os.close(root_fd)
        # The runtime moves us into the container's cgroups meanwhile (the first migration in
        # a burst waits for an RCU grace period); the process must be born inside them.
        channel.expect("cgroup")
        pid = os.fork()
        if pid == 0:
            _start_process(plan)
        channel.send("pid", str(pid))
    except BaseException as err:  # noqa: B036 - the child must report every failure
        report_and_exit(channel, err)
    os._exit(0)


# ---- the process ---------------------------------------------------------------------------


def _start_process(plan: ExecPlan) -> NoReturn:
    from handcar.init import process as proc  # imported by the runtime before the fork

    channel = plan.channel
    process = plan.process
    try:
        os.setsid()
        if process.get("terminal"):
            from handcar.init.console import attach_console

            attach_console(plan.console_fd, process.get("consoleSize"), bind_console=False)
        if plan.console_fd >= 0:
            os.close(plan.console_fd)
        early = None if plan.seccomp is None else lambda: _load_seccomp(plan)
        executable = proc.prepare(process, plan.container_id, not plan.no_new_keyring, early)
        env = proc.exec_environment(process.get("env") or [])
        mask = process.pop("__sigmask__", None)
        if mask is not None:
            import _signal

            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
        if plan.seccomp is not None:
            _load_seccomp(plan)
        from handcar.init.trampoline import exec_program

        exec_program(executable, process["args"], env)
    except BaseException as err:  # noqa: B036
        report_and_exit(channel, err)
    os._exit(127)  # unreachable: execve returns only by raising


def _load_seccomp(plan: ExecPlan) -> None:
    from handcar.seccomp.load import load_filter

    load_filter(plan.seccomp)
    plan.seccomp = None
