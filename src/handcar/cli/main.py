"""handcar's command line: runc's flags, output and exit codes, over the library API.

The parser is hand-written: argparse alone costs more than a whole `state` call should. Each
command's handler imports only what that command needs.
"""

from __future__ import annotations

import os
import sys

from handcar import log
from handcar.errors import HandcarError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from handcar.runtime.container import Runtime

    Handler = Callable[["Invocation"], int]

# flag name -> (short alias, kind, help); kind is "bool", "value", "int" or "list"
FlagTable = dict[str, tuple[str, str, str]]

GLOBAL_FLAGS: FlagTable = {
    "debug": ("", "bool", "enable debug logging"),
    "log": ("", "value", "set the log file to write handcar logs to (default is '/dev/stderr')"),
    "log-format": ("", "value", "set the log format ('text' (default), or 'json')"),
    "root": ("", "value", "root directory for storage of container state (default: /run/handcar)"),
    "criu": ("", "value", "path to the criu binary used for checkpoint and restore"),
    "systemd-cgroup": ("", "bool", "enable systemd cgroup support (slice:prefix:name paths)"),
    "rootless": ("", "value", "ignore cgroup permission errors ('true', 'false', or 'auto')"),
    "cgroup-manager": ("", "value", "crun's spelling: cgroupfs, systemd or disabled"),
    "help": ("h", "bool", "show help"),
    "version": ("v", "bool", "print the version"),
}

CREATE_FLAGS: FlagTable = {
    "bundle": (
        "b",
        "value",
        "path to the root of the bundle directory, defaults to the current directory",
    ),
    "console-socket": (
        "",
        "value",
        "path to an AF_UNIX socket which will receive a file descriptor referencing the master end of the console's pseudoterminal",
    ),
    "pidfd-socket": (
        "",
        "value",
        "path to an AF_UNIX socket which will receive a pidfd of the container process",
    ),
    "pid-file": ("", "value", "specify the file to write the process id to"),
    "no-pivot": ("", "bool", "do not use pivot root to jail process inside rootfs"),
    "no-new-keyring": ("", "bool", "do not create a new session keyring for the container"),
    "preserve-fds": (
        "",
        "int",
        "pass N additional file descriptors to the container (stdio + $LISTEN_FDS + N in total)",
    ),
}
RUN_FLAGS: FlagTable = {
    **CREATE_FLAGS,
    "detach": ("d", "bool", "detach from the container's process"),
    "keep": ("", "bool", "do not delete the container after it exits"),
    "no-subreaper": (
        "",
        "bool",
        "disable the use of the subreaper used to reap reparented processes",
    ),
}

