"""The cgroup commands of the CLI: pause, resume, update, ps and events, as runc has them.

Each handler loads the container's state, reopens its cgroup manager from the saved paths
and calls the cgroup library (handcar.cgroups). Errors use runc's wording:
"container does not exist", "container not running", "container not paused".
Only `os` and `sys` load with this module; the rest is imported by the command that uses it.
"""

from __future__ import annotations

import os
import sys

from handcar import jsonio
from handcar.errors import ContainerNotRunning, HandcarError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from handcar.cgroups.types import CgroupManager, OomEvents
    from handcar.cli.main import Invocation
    from handcar.runtime.state import ContainerState
    from handcar.spec.types import LinuxResources


def _load(inv: Invocation, lock: bool = True) -> ContainerState:
    state: ContainerState = inv.runtime().store.load(inv.args[0], lock=lock)
    if "config" not in state.data:
        # A create killed before its first save: nothing but `delete --force` applies.
        state.unlock()
        raise ContainerNotRunning()
    return state


def _manager(state: ContainerState) -> CgroupManager:
    from handcar.cgroups import from_paths

    paths: dict[str, str] = state.data.get("cgroup_paths") or {}
    if not paths:
        raise HandcarError(f"container {state.id} has no cgroups")
    return from_paths(paths, state.data.get("cgroup_created"))


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _one_arg(inv: Invocation) -> None:
    if len(inv.args) != 1:
        assert inv.command is not None
        raise UsageError(f'handcar: "{inv.command.name}" requires exactly 1 argument(s)')


# --- pause and resume -------------------------------------------------------------------


def cmd_pause(inv: Invocation) -> int:
    """Freeze every process of a running (or created) container, as runc pause does."""
    state = _load(inv)
    try:
        if state.status() not in ("running", "created"):
            raise ContainerNotRunning()
        _manager(state).freeze()
    finally:
        state.unlock()
    return 0


def cmd_resume(inv: Invocation) -> int:
    """Thaw a paused container."""
    state = _load(inv)
    try:
        if state.status() != "paused":
            raise HandcarError("container not paused")
        _manager(state).thaw()
    finally:
        state.unlock()
    return 0


# --- update -----------------------------------------------------------------------------


def _read_resources(source: str) -> LinuxResources:
    from handcar.cgroups import validate_resources

    if source == "-":
        raw = sys.stdin.buffer.read()
    else:
        try:
            with open(source, "rb") as f:
                raw = f.read()
        except OSError as err:
            raise HandcarError(f"open {source}: {(err.strerror or str(err)).lower()}") from None
    value = jsonio.loads(raw, "--resources")
    if value is None:
        return {}
    resources = validate_resources(value, "--resources")
    # runc update never reprograms the device policy: it keeps the one made at create.
    resources.pop("devices", None)
    return resources


def update_resources(inv: Invocation) -> LinuxResources:
    """The partial linux.resources an `update` command line asks for, validated."""
    source = inv.flag("resources")
    if source:
        resources = _read_resources(str(source))
    else:
        from handcar.cgroups import resources_from_update_flags

        flags = {k: str(v) for k, v in inv.flags.items() if k not in ("resources", "help")}
        resources = resources_from_update_flags(flags)
    memory = resources.get("memory")
    if isinstance(memory, dict) and memory.get("limit") == -1 and memory.get("swap") is None:
        # As runc: an unlimited memory limit lifts memory+swap too (the kernel wants
        # memory <= memory+swap at every step).
        memory["swap"] = -1
    return resources


def merge_resources(current: Mapping[str, Any], update: Mapping[str, Any]) -> LinuxResources:
    """`update` folded into the stored linux.resources: objects are merged key by key,
    hugepage limits by page size, anything else replaced. Both are checked resources, and
    so is what this returns."""
    merged: Any = dict(current)
    for key, value in update.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merged[key] = {**old, **value}
        elif key == "hugepageLimits" and isinstance(old, list):
            sizes = {item.get("pageSize") for item in value}
            merged[key] = [x for x in old if x.get("pageSize") not in sizes] + list(value)
        else:
            merged[key] = value
    result: LinuxResources = merged
    return result


def cmd_update(inv: Invocation) -> int:
    """Change a container's limits: validate, write the cgroup files, then save the config."""
    _one_arg(inv)
    resources = update_resources(inv)  # every value is checked before the container is touched
    state = _load(inv)
    try:
        if state.status() == "stopped":
            raise ContainerNotRunning()
        if not resources:
            return 0
        _manager(state).apply(resources, devices=False)
        config = state.data["config"]
        linux = config.setdefault("linux", {})
        linux["resources"] = merge_resources(linux.get("resources") or {}, resources)
        state.save()
    finally:
        state.unlock()
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
    state = _load(inv, lock=False)
    fmt = inv.flag("format") or "table"
    if fmt not in ("table", "json"):
        raise HandcarError("invalid format option")
    pids = _manager(state).pids() if state.data.get("cgroup_paths") else []
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


def _event(kind: str, container_id: str, data: object = None) -> str:
    event: dict[str, Any] = {"type": kind, "id": container_id}
    if data is not None:
        event["data"] = data
    return jsonio.dumps(event) + "\n"


def cmd_events(inv: Invocation) -> int:
    """`--stats`: one stats event. Otherwise a stats event every --interval, and an oom
    event whenever the kernel reports one, until the container stops."""
    interval = parse_duration(str(inv.flag("interval") or "5s"))
    if interval <= 0:
        raise HandcarError("duration interval must be greater than 0")
    state = _load(inv, lock=False)
    if state.status() == "stopped":
        raise HandcarError(f"container with id {state.id} is not running")
    manager = _manager(state)
    if inv.flag("stats"):
        _write(_event("stats", state.id, manager.stats()))
        return 0
    _stream(state, manager, interval)
    return 0


def _open_pidfd(state: ContainerState) -> int:
    try:
        pidfd = os.pidfd_open(state.pid)
    except (ProcessLookupError, ValueError):
        return -1
    if not state.is_alive():  # the pid was recycled between the status check and here
        os.close(pidfd)
        return -1
    return pidfd


def _stream(state: ContainerState, manager: CgroupManager, interval: float) -> None:
    import select
    import time

    from handcar.cgroups import CgroupError

    try:
        watcher: OomEvents | None = manager.oom_events()
    except (CgroupError, OSError):
        watcher = None  # no memory controller: stats only
    pidfd = _open_pidfd(state)
    poller = select.poll()
    if watcher is not None:
        from handcar.cgroups.oom import V1OomWatcher

        mask = select.POLLIN if isinstance(watcher, V1OomWatcher) else select.POLLPRI
        poller.register(watcher.fileno(), mask)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    next_stats = time.monotonic() + interval
    stopped = pidfd < 0
    try:
        while not stopped:
            timeout = max(0.0, next_stats - time.monotonic())
            for fd, _ in poller.poll(int(timeout * 1000) + 1):
                if fd == pidfd:
                    stopped = True
            if watcher is not None:
                _emit_ooms(state.id, watcher)
                if watcher.gone:
                    break
            if not stopped and time.monotonic() >= next_stats:
                next_stats += interval
                try:
                    _write(_event("stats", state.id, manager.stats()))
                except (CgroupError, OSError) as err:
                    from handcar import log

                    log.log("error", str(err))
    except BrokenPipeError:
        pass
    finally:
        if watcher is not None:
            watcher.close()
        if pidfd >= 0:
            os.close(pidfd)


def _emit_ooms(container_id: str, watcher: OomEvents) -> None:
    count = watcher.wait(0)
    for _ in range(count):
        _write(_event("oom", container_id))
