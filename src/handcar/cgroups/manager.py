"""The cgroup manager: where a container's cgroups live, and creating, joining and removing them.

Two implementations share one base: `V1Manager` drives the per-controller hierarchies of a v1
host, and also the cgroup2 hierarchy of a hybrid host (which runc joins as the controller
named ""); `V2Manager` drives the single unified hierarchy. Limits, stats, OOM watching and
device filters live in modules imported only when they are used, so that create + add_pid
(on every container start) costs only `os`.
"""

from __future__ import annotations

import os
import time

from handcar.cgroups.fs import (
    CGROUP_ROOT,
    UNIFIED_HYBRID,
    CgroupError,
    cgroup2_mount_of,
    enable_controllers,
    read_file,
    read_optional,
    reason,
    write_file,
)

# typing is not imported at run time (it costs milliseconds on every container start).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from handcar.cgroups.oom import OomWatcher
    from handcar.cgroups.types import ManagerState
    from handcar.spec.types import LinuxResources

# The key of the cgroup2 directory in `paths()`, as in runc's state and /proc/PID/cgroup.
UNIFIED = ""
_ERRNO_EBUSY = 16
_ERRNO_EINVAL = 22
_PERMISSION_ERRNOS = (1, 13, 30)  # EPERM, EACCES, EROFS: what a rootless runtime may get


