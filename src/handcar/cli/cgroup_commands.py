"""The cgroup commands of the CLI: pause, resume, update, ps and events, as runc has them.

Each handler turns flags into a `Runtime` call (handcar.runtime.container) and prints runc's
output. Only `os` and `sys` load with this module; the rest is imported by the command that
uses it.
"""

from __future__ import annotations

import sys

from handcar import jsonio
from handcar.errors import HandcarError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.cli.main import Invocation
    from handcar.spec.types import LinuxResources


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _one_arg(inv: Invocation) -> None:
    if len(inv.args) != 1:
        assert inv.command is not None
        raise UsageError(f'handcar: "{inv.command.name}" requires exactly 1 argument(s)')


def cmd_pause(inv: Invocation) -> int:
    inv.runtime().pause(inv.args[0])
    return 0


def cmd_resume(inv: Invocation) -> int:
    inv.runtime().resume(inv.args[0])
    return 0


def _read_source(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as f:
            return f.read()
    except OSError as err:
        raise HandcarError(f"open {source}: {(err.strerror or str(err)).lower()}") from None


def update_resources(inv: Invocation) -> LinuxResources:
    """The partial linux.resources an `update` command line asks for, validated."""
    from handcar.runtime import resources

    source = inv.flag("resources")
    if source:
        return resources.parse_resources(_read_source(str(source)), "--resources")
    flags = {k: str(v) for k, v in inv.flags.items() if k not in ("resources", "help")}
    return resources.resources_from_flags(flags)


def cmd_update(inv: Invocation) -> int:
    """Every value is checked before the container is touched."""
    _one_arg(inv)
    inv.runtime().update(inv.args[0], update_resources(inv))
    return 0


# --- ps ---------------------------------------------------------------------------------


def pid_column(header: str) -> int:
    """The index of the PID column in ps's header line."""
    fields = header.split()
    if "PID" not in fields:
        raise HandcarError("couldn't find PID field in ps output")
    return fields.index("PID")


def filter_ps(output: str, pids: list[int]) -> str:
    """ps's header and the lines whose PID column is one of `pids`, as runc prints them."""
    lines = output.split("\n")
    index = pid_column(lines[0])
    wanted = set(pids)
    kept = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        try:
            pid = int(fields[index])
        except (IndexError, ValueError):
            raise HandcarError(f"unable to parse pid: {line.strip()}") from None
        if pid in wanted:
            kept.append(line)
    return "\n".join(kept) + "\n"


def cmd_ps(inv: Invocation) -> int:
    """List the container's processes: host pids as JSON, or `ps` output filtered to them."""
    fmt = inv.flag("format") or "table"
    pids = inv.runtime().ps(inv.args[0])
    if fmt not in ("table", "json"):
        raise HandcarError("invalid format option")
    if fmt == "json":
        _write(jsonio.dumps(pids) + "\n")
        return 0
    import subprocess

    args = inv.args[1:] or ["-ef"]
    try:
        proc = subprocess.run(
            ["ps", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
        )
    except OSError as err:
        raise HandcarError(f"exec: ps: {(err.strerror or str(err)).lower()}") from None
    output = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise HandcarError(f"exit status {proc.returncode}: {output.strip()}")
    _write(filter_ps(output, pids))
    return 0


# --- events -----------------------------------------------------------------------------

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (`5s`, `250ms`, `1m30s`, `1.5s`); a bare `0` is allowed."""
    rest = text.strip()
    sign = -1.0 if rest.startswith("-") else 1.0
    rest = rest.lstrip("+-")
    if rest == "0":
        return 0.0
    total = 0.0
    if not rest:
        raise UsageError(f'invalid value "{text}" for flag -interval: parse error')
    while rest:
        number = ""
        while rest and (rest[0].isdigit() or rest[0] == "."):
            number, rest = number + rest[0], rest[1:]
        unit = ""
        while rest and not (rest[0].isdigit() or rest[0] == "."):
            unit, rest = unit + rest[0], rest[1:]
        if not number or number == "." or number.count(".") > 1 or unit not in _DURATION_UNITS:
            raise UsageError(f'invalid value "{text}" for flag -interval: parse error')
        total += float(number) * _DURATION_UNITS[unit]
    return sign * total


def cmd_events(inv: Invocation) -> int:
    """`--stats`: one stats event. Otherwise a stats event every --interval, and an oom
    event whenever the kernel reports one, until the container stops."""
    from handcar.runtime.resources import event

    interval = parse_duration(str(inv.flag("interval") or "5s"))
    if interval <= 0:
        raise HandcarError("duration interval must be greater than 0")
    runtime = inv.runtime()
    container_id = inv.args[0]
    if inv.flag("stats"):
        _write(jsonio.dumps(event("stats", container_id, runtime.stats(container_id))) + "\n")
        return 0
    stream = runtime.events(container_id, interval)
    try:
        for item in stream:
            _write(jsonio.dumps(item) + "\n")
    except BrokenPipeError:
        pass
    finally:
        stream.close()
    return 0