EXEC_FLAGS: FlagTable = {
    "console-socket": (
        "",
        "value",
        "path to an AF_UNIX socket which will receive a file descriptor referencing the master end of the console's pseudoterminal",
    ),
    "pidfd-socket": (
        "",
        "value",
        "path to an AF_UNIX socket which will receive a pidfd of the exec'd process",
    ),
    "cwd": ("", "value", "current working directory in the container"),
    "env": ("e", "list", "set environment variables"),
    "tty": ("t", "bool", "allocate a pseudo-TTY"),
    "user": ("u", "value", "UID (format: <uid>[:<gid>])"),
    "additional-gids": ("g", "list", "additional gids"),
    "process": ("p", "value", "path to the process.json"),
    "detach": ("d", "bool", "detach from the container's process"),
    "pid-file": ("", "value", "specify the file to write the process id to"),
    "process-label": (
        "",
        "value",
        "set the asm process label for the process commonly used with selinux",
    ),
    "apparmor": ("", "value", "set the apparmor profile for the process"),
    "no-new-privs": ("", "bool", "set the no new privileges value for the process"),
    "cap": ("c", "list", "add a capability to the bounding set for the process"),
    "preserve-fds": (
        "",
        "int",
        "pass N additional file descriptors to the container (stdio + $LISTEN_FDS + N in total)",
    ),
    "cgroup": (
        "",
        "list",
        "run the process in an (existing) sub-cgroup(s). Format is [<controller>:]<cgroup>.",
    ),
    "ignore-paused": ("", "bool", "allow exec in a paused container"),
}
# CRIU cannot run on this kernel (see handcar.checkpoint): the flags are accepted so that the
# error names the real reason instead of "flag provided but not defined".
_CRIU_COMMON: FlagTable = {
    "image-path": ("", "value", "path for saving criu image files"),
    "work-path": ("", "value", "path for saving work files and logs"),
    "tcp-established": ("", "bool", "allow open tcp connections"),
    "ext-unix-sk": ("", "bool", "allow external unix sockets"),
    "shell-job": ("", "bool", "allow shell jobs"),
    "file-locks": ("", "bool", "handle file locks, for safety"),
    "manage-cgroups-mode": ("", "value", "cgroups mode: soft|full|strict|ignore"),
    "empty-ns": ("", "list", "create a namespace, but don't restore its properties"),
    "auto-dedup": ("", "bool", "enable auto deduplication of memory images"),
    "lazy-pages": ("", "bool", "use userfaultfd to lazily restore memory pages"),
}
CHECKPOINT_FLAGS: FlagTable = {
    **_CRIU_COMMON,
    "parent-path": ("", "value", "path for previous criu image files in pre-dump"),
    "leave-running": ("", "bool", "leave the process running after checkpointing"),
    "page-server": ("", "value", "ADDRESS:PORT of the page server"),
    "status-fd": ("", "value", "criu writes \\0 to this FD once lazy-pages is ready"),
    "pre-dump": (
        "",
        "bool",
        "dump container's memory information only, leave the container running after this",
    ),
}
RESTORE_FLAGS: FlagTable = {
    **_CRIU_COMMON,
    "bundle": ("b", "value", "path to the root of the bundle directory"),
    "console-socket": (
        "",
        "value",
        "path to an AF_UNIX socket which will receive the console's master fd",
    ),
    "detach": ("d", "bool", "detach from the container's process"),
    "pid-file": ("", "value", "specify the file to write the process id to"),
    "no-subreaper": (
        "",
        "bool",
        "disable the use of the subreaper used to reap reparented processes",
    ),
    "no-pivot": ("", "bool", "do not use pivot root to jail process inside rootfs"),
    "lsm-profile": ("", "value", "Specify an LSM profile to be used during restore"),
    "lsm-mount-context": ("", "value", "Specify an LSM mount context to be used during restore"),
}