class Manager:
    """A container's cgroups on every hierarchy of this host.

    Build one with `open_manager()` (from a config) or `from_paths()` (from saved state).
    """

    __slots__ = ("layout", "_dirs", "_created", "_rootless")

    def __init__(
        self,
        layout: str,
        dirs: dict[str, str],
        created: list[str] | None = None,
        rootless: bool = False,
    ) -> None:
        self.layout = layout
        self._dirs = dirs
        # Directories handcar made, outermost first. None means "unknown" (a manager reopened
        # from state saved before create() finished): then only the leaves are removed.
        self._created = created
        self._rootless = rootless

    # --- state -------------------------------------------------------------------------

    def paths(self) -> dict[str, str]:
        """{controller: absolute directory}; the cgroup2 directory is under the key ""."""
        return dict(self._dirs)

    def created(self) -> list[str]:
        """The directories create() made (outermost first), to save in state for destroy()."""
        return list(self._created or [])

    def state(self) -> ManagerState:
        """Everything `from_paths()` needs, as JSON-ready data."""
        return {"layout": self.layout, "paths": self.paths(), "created": self.created()}

    def _unique_dirs(self) -> list[str]:
        # Co-mounted controllers (cpu,cpuacct) share one directory: touch it once.
        seen: list[str] = []
        for path in self._dirs.values():
            if path not in seen:
                seen.append(path)
        return seen

    # --- creating and joining ----------------------------------------------------------

    def create(self) -> None:
        raise NotImplementedError

    def add_pid(self, pid: int) -> None:
        """Move the process (all its threads) into the container's cgroup on every hierarchy."""
        for controller, path in list(self._dirs.items()):
            try:
                _write_procs(path, pid)
            except CgroupError as err:
                if self._rootless and _denied(err):
                    del self._dirs[controller]
                    continue
                raise

    # --- processes ---------------------------------------------------------------------

    def _procs_dir(self) -> str:
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Every process in the container's cgroup and its descendants."""
        found: list[int] = []
        _collect_pids(self._procs_dir(), found)
        return found

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def is_frozen(self) -> bool:
        raise NotImplementedError

    def _kill_file(self) -> str | None:
        """The cgroup.kill file when the kernel has one (cgroup2, Linux 5.14+)."""
        path = self._dirs.get(UNIFIED)
        if path is None:
            return None
        kill = path + "/cgroup.kill"
        return kill if os.path.exists(kill) else None

    def kill_all(self, signum: int) -> None:
        """Signal every process in the cgroup, including ones outside the pid namespace's view.

        SIGKILL goes through cgroup.kill when there is one: the kernel kills everything, even
        processes forking at that moment. Otherwise, as runc's signalAllProcesses does, the
        cgroup is frozen so nothing can fork, each pid is signalled, the list is re-read until
        no new pid appears, and the cgroup is thawed again (unless it was paused before).
        """
        kill = self._kill_file() if signum == 9 else None
        if kill is not None:
            write_file(kill.rpartition("/")[0], "cgroup.kill", "1")
            self._thaw_to_die()
            return
        froze = False
        try:
            if not self.is_frozen():
                self.freeze()
                froze = True
        except CgroupError:
            pass  # no freezer: signal in a loop anyway
        try:
            _signal_until_stable(self, signum)
        finally:
            if froze:
                self.thaw()
            elif signum == 9:
                self._thaw_to_die()

    def _thaw_to_die(self) -> None:
        """A paused container's tasks sit in the v1 freezer, where even SIGKILL waits until
        they are thawed: after a SIGKILL, thaw them so that they die (runc thaws too)."""
        try:
            if self.is_frozen():
                self.thaw()
        except CgroupError:
            pass

    def wait_empty(self, timeout: float = 1.0) -> bool:
        """Wait until no process is left in the cgroup; True if it emptied in time."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.pids():
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return True

    # --- removal -----------------------------------------------------------------------

    def destroy(self, own_leaves: bool = True) -> None:
        """Remove the container's cgroups on every hierarchy, children first.

        The container's own cgroups (the leaves) go even when they existed before create, as
        runc's delete removes them; a parent goes only if create() made it (and it is empty
        now: a parent shared with another container stays). A failed create passes
        `own_leaves=False`: what it did not make, it leaves as it found it. EBUSY (processes
        still exiting) is retried for about half a second.
        """
        leaves = self._unique_dirs()
        created = self._created if self._created is not None else leaves
        for path in leaves:
            if path in created:
                _remove_tree(path)
            elif own_leaves:
                _remove_shared(path)
        for path in reversed(created):
            if path not in leaves:
                try:
                    os.rmdir(path)
                except OSError:
                    pass  # not empty (shared with another container) or already gone

    def check_usable(self) -> None:
        """Refuse a frozen cgroup (the init would hang in it), and warn about one that already
        has processes, as runc does before its init joins."""
        if self.is_frozen():
            raise CgroupError("container's cgroup unexpectedly frozen")
        count = 0
        for path in self._unique_dirs():  # an engine may have filled any one hierarchy
            found: list[int] = []
            _collect_pids(path, found)
            count = max(count, len(found))
        if count:
            from handcar import log

            log.warning(f"container's cgroup is not empty: {count} process(es) found")

    # --- limits, stats and events (lazily imported) ------------------------------------

    def apply(self, resources: LinuxResources, *, devices: bool | None = None) -> None:
        """Apply OCI `linux.resources`. Validate first (validate_resources) for clear errors.

        `devices` says whether to program the device policy: True at create (runc's default
        allowed devices are appended to the config's rules), False to leave it alone. By
        default it is programmed only when `resources` has a "devices" key.
        """
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def oom_events(self) -> OomWatcher:
        raise NotImplementedError


class V1Manager(Manager):
    """cgroup v1 hierarchies, plus the cgroup2 directory (key "") on a hybrid host."""

    __slots__ = ()

    def create(self) -> None:
        created: list[str] = []
        for controller, path in list(self._dirs.items()):
            try:
                made = _make_dirs(path)
            except CgroupError as err:
                if self._rootless and _denied(err):
                    del self._dirs[controller]
                    continue
                raise
            created.extend(p for p in made if p not in created)
            if controller == "cpuset":
                _fill_cpusets(path)
        self._created = created

    def _procs_dir(self) -> str:
        for controller in (UNIFIED, "pids", "freezer", "devices", "memory"):
            if controller in self._dirs:
                return self._dirs[controller]
        return next(iter(self._dirs.values()))

    def _freezer(self) -> str:
        path = self._dirs.get("freezer")
        if path is None:
            raise CgroupError("freeze: the freezer cgroup controller is not mounted")
        return path

    def freeze(self) -> None:
        path = self._freezer()
        deadline = time.monotonic() + 5.0
        delay = 0.0001
        # The v1 freezer may sit in FREEZING while a task is busy in the kernel: keep asking.
        while True:
            write_file(path, "freezer.state", "FROZEN", "freeze", "FROZEN")
            if read_file(path + "/freezer.state").strip() == "FROZEN":
                return
            if time.monotonic() >= deadline:
                write_file(path, "freezer.state", "THAWED")
                raise CgroupError(f"freeze {path}: timed out waiting for FROZEN")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def thaw(self) -> None:
        write_file(self._freezer(), "freezer.state", "THAWED", "resume", "THAWED")

    def is_frozen(self) -> bool:
        path = self._dirs.get("freezer")
        if path is None:
            return False
        state = read_optional(path + "/freezer.state")
        return state is not None and state.strip() in ("FROZEN", "FREEZING")

    def apply(self, resources: LinuxResources, *, devices: bool | None = None) -> None:
        from handcar.cgroups import v1

        if devices is None:
            devices = "devices" in resources
        v1.apply(self._dirs, resources, devices and not self._rootless)

    def stats(self) -> dict[str, Any]:
        from handcar.cgroups import stats

        return stats.stats_v1(self._dirs)

    def oom_events(self) -> OomWatcher:
        from handcar.cgroups import oom

        path = self._dirs.get("memory")
        if path is None:
            raise CgroupError("events: the memory cgroup controller is not mounted")
        return oom.V1OomWatcher(path)


class V2Manager(Manager):
    """The unified cgroup2 hierarchy: one directory, controllers enabled from the parents."""

    __slots__ = ()

    def create(self) -> None:
        path = self._dirs[UNIFIED]
        mount = cgroup2_mount_of(path)
        made = _make_dirs(path)
        enable_controllers(mount, path)
        self._created = made

    def _procs_dir(self) -> str:
        return self._dirs[UNIFIED]

    def freeze(self) -> None:
        path = self._dirs[UNIFIED]
        write_file(path, "cgroup.freeze", "1", "freeze", "1")
        _wait_frozen(path, True)

    def thaw(self) -> None:
        path = self._dirs[UNIFIED]
        write_file(path, "cgroup.freeze", "0", "resume", "0")
        _wait_frozen(path, False)

    def is_frozen(self) -> bool:
        text = read_optional(self._dirs[UNIFIED] + "/cgroup.freeze")
        return text is not None and text.strip() == "1"

    def apply(self, resources: LinuxResources, *, devices: bool | None = None) -> None:
        from handcar.cgroups import v2

        if devices is None:
            devices = "devices" in resources
        v2.apply(self._dirs[UNIFIED], resources, devices and not self._rootless)

    def stats(self) -> dict[str, Any]:
        from handcar.cgroups import stats

        return stats.stats_v2(self._dirs[UNIFIED])

    def oom_events(self) -> OomWatcher:
        from handcar.cgroups import oom

        return oom.V2OomWatcher(self._dirs[UNIFIED])


# --- opening ---------------------------------------------------------------------------


def open_manager(
    cgroups_path: str | None,
    container_id: str,
    systemd: bool = False,
    rootless: bool = False,
    layout: str | None = None,
    unified_mount: str | None = None,
) -> Manager:
    """Work out where the container's cgroups go, as runc does; nothing is created yet.

    cgroupsPath semantics (runc's cgroupfs driver):
    - absolute (`/a/b`): relative to the root of each hierarchy;
    - relative (`a/b`): below the runtime's own cgroup (on v2, below its parent, because
      the runtime's own cgroup holds processes and so cannot enable controllers);
    - missing: the container id, relative, so `<own cgroup>/<id>`.

    With `systemd=True` the path is `slice:prefix:name` (default `system.slice:runc:<id>`).
    This machine has no systemd, so handcar does what crun does without a systemd: it falls
    back to cgroupfs at the path systemd would have used, `/<expanded slice>/<prefix>-<name>
    .scope` (a `name` ending in `.slice` is that slice itself). Engines that compute that
    path to read stats find the cgroup there.

    `layout` and `unified_mount` override detection (tests drive cgroup2 that way on a hybrid
    host, treating its cgroup2 mount as a pure v2 host).
    """
    from handcar.cgroups.fs import clean_path, detect_layout

    if systemd:
        inner = systemd_path(cgroups_path or "", container_id, rootless)
    else:
        inner = clean_path(cgroups_path or "") or container_id
    layout = layout or detect_layout()
    if layout == "v2":
        return V2Manager("v2", {UNIFIED: _v2_dir(inner, unified_mount)}, None, rootless)
    return V1Manager(layout, _v1_dirs(inner, layout, rootless), None, rootless)


def from_paths(
    paths: dict[str, str], created: list[str] | None = None, layout: str | None = None
) -> Manager:
    """Reopen a manager from `paths()` (and `created()`) saved in the container's state.

    Without `created`, destroy() removes only the leaf directories (the state was saved
    before create() finished, as after a crash mid-create).
    """
    if layout is None:
        layout = "v2" if list(paths) == [UNIFIED] else ("hybrid" if UNIFIED in paths else "v1")
    cls = V2Manager if layout == "v2" else V1Manager
    return cls(layout, dict(paths), list(created) if created is not None else None)


def systemd_path(cgroups_path: str, container_id: str, rootless: bool = False) -> str:
    """The cgroupfs path a systemd driver would use for `slice:prefix:name`."""
    if not cgroups_path:
        slice_name, prefix, name = (
            ("user.slice" if rootless else "system.slice"),
            "runc",
            container_id,
        )
    else:
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise CgroupError(
                'expected cgroupsPath to be of format "slice:prefix:name" for systemd cgroups, '
                f'got "{cgroups_path}" instead'
            )
        slice_name, prefix, name = parts
        slice_name = slice_name or ("user.slice" if rootless else "system.slice")
    if name.endswith(".slice"):
        return expand_slice(name)
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return expand_slice(slice_name).rstrip("/") + "/" + unit


def expand_slice(slice_name: str) -> str:
    """`a-b-c.slice` -> `/a.slice/a-b.slice/a-b-c.slice`, as systemd nests slices."""
    if slice_name == "-.slice":
        return "/"
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise CgroupError(f"invalid systemd slice name: {slice_name}")
    base = slice_name[: -len(".slice")]
    if not base or base.startswith("-") or base.endswith("-") or "--" in base:
        raise CgroupError(f"invalid systemd slice name: {slice_name}")
    path = ""
    prefix = ""
    for component in base.split("-"):
        prefix = component if not prefix else prefix + "-" + component
        path += "/" + prefix + ".slice"
    return path


def _v2_dir(inner: str, unified_mount: str | None) -> str:
    from handcar.cgroups.fs import CGROUP_ROOT, own_cgroups

    mount = unified_mount or CGROUP_ROOT
    if inner.startswith("/"):
        return mount.rstrip("/") + inner
    own = own_cgroups().get(UNIFIED, "/")
    parent = own.rpartition("/")[0]
    return mount.rstrip("/") + parent + "/" + inner


def _v1_dirs(inner: str, layout: str, rootless: bool) -> dict[str, str]:
    from handcar.cgroups.fs import cgroup_mounts, own_cgroups

    mounts, unified = cgroup_mounts()
    if "devices" not in mounts and not rootless:
        raise CgroupError(
            "the devices cgroup controller is not mounted: refusing to run without device rules"
        )
    if layout == "hybrid":
        if unified is None:
            unified = (UNIFIED_HYBRID, "/")
        mounts = dict(mounts)
        mounts[UNIFIED] = unified
    own = own_cgroups() if not inner.startswith("/") else {}
    dirs: dict[str, str] = {}
    for controller, (mountpoint, root) in mounts.items():
        base = _below_root(own.get(controller, "/"), root) if own else ""
        dirs[controller] = (mountpoint.rstrip("/") + base).rstrip("/") + "/" + inner.lstrip("/")
    return dirs


def _below_root(path: str, root: str) -> str:
    """The part of a /proc/self/cgroup path below a mount's root (the mount may be a subtree)."""
    if root == "/" or not path.startswith(root):
        return path if path != "/" else ""
    rest = path[len(root) :]
    return rest if rest != "/" else ""


# --- filesystem helpers ----------------------------------------------------------------


def _make_dirs(path: str) -> list[str]:
    """mkdir -p: return the directories made, outermost first. The common case is one mkdir."""
    try:
        os.mkdir(path, 0o755)
        return [path]
    except FileExistsError:
        return []
    except FileNotFoundError:
        parent = path.rpartition("/")[0]
        if not parent or parent == "/":
            raise CgroupError(f"create cgroup {path}: no cgroup hierarchy there") from None
        made = _make_dirs(parent)
    except OSError as err:
        raise CgroupError(f"create cgroup {path}: {reason(err)}") from err
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return made
    except OSError as err:
        raise CgroupError(f"create cgroup {path}: {reason(err)}") from err
    return made + [path]


def _fill_cpusets(leaf: str) -> None:
    """A v1 cpuset starts with no cpus and no mems, and no process may join it until both
    are set. Copy them down to every empty level above the leaf, top first, as runc does:
    that includes parents handcar did not make (a pod's cgroup, made by an engine)."""
    empty: list[str] = []
    path = leaf
    while path.count("/") > CGROUP_ROOT.count("/") + 1 and not _cpuset_ready(path):
        empty.append(path)
        path = path.rpartition("/")[0]
    for path in reversed(empty):
        parent = path.rpartition("/")[0]
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (read_optional(path + "/" + name) or "").strip():
                continue
            value = read_file(parent + "/" + name).strip()
            write_file(path, name, value, f"cpuset parent {name}", value)


def _cpuset_ready(path: str) -> bool:
    return all(
        (read_optional(path + "/" + name) or "").strip() for name in ("cpuset.cpus", "cpuset.mems")
    )


def _denied(err: CgroupError) -> bool:
    """Whether the kernel refused for lack of permission (what a rootless runtime may skip)."""
    cause = err.__cause__
    return isinstance(cause, OSError) and cause.errno in _PERMISSION_ERRNOS


def _write_procs(path: str, pid: int) -> None:
    data = str(pid).encode()
    for attempt in range(5):
        try:
            fd = os.open(path + "/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            return
        except OSError as err:
            # EINVAL right after fork: the task is still TASK_NEW. runc retries the same way.
            if err.errno == _ERRNO_EINVAL and attempt < 4:
                time.sleep(0.03)
                continue
            raise CgroupError(f"join cgroup {path}: pid {pid}: {reason(err)}") from err


def _collect_pids(path: str, found: list[int]) -> None:
    text = read_optional(path + "/cgroup.procs")
    if text is None:
        return
    found.extend(int(line) for line in text.split())
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _collect_pids(entry.path, found)


def _signal_until_stable(manager: Manager, signum: int) -> None:
    signalled: set[int] = set()
    for _ in range(100):
        fresh = [pid for pid in manager.pids() if pid not in signalled]
        if not fresh:
            return
        for pid in fresh:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
            signalled.add(pid)


def _remove_shared(path: str) -> None:
    """A leaf that existed before create may hold processes that are not the container's (an
    engine's, another container's): those keep it, with a warning, as runc keeps it."""
    try:
        _remove_tree(path)
    except CgroupError as err:
        from handcar import log

        log.warning(str(err))


def _remove_tree(path: str) -> None:
    """rmdir the cgroup and every child cgroup below it (cgroupfs has no recursive remove)."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(entry.path)
    delay = 0.001
    deadline = time.monotonic() + 0.5
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != _ERRNO_EBUSY or time.monotonic() >= deadline:
                left = len((read_optional(path + "/cgroup.procs") or "").split())
                raise CgroupError(
                    f"remove cgroup {path}: {reason(err)} ({left} processes left)"
                ) from err
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _wait_frozen(path: str, frozen: bool) -> None:
    """Wait until cgroup.events says `frozen 1` (or 0): the kernel freezes asynchronously."""
    want = "frozen 1" if frozen else "frozen 0"
    deadline = time.monotonic() + 5.0
    delay = 0.0001
    while True:
        events = read_optional(path + "/cgroup.events")
        if events is None or want in events:
            return
        if time.monotonic() >= deadline:
            raise CgroupError(f"{'freeze' if frozen else 'thaw'} {path}: timed out")
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def paths_frozen(paths: dict[str, str]) -> bool:
    """Whether the container with these saved cgroup paths is paused: one read of the v1
    freezer.state or the v2 cgroup.freeze, for `state` and `list`."""
    return bool(paths) and from_paths(paths).is_frozen()
