"""A running container's cgroups: pause, resume, update, its processes, stats and events.

Each call loads the container's state and reopens its cgroup manager from the saved paths.
Errors use runc's wording: "container not running", "container not paused".
Only `os` loads with this module; the cgroup library is imported by the call that uses it.
"""

from __future__ import annotations

import os

from handcar.errors import ContainerNotRunning, HandcarError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Generator, Mapping
    from typing import Any

    from handcar.cgroups.types import CgroupManager
    from handcar.runtime.state import ContainerState, StateStore
    from handcar.spec.types import LinuxResources


def load(store: StateStore, container_id: str, lock: bool = True) -> ContainerState:
    """The container's state; a create killed before its first save counts as not running."""
    state = store.load(container_id, lock=lock)
    if "config" not in state.data:
        state.unlock()
        raise ContainerNotRunning()
    return state


def manager_of(state: ContainerState) -> CgroupManager:
    from handcar.cgroups.manager import from_paths

    paths: dict[str, str] = state.data.get("cgroup_paths") or {}
    if not paths:
        raise HandcarError(f"container {state.id} has no cgroups")
    return from_paths(paths, state.data.get("cgroup_created"))


def pause(store: StateStore, container_id: str) -> None:
    """Freeze every process of a running (or created) container, as runc pause does."""
    state = load(store, container_id)
    try:
        if state.status() not in ("running", "created"):
            raise ContainerNotRunning()
        manager_of(state).freeze()
    finally:
        state.unlock()


def resume(store: StateStore, container_id: str) -> None:
    """Thaw a paused container."""
    state = load(store, container_id)
    try:
        if state.status() != "paused":
            raise HandcarError("container not paused")
        manager_of(state).thaw()
    finally:
        state.unlock()


# --- update -----------------------------------------------------------------------------


def parse_resources(raw: bytes, where: str = "--resources") -> LinuxResources:
    """A JSON linux.resources document (runc update --resources), validated; `null` is {}."""
    from handcar import jsonio
    from handcar.cgroups.update import validate_resources

    value = jsonio.loads(raw, where)
    if value is None:
        return {}
    resources = validate_resources(value, where)
    # runc update never reprograms the device policy: it keeps the one made at create.
    resources.pop("devices", None)
    return resources


def resources_from_flags(flags: dict[str, str]) -> LinuxResources:
    """runc update's individual flags (`--memory 64m`, `--cpu-shares 512`, ...) as a partial
    linux.resources, validated."""
    from handcar.cgroups.update import resources_from_update_flags

    return resources_from_update_flags(flags)


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


def update(store: StateStore, container_id: str, resources: LinuxResources) -> None:
    """Change a container's limits: write the cgroup files, then save them in its config."""
    memory = resources.get("memory")
    if isinstance(memory, dict) and memory.get("limit") == -1 and memory.get("swap") is None:
        # As runc: an unlimited memory limit lifts memory+swap too (the kernel wants
        # memory <= memory+swap at every step).
        memory["swap"] = -1
    state = load(store, container_id)
    try:
        if state.status() == "stopped":
            raise ContainerNotRunning()
        if not resources:
            return
        manager_of(state).apply(resources, devices=False)
        linux = state.data["config"].setdefault("linux", {})
        linux["resources"] = merge_resources(linux.get("resources") or {}, resources)
        state.save()
    finally:
        state.unlock()


# --- processes, stats and events ---------------------------------------------------------


def pids(store: StateStore, container_id: str) -> list[int]:
    """The host pids of every process in the container's cgroup."""
    state = load(store, container_id, lock=False)
    return manager_of(state).pids() if state.data.get("cgroup_paths") else []


def stats(store: StateStore, container_id: str) -> dict[str, Any]:
    """One snapshot of the container's cgroup statistics, in runc's `events --stats` shape."""
    state = _running(store, container_id)
    result: dict[str, Any] = manager_of(state).stats()
    return result


def events(
    store: StateStore, container_id: str, interval: float
) -> Generator[dict[str, Any], None, None]:
    """A stats event every `interval` seconds, and an oom event whenever the kernel reports
    one, until the container stops (runc's `events`)."""
    if interval <= 0:
        raise HandcarError("duration interval must be greater than 0")
    state = _running(store, container_id)
    return _stream(state, manager_of(state), interval)


def event(kind: str, container_id: str, data: object = None) -> dict[str, Any]:
    result: dict[str, Any] = {"type": kind, "id": container_id}
    if data is not None:
        result["data"] = data
    return result


def _running(store: StateStore, container_id: str) -> ContainerState:
    state = load(store, container_id, lock=False)
    if state.status() == "stopped":
        raise HandcarError(f"container with id {state.id} is not running")
    return state


def _open_pidfd(state: ContainerState) -> int:
    try:
        pidfd = os.pidfd_open(state.pid)
    except (ProcessLookupError, ValueError):
        return -1
    if not state.is_alive():  # the pid was recycled between the status check and here
        os.close(pidfd)
        return -1
    return pidfd


def _stream(
    state: ContainerState, manager: CgroupManager, interval: float
) -> Generator[dict[str, Any], None, None]:
    import select
    import time

    from handcar.cgroups.fs import CgroupError
    from handcar.cgroups.oom import V1OomWatcher

    try:
        watcher: Any = manager.oom_events()
    except (CgroupError, OSError):
        watcher = None  # no memory controller: stats only
    pidfd = _open_pidfd(state)
    poller = select.poll()
    if watcher is not None:
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
                for _ in range(watcher.wait(0)):
                    yield event("oom", state.id)
                if watcher.gone:
                    break
            if not stopped and time.monotonic() >= next_stats:
                next_stats += interval
                try:
                    yield event("stats", state.id, manager.stats())
                except (CgroupError, OSError) as err:
                    from handcar import log

                    log.log("error", str(err))
    finally:
        if watcher is not None:
            watcher.close()
        if pidfd >= 0:
            os.close(pidfd)
