"""`exec`: start a new process inside a running container.

runtime (this process)
    checks the container's status, builds and validates the process, compiles its seccomp
    filter, forks the joiner, moves it into the container's cgroups, and waits until the
    process has exec'd (its channel reaches EOF: the last copy was close-on-exec) or reported
    an error. In the foreground it is a child subreaper, so the process is re-parented to it
    once the joiner exits: it forwards signals and returns the exit code (128+signal).
joiner (forked, host pid namespace)
    non-dumpable, closes every inherited fd but stdio and --preserve-fds, opens the init's
    /proc/PID/ns/* (checked against the init's start time, so never a recycled pid), joins
    the user namespace first and then the others, chroots to the init's root and forks: the
    pid and time namespaces take effect only in children.
process (forked by the joiner, inside every namespace)
    a new session, the terminal (a pty made from the container's /dev/ptmx, its master sent
    over the console socket), the process settings shared with the init (handcar.process),
    seccomp, and execve.

Single-threaded throughout: setns(CLONE_NEWNS) and setns(CLONE_NEWUSER) refuse threaded callers.
"""

from __future__ import annotations

import os

from handcar.errors import ExecSetupError, HandcarError
from handcar.init.joiner import ExecPlan, run_joiner
from handcar.runtime.foreground import CallerState
from handcar.runtime.lifecycle import require_sealed_exe
from handcar.sync import Channel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from handcar.runtime.container import Runtime
    from handcar.runtime.state import ContainerState
    from handcar.runtime.terminal import TerminalAttach
    from handcar.spec.types import Process

    # A whole process object, or a builder of one from the container's own process. exec
    # works on a plain dict: it adds the signal mask under a private key for the joiner.
    ProcessSource = dict[str, Any] | Callable[[Process], dict[str, Any]]


def _forwarded() -> set[int]:
    import _signal

    from handcar.runtime.foreground import NOT_FORWARDED

    return {
        n for n in range(1, _signal.NSIG) if n not in NOT_FORWARDED and n not in (9, 19, 32, 33)
    }


_FORWARDED_SIGNALS = _forwarded()


class ExecOptions:
    """`exec`'s flags other than the process itself. The defaults are runc's."""

    __slots__ = (
        "console_socket",
        "console_fd",
        "detach",
        "pid_file",
        "pidfd_socket",
        "preserve_fds",
        "cgroup",
        "ignore_paused",
        "attach",
    )

    def __init__(self) -> None:
        self.console_socket = ""
        self.console_fd = -1  # an already connected console socket (the foreground -t case)
        self.detach = False
        self.pid_file = ""
        self.pidfd_socket = ""
        self.preserve_fds = 0
        self.cgroup: list[str] = []
        self.ignore_paused = False
        self.attach: TerminalAttach | None = None  # foreground -t without a socket


# ---- the process object ------------------------------------------------------------------


def load_process_file(path: str) -> dict[str, Any]:
    """--process FILE: a whole OCI process object, validated like config.json's."""
    from handcar import jsonio
    from handcar.spec.validate import Checker, check_process

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ExecSetupError(f"open {path}: {err.strerror}") from None
    process = jsonio.loads(raw, "process.json")
    check = Checker("process.json")
    if not isinstance(process, dict):
        raise check.fail("process", "must be an object")
    check_process(process, check)
    return process