class Command:
    __slots__ = ("name", "summary", "usage", "flags", "nargs", "handler")

    def __init__(
        self, name: str, summary: str, usage: str, flags: FlagTable, nargs: str, handler: str
    ) -> None:
        self.name = name
        self.summary = summary
        self.usage = usage
        self.flags = flags
        self.nargs = nargs  # "0", "1", "1+" (id then more), "0-1"
        self.handler = handler


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("create", "create a container", "<container-id>", CREATE_FLAGS, "1", "cmd_create"),
        Command(
            "start",
            "executes the user defined process in a created container",
            "<container-id>",
            {},
            "1",
            "cmd_start",
        ),
        Command("run", "create and run a container", "<container-id>", RUN_FLAGS, "1", "cmd_run"),
        Command("state", "output the state of a container", "<container-id>", {}, "1", "cmd_state"),
        Command(
            "list",
            "lists containers started by handcar with the given root",
            "",
            {
                "format": ("f", "value", "select one of: table or json (default: table)"),
                "quiet": ("q", "bool", "display only container IDs"),
            },
            "0",
            "cmd_list",
        ),
        Command(
            "kill",
            "kill sends the specified signal (default: SIGTERM) to the container's init process",
            "<container-id> [signal]",
            {
                "all": (
                    "a",
                    "bool",
                    "send the specified signal to all processes inside the container",
                )
            },
            "1+",
            "cmd_kill",
        ),
        Command(
            "delete",
            "delete any resources held by the container often used with detached container",
            "<container-id>",
            {
                "force": (
                    "f",
                    "bool",
                    "forcibly deletes the container if it is still running (uses SIGKILL)",
                )
            },
            "1",
            "cmd_delete",
        ),
        Command(
            "spec",
            "create a new specification file",
            "",
            {
                "bundle": ("b", "value", "path to the root of the bundle directory"),
                "rootless": ("", "bool", "generate a configuration for a rootless container"),
            },
            "0",
            "cmd_spec",
        ),
        Command(
            "exec",
            "execute new process inside the container",
            "<container-id> <command> [command options]  ||  -p process.json <container-id>",
            EXEC_FLAGS,
            "1+",
            "cmd_exec",
        ),
        Command("features", "show the enabled features", "", {}, "0", "cmd_features"),
        Command(
            "checkpoint",
            "checkpoint a running container (CRIU: unavailable on this host, see the error)",
            "<container-id>",
            CHECKPOINT_FLAGS,
            "1",
            "cmd_checkpoint",
        ),
        Command(
            "restore",
            "restore a container from a previous checkpoint (CRIU: unavailable on this host)",
            "<container-id>",
            RESTORE_FLAGS,
            "1",
            "cmd_restore",
        ),
        Command(
            "pause",
            "pause suspends all processes inside the container",
            "<container-id>",
            {},
            "1",
            "cgroup_commands:cmd_pause",
        ),
        Command(
            "resume",
            "resumes all processes that have been previously paused",
            "<container-id>",
            {},
            "1",
            "cgroup_commands:cmd_resume",
        ),
        Command(
            "update",
            "update container resource constraints",
            "<container-id>",
            {
                "resources": (
                    "r",
                    "value",
                    "path to a file containing the resources to update or '-' to read from the standard input",
                ),
                "blkio-weight": (
                    "",
                    "value",
                    "specifies per cgroup weight, range is from 10 to 1000",
                ),
                "cpu-period": (
                    "",
                    "value",
                    "CPU CFS period to be used for hardcapping (in usecs). 0 to use system default",
                ),
                "cpu-quota": (
                    "",
                    "value",
                    "CPU CFS hardcap limit (in usecs). Allowed cpu time in a given period",
                ),
                "cpu-share": ("", "value", "CPU shares (relative weight vs. other containers)"),
                "cpu-rt-period": (
                    "",
                    "value",
                    "CPU realtime period to be used for hardcapping (in usecs). 0 to use system default",
                ),
                "cpu-rt-runtime": (
                    "",
                    "value",
                    "CPU realtime hardcap limit (in usecs). Allowed cpu time in a given period",
                ),
                "cpuset-cpus": ("", "value", "CPU(s) to use"),
                "cpuset-mems": ("", "value", "Memory node(s) to use"),
                "kernel-memory": ("", "value", "(obsoleted; do not use)"),
                "kernel-memory-tcp": ("", "value", "(obsoleted; do not use)"),
                "memory": ("", "value", "Memory limit (in bytes)"),
                "memory-reservation": ("", "value", "Memory reservation or soft_limit (in bytes)"),
                "memory-swap": (
                    "",
                    "value",
                    "Total memory usage (memory + swap); set '-1' to enable unlimited swap",
                ),
                "pids-limit": ("", "value", "Maximum number of pids allowed in the container"),
                "l3-cache-schema": ("", "value", "The string of Intel RDT/CAT L3 cache schema"),
                "mem-bw-schema": (
                    "",
                    "value",
                    "The string of Intel RDT/MBA memory bandwidth schema",
                ),
            },
            "1",
            "cgroup_commands:cmd_update",
        ),
        Command(
            "ps",
            "ps displays the processes running inside a container",
            "<container-id> [ps options]",
            {"format": ("f", "value", "select one of: table or json (default: table)")},
            "1+",
            "cgroup_commands:cmd_ps",
        ),
        Command(
            "events",
            "display container events such as OOM notifications, cpu, memory, and IO usage statistics",
            "<container-id>",
            {
                "interval": ("", "value", "set the stats collection interval (default: 5s)"),
                "stats": ("", "bool", "display the container's stats then exit"),
            },
            "1",
            "cgroup_commands:cmd_events",
        ),
    )
}


