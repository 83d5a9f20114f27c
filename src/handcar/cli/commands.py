"""The CLI's command handlers: turn parsed flags into library calls and print runc's output."""

from __future__ import annotations

import os
import sys

from handcar import jsonio
from handcar.errors import HandcarError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from handcar.cli.main import Invocation
    from handcar.runtime.lifecycle import CreateOptions
    from handcar.spec.types import RuncState


def _out(text: str) -> None:
    sys.stdout.write(text)


def _create_options(inv: Invocation) -> CreateOptions:
    from handcar.runtime.lifecycle import CreateOptions

    options = CreateOptions(inv.flag("bundle") or ".")
    options.pid_file = inv.flag("pid-file", "")
    options.console_socket = inv.flag("console-socket", "")
    options.pidfd_socket = inv.flag("pidfd-socket", "")
    options.no_pivot = bool(inv.flag("no-pivot"))
    options.no_new_keyring = bool(inv.flag("no-new-keyring"))
    options.preserve_fds = inv.flag("preserve-fds", 0)
    return options


def cmd_create(inv: Invocation) -> int:
    inv.runtime().create(inv.args[0], _create_options(inv))
    return 0


def cmd_start(inv: Invocation) -> int:
    inv.runtime().start(inv.args[0])
    return 0


def cmd_state(inv: Invocation) -> int:
    _out(jsonio.dumps(inv.runtime().state(inv.args[0]), "  ") + "\n")
    return 0


def cmd_kill(inv: Invocation) -> int:
    from handcar.signals import parse_signal

    if len(inv.args) > 2:
        raise UsageError('"kill" requires a maximum of 2 argument(s)')
    signum = parse_signal(inv.args[1] if len(inv.args) > 1 else "SIGTERM")
    inv.runtime().kill(inv.args[0], signum, bool(inv.flag("all")))
    return 0


def cmd_delete(inv: Invocation) -> int:
    inv.runtime().delete(inv.args[0], bool(inv.flag("force")))
    return 0


def _owner_name(path: str) -> str:
    import pwd

    try:
        uid = os.stat(path).st_uid
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return "#" + str(os.getuid())


def cmd_list(inv: Invocation) -> int:
    runtime = inv.runtime()
    states = runtime.list()
    for item in states:
        item["owner"] = _owner_name(runtime.store.root + "/" + item["id"])
    if inv.flag("quiet"):
        _out("".join(s["id"] + "\n" for s in states))
        return 0
    fmt = inv.flag("format", "table")
    if fmt == "json":
        _out((jsonio.dumps(states) if states else "null") + "\n")
        return 0
    if fmt != "table":
        raise UsageError(f"invalid format option: {fmt}")
    _out(_table(states))
    return 0


def _table(states: list[RuncState]) -> str:
    """runc's tabwriter layout: every column but the last at least 12 wide, padded by 3."""
    header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rows = [header] + [
        [s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]] for s in states
    ]
    widths = [max(12, max(len(r[c]) for r in rows) + 3) for c in range(5)]
    return "".join(
        "".join(cell.ljust(widths[c]) for c, cell in enumerate(row[:5])) + row[5] + "\n"
        for row in rows
    )


def cmd_spec(inv: Invocation) -> int:
    bundle = inv.flag("bundle") or "."
    path = os.path.join(bundle, "config.json")
    if not os.path.isdir(bundle):
        raise HandcarError(f"chdir {bundle}: no such file or directory")
    if os.path.exists(path):
        raise HandcarError("File config.json exists. Remove it first")
    text = jsonio.dumps(inv.runtime().default_spec(bool(inv.flag("rootless"))), "\t")
    with open(path, "w") as f:
        f.write(text)
    return 0


def cmd_run(inv: Invocation) -> int:
    options = _create_options(inv)
    options.subreaper = not inv.flag("no-subreaper")
    detach, keep = bool(inv.flag("detach")), bool(inv.flag("keep"))
    return int(inv.runtime().run(inv.args[0], options, detach, keep))


def cmd_exec(inv: Invocation) -> int:
    from handcar.errors import ExecSetupError
    from handcar.runtime.exec import ExecOptions, ProcessArgs, load_process_file

    options = ExecOptions()
    options.console_socket = inv.flag("console-socket", "")
    options.pidfd_socket = inv.flag("pidfd-socket", "")
    options.detach = bool(inv.flag("detach"))
    options.pid_file = inv.flag("pid-file", "")
    options.preserve_fds = inv.flag("preserve-fds", 0)
    options.cgroup = inv.flag("cgroup", [])
    options.ignore_paused = bool(inv.flag("ignore-paused"))
    attach = None
    try:
        if inv.flag("process"):
            process: Any = load_process_file(inv.flag("process"))
        else:
            spec = ProcessArgs(inv.args[1:])
            spec.cwd = inv.flag("cwd", "")
            spec.env = inv.flag("env", [])
            spec.user = inv.flag("user", "")
            spec.additional_gids = inv.flag("additional-gids", [])
            spec.caps = inv.flag("cap", [])
            if "no-new-privs" in inv.flags:
                spec.no_new_privs = bool(inv.flag("no-new-privs"))
            spec.apparmor = inv.flag("apparmor", "")
            spec.process_label = inv.flag("process-label", "")
            spec.tty = bool(inv.flag("tty"))
            process = spec.build
        wants_tty = bool(inv.flag("tty")) if not inv.flag("process") else None
        if wants_tty is None:
            wants_tty = bool(process.get("terminal"))
        if wants_tty and not options.console_socket and not options.detach:
            from handcar.runtime.terminal import TerminalAttach

            attach = TerminalAttach()
            options.console_fd = attach.peer_fd
        options.attach = attach
        return inv.runtime().exec(inv.args[0], process, options)
    except ExecSetupError as err:
        raise ExecSetupError(f"exec failed: {err}") from None
    except HandcarError as err:
        raise ExecSetupError(f"exec failed: {err}") from None
    finally:
        if attach is not None:
            attach.close()


def cmd_features(inv: Invocation) -> int:
    _out(jsonio.dumps(inv.runtime().features(), "    ") + "\n")
    return 0


def cmd_checkpoint(inv: Invocation) -> int:
    from handcar.runtime.checkpoint import checkpoint

    checkpoint(inv.runtime(), inv.args[0])
    return 0


def cmd_restore(inv: Invocation) -> int:
    from handcar.runtime.checkpoint import restore

    restore(inv.runtime(), inv.args[0])
    return 0