class ProcessArgs:
    """A process given on the command line: defaults come from the container's own process,
    as in runc (env, cwd, user, capabilities, rlimits, noNewPrivileges, ...)."""

    __slots__ = (
        "args",
        "cwd",
        "env",
        "user",
        "additional_gids",
        "caps",
        "no_new_privs",
        "apparmor",
        "process_label",
        "tty",
    )

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.cwd = ""
        self.env: list[str] = []
        self.user = ""
        self.additional_gids: list[str] = []
        self.caps: list[str] = []
        self.no_new_privs: bool | None = None
        self.apparmor = ""
        self.process_label = ""
        self.tty = False

    def build(self, base: Process) -> dict[str, Any]:
        from handcar.spec.validate import Checker, check_process

        process: dict[str, Any] = dict(_deep_copy(base))
        process.pop("consoleSize", None)
        process["args"] = list(self.args)
        process["terminal"] = self.tty
        if self.cwd:
            process["cwd"] = self.cwd
        if self.env:
            process["env"] = list(process.get("env") or []) + self.env
        user = dict(process.get("user") or {"uid": 0, "gid": 0})
        if self.user:
            uid_text, _, gid_text = self.user.partition(":")
            user["uid"] = _parse_id(uid_text, "uid", self.user)
            if gid_text:
                user["gid"] = _parse_id(gid_text, "gid", self.user)
        for gid in self.additional_gids:
            user.setdefault("additionalGids", [])
            user["additionalGids"] = list(user["additionalGids"]) + [_parse_id(gid, "gid", gid)]
        process["user"] = user
        if self.caps:
            caps = {k: list(v) for k, v in (process.get("capabilities") or {}).items()}
            for cap in self.caps:
                name = cap.upper() if cap.upper().startswith("CAP_") else "CAP_" + cap.upper()
                for key in ("bounding", "effective", "permitted"):
                    caps.setdefault(key, []).append(name)
                # Ambient capabilities need the inheritable bit: only then raise them too.
                if caps.get("inheritable"):
                    caps["inheritable"].append(name)
                    caps.setdefault("ambient", []).append(name)
            process["capabilities"] = caps
        if self.no_new_privs is not None:
            process["noNewPrivileges"] = self.no_new_privs
        if self.apparmor:
            process["apparmorProfile"] = self.apparmor
        if self.process_label:
            process["selinuxLabel"] = self.process_label
        if not self.args:
            raise ExecSetupError("args must not be empty")
        check_process(process, Checker("exec"))
        return process


def _parse_id(text: str, what: str, whole: str) -> int:
    if not text.isdigit():
        raise ExecSetupError(f"parsing {whole} as int for {what} failed")
    return int(text)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# ---- the runtime's side ------------------------------------------------------------------


def exec_process(
    runtime: Runtime, container_id: str, process: ProcessSource, options: ExecOptions
) -> int:
    """Run `process` in the container. Foreground: its exit code (128+signal); detached: 0.

    Raises ExecSetupError (exit 255) when anything fails before the process starts.
    """
    try:
        require_sealed_exe("exec")
        state = runtime.store.load(container_id, lock=False)
    except HandcarError as err:
        raise ExecSetupError(str(err)) from None
    status = state.status()
    if status == "stopped":
        raise ExecSetupError("cannot exec in a stopped container")
    if status == "paused" and not options.ignore_paused:
        raise ExecSetupError("cannot exec in a paused container (use --ignore-paused to override)")
    if not isinstance(process, dict):
        process = process(state.config.get("process") or {})
    terminal = bool(process.get("terminal"))
    has_console = bool(options.console_socket) or options.console_fd >= 0
    if terminal and not has_console:
        raise ExecSetupError(
            "cannot allocate tty if handcar will detach without setting console socket"
        )
    if not terminal and has_console:
        raise ExecSetupError("cannot use console socket if handcar will not detach or allocate tty")
    targets = _cgroup_targets(state.data.get("cgroup_paths") or {}, options.cgroup)
    return _Exec(state, process, options, targets).run()


def _cgroup_targets(paths: dict[str, str], requests: list[str]) -> dict[str, str]:
    """The container's cgroups, or the existing sub-cgroups named by --cgroup.

    Each request is `SUB` (every controller) or `CTRL[,CTRL...]:SUB`, as in runc.
    """
    targets = dict(paths)
    for request in requests:
        controllers_text, colon, sub = request.rpartition(":")
        sub = sub.strip("/")
        if not sub or ".." in sub.split("/"):
            raise ExecSetupError(f"--cgroup {request}: invalid sub-cgroup path")
        controllers = controllers_text.split(",") if colon else list(paths)
        for controller in controllers:
            if controller not in paths:
                raise ExecSetupError(f"--cgroup {request}: controller {controller!r} not present")
            path = paths[controller] + "/" + sub
            if not os.path.isdir(path):
                raise ExecSetupError(f"--cgroup {request}: {path} does not exist")
            targets[controller] = path
    return targets