class Invocation:
    """A parsed command line: global options, the command, its flags and positionals."""

    __slots__ = ("globals", "command", "flags", "args")

    def __init__(self) -> None:
        self.globals: dict[str, Any] = {}
        self.command: Command | None = None
        self.flags: dict[str, Any] = {}
        self.args: list[str] = []

    def flag(self, name: str, default: Any = None) -> Any:
        return self.flags.get(name, default)

    def runtime(self) -> Runtime:
        from handcar.runtime.container import DEFAULT_ROOT, Runtime

        rootless = self.globals.get("rootless", "auto")
        if rootless not in ("true", "false", "auto"):
            raise UsageError(
                f"--rootless: invalid value {rootless!r} (expected true, false or auto)"
            )
        root = self.globals.get("root")
        if not root:
            root = DEFAULT_ROOT
            xdg = os.environ.get("XDG_RUNTIME_DIR")
            if os.geteuid() != 0 and xdg:
                root = xdg + "/handcar"  # runc's $XDG_RUNTIME_DIR/runc for a non-root caller
        return Runtime(
            root,
            systemd_cgroup=bool(self.globals.get("systemd-cgroup"))
            or self.globals.get("cgroup-manager") == "systemd",
            rootless=rootless == "true" or (rootless == "auto" and os.geteuid() != 0),
        )


def _lookup(table: FlagTable, name: str) -> str | None:
    if name in table:
        return name
    for long_name, (short, _, _) in table.items():
        if short and short == name:
            return long_name
    return None


def _take_flag(table: FlagTable, argv: list[str], i: int, into: dict[str, Any]) -> int:
    """Parse the flag at argv[i] (Go style: -x, --x, --x=v, --x v); return the next index."""
    arg = argv[i]
    body = arg.lstrip("-")
    name, eq, inline = body.partition("=")
    long_name = _lookup(table, name)
    if long_name is None:
        raise UsageError(f"flag provided but not defined: -{name}")
    kind = table[long_name][1]
    if kind == "bool":
        into[long_name] = inline.lower() not in ("false", "0") if eq else True
        return i + 1
    if eq:
        value = inline
    elif i + 1 < len(argv):
        value = argv[i + 1]
        i += 1
    else:
        raise UsageError(f"flag needs an argument: -{name}")
    if kind == "int":
        if not value.isdigit():
            raise UsageError(f'invalid value "{value}" for flag -{name}: parse error')
        into[long_name] = int(value)
    elif kind == "list":
        into.setdefault(long_name, []).append(value)
    else:
        into[long_name] = value
    return i + 1


def parse(argv: list[str]) -> Invocation:
    inv = Invocation()
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        i = _take_flag(GLOBAL_FLAGS, argv, i, inv.globals)
    if i == len(argv):
        return inv
    name = argv[i]
    command = COMMANDS.get(name)
    if command is None:
        raise UsageError(f"No help topic for '{name}'")
    inv.command = command
    i += 1
    # runc takes flags after the id too; everything after "--", and for `exec` everything
    # after the command's first word, is positional.
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            inv.args.extend(argv[i + 1 :])
            break
        if arg.startswith("-") and arg != "-" and not _positional_locked(inv):
            if arg in ("-h", "--help", "-help"):
                inv.flags["help"] = True
                i += 1
                continue
            i = _take_flag(command.flags, argv, i, inv.flags)
        else:
            inv.args.append(arg)
            i += 1
    return inv


def _positional_locked(inv: Invocation) -> bool:
    """After `exec ID CMD` or `ps ID`, the rest belongs to the command, flags included."""
    assert inv.command is not None
    return inv.command.name in ("exec", "ps") and len(inv.args) >= (
        2 if inv.command.name == "exec" else 1
    )