class _Exec:
    __slots__ = ("state", "process", "options", "targets", "joiner", "pid", "channel", "caller")

    def __init__(
        self,
        state: ContainerState,
        process: dict[str, Any],
        options: ExecOptions,
        targets: dict[str, str],
    ) -> None:
        self.state = state
        self.process = process
        self.options = options
        self.targets = targets
        self.joiner = 0
        self.pid = 0
        self.channel: Channel | None = None
        self.caller = CallerState()

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self.caller.restore()

    def _run(self) -> int:
        if not self.options.detach:
            # Signals that arrive before forwarding is in place wait, blocked, instead of
            # killing handcar with their default action; the process gets the old mask back.
            self.process["__sigmask__"] = self.caller.block(_FORWARDED_SIGNALS)
        try:
            self._start()
        except BaseException as err:
            self._abort()
            if isinstance(err, ExecSetupError):
                raise
            if isinstance(err, HandcarError):
                raise ExecSetupError(str(err)) from None
            if isinstance(err, OSError):
                raise ExecSetupError(err.strerror or str(err)) from None
            raise
        if self.options.pid_file:
            from handcar.runtime.lifecycle import write_pid_file

            write_pid_file(self.options.pid_file, self.pid)
        if self.options.pidfd_socket:
            from handcar.sync import send_pidfd

            send_pidfd(self.options.pidfd_socket, self.pid)
        if self.options.detach:
            return 0
        import _signal

        from handcar.runtime.foreground import wait_for_exit

        self.caller.forward_to(self.pid)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, self.process.pop("__sigmask__"))
        if self.options.attach is not None:
            code: int = self.options.attach.run(self.pid)
            return code
        return wait_for_exit(self.pid)

    def _plan(self, child_channel: Channel) -> ExecPlan:
        state = self.state
        start_time = str(state.data.get("init_start_time", ""))
        plan = ExecPlan(state.id, state.pid, start_time, self.process, child_channel)
        plan.preserve_fds = self.options.preserve_fds
        section = (self.state.config.get("linux") or {}).get("seccomp")
        if section:
            from handcar.seccomp.compile import compile_filter

            plan.seccomp = compile_filter(section)
        if self.options.console_fd >= 0:
            plan.console_fd = os.dup(self.options.console_fd)
        elif self.options.console_socket:
            from handcar.sync import connect_unix

            try:
                plan.console_fd = connect_unix(self.options.console_socket).detach()
            except OSError as err:
                raise ExecSetupError(
                    f"--console-socket {self.options.console_socket}: {err.strerror}"
                ) from None
        return plan

    def _start(self) -> None:
        # Everything the children run is imported now: inside the container, handcar's own
        # files are out of reach.
        import handcar.init.process  # noqa: F401
        import handcar.init.trampoline  # noqa: F401
        import handcar.procfs  # noqa: F401

        if handcar.init.process.uses_security_settings(self.process):
            import handcar.init.security  # noqa: F401
            import handcar.linux.sched  # noqa: F401
        if self.process.get("terminal"):
            import handcar.init.console  # noqa: F401
        if (self.state.config.get("linux") or {}).get("seccomp"):
            import handcar.seccomp.load  # noqa: F401
        self.channel, child_channel = Channel.pair()
        plan = self._plan(child_channel)
        if not self.options.detach:
            # The joiner exits once it has forked: the process is re-parented to us.
            self.caller.become_subreaper()
        pid = os.fork()
        if pid == 0:
            self.channel.close()
            run_joiner(plan)
        self.joiner = pid
        child_channel.close()
        if plan.console_fd >= 0:
            os.close(plan.console_fd)
        if self.targets:
            from handcar.cgroups.manager import from_paths

            from_paths(self.targets).add_pid(pid)
        self.channel.send("cgroup")
        kind, payload = self.channel.recv()
        if kind != "pid":
            raise _channel_error(kind, payload)
        self.pid = int(payload)
        os.waitpid(self.joiner, 0)
        self.joiner = 0
        kind, payload = self.channel.recv()  # EOF: the process has exec'd
        self.channel.close()
        self.channel = None
        if kind != "eof":
            raise _channel_error(kind, payload)

    def _abort(self) -> None:
        if self.channel is not None:
            self.channel.close()
        for pid in (self.joiner, self.pid):
            if not pid:
                continue
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # not ours: a detached exec's process is re-parented to the host's init


def _channel_error(kind: str, payload: str) -> ExecSetupError:
    if kind == "error":
        return ExecSetupError(f"unable to start container process: {payload}")
    return ExecSetupError("unable to start container process: the process died during setup")