def _check_arity(command: Command, args: list[str]) -> None:
    count = len(args)
    ok = {
        "0": count == 0,
        "1": count == 1,
        "1+": count >= 1,
        "0-1": count <= 1,
    }[command.nargs]
    if not ok:
        if command.nargs == "0":
            raise UsageError(f'handcar: "{command.name}" requires exactly 0 argument(s)')
        if command.nargs == "1":
            raise UsageError(f'handcar: "{command.name}" requires exactly 1 argument(s)')
        raise UsageError(f'handcar: "{command.name}" requires a minimum of 1 argument(s)')


# ---- help and version ------------------------------------------------------------------------


def _flag_help(table: FlagTable) -> str:
    lines = []
    for name, (short, kind, text) in table.items():
        shown = f"--{name}" + ("" if kind == "bool" else " value")
        if short:
            shown += f", -{short}" + ("" if kind == "bool" else " value")
        lines.append(f"   {shown:<28} {text}")
    return "\n".join(lines)


def main_help() -> str:
    commands = "\n".join(f"   {c.name:<12} {c.summary}" for c in COMMANDS.values())
    return (
        "NAME:\n   handcar - an OCI container runtime in Python, a drop-in for runc\n\n"
        "USAGE:\n   handcar [global options] command [command options] [arguments...]\n\n"
        f"COMMANDS:\n{commands}\n\nGLOBAL OPTIONS:\n{_flag_help(GLOBAL_FLAGS)}\n"
    )


def command_help(command: Command) -> str:
    text = (
        f"NAME:\n   handcar {command.name} - {command.summary}\n\n"
        f"USAGE:\n   handcar {command.name} [command options] {command.usage}\n"
    )
    if command.flags:
        text += f"\nOPTIONS:\n{_flag_help(command.flags)}\n"
    return text


def version_text() -> str:
    from handcar import OCI_VERSION, __version__

    commit = "unknown"
    try:
        with open(os.path.dirname(__file__) + "/COMMIT", "rb") as f:
            commit = f.read().decode().strip() or commit
    except OSError:
        pass
    return f"handcar version {__version__}\ncommit: {commit}\nspec: {OCI_VERSION}\n"


# ---- entry point -----------------------------------------------------------------------------


def run(argv: list[str], inv: Invocation) -> int:
    log.configure(
        inv.globals.get("log"),
        inv.globals.get("log-format", "text"),
        bool(inv.globals.get("debug")),
    )
    if inv.globals.get("log-format", "text") not in ("text", "json"):
        raise UsageError(f"invalid log-format: {inv.globals['log-format']}")
    if inv.globals.get("version"):
        sys.stdout.write(version_text())
        return 0
    if inv.command is None:
        sys.stdout.write(main_help())
        return 0 if inv.globals.get("help") or not argv else 1
    if inv.flags.get("help"):
        sys.stdout.write(command_help(inv.command))
        return 0
    _check_arity(inv.command, inv.args)
    return _handler(inv.command.handler)(inv)


def _handler(name: str) -> Handler:
    """ "cmd_x" lives in handcar.cli.commands; "module:cmd_x" in handcar.cli.module."""
    module_name, _, function = name.rpartition(":")
    module = __import__("handcar.cli." + (module_name or "commands"), fromlist=[function])
    handler: Handler = getattr(module, function)
    return handler


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    code = 1
    inv = Invocation()
    try:
        inv = parse(args)
        code = run(args, inv)
    except HandcarError as err:
        code = err.exit_code
        log.fatal(_prefixed(inv, str(err)))
    except KeyboardInterrupt:
        code = 130
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if "--debug" in args:
            import traceback

            traceback.print_exc()
        log.fatal(_prefixed(inv, f"{type(err).__name__}: {err}"))
    try:
        sys.stdout.flush()
    except OSError:
        pass
    os._exit(code)


def _prefixed(inv: Invocation, message: str) -> str:
    """runc prefixes create and run failures with "runc <cmd> failed: "."""
    if inv.command is not None and inv.command.name in ("create", "run"):
        return f"handcar {inv.command.name} failed: {message}"
    return message
