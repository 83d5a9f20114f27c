"""What the rest of handcar may ask of a container's cgroup manager, as a Protocol.

For type checking only: import this module under `if TYPE_CHECKING:`, never at run time (it
imports `typing`). `Manager` (handcar.cgroups.manager) and both of its kinds implement it;
the runtime and the CLI hold a manager through this interface, so mypy checks every call
they make against it.
"""

from typing import Any, Protocol, TypedDict

from handcar.spec.types import LinuxResources


class ManagerState(TypedDict):
    """What `from_paths()` needs to reopen a manager, as JSON-ready data."""

    layout: str
    paths: dict[str, str]
    created: list[str]


class OomEvents(Protocol):
    """The cgroup's OOM events (handcar.cgroups.oom): poll fileno(), then wait(0) counts."""

    @property
    def gone(self) -> bool:
        """True once the cgroup has been removed."""

    def fileno(self) -> int: ...

    def wait(self, timeout: float | None = None) -> int:
        """Block up to `timeout` seconds (None: forever); the number of OOM events."""

    def close(self) -> None: ...


class CgroupManager(Protocol):
    """A container's cgroups on every hierarchy of this host (see handcar.cgroups)."""

    @property
    def layout(self) -> str:
        """The host's cgroup layout: v1, hybrid or v2."""

    def paths(self) -> dict[str, str]:
        """{controller: absolute directory}; the cgroup2 directory is under the key ""."""

    def created(self) -> list[str]:
        """The directories create() made, outermost first."""

    def state(self) -> ManagerState: ...

    def create(self) -> None:
        """mkdir on every hierarchy (and fill a v1 cpuset from its parent)."""

    def add_pid(self, pid: int) -> None:
        """Move the process, all its threads, into the cgroup on every hierarchy."""

    def pids(self) -> list[int]:
        """Every process in the cgroup and its descendants."""

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def is_frozen(self) -> bool: ...

    def kill_all(self, signum: int) -> None:
        """Signal every process in the cgroup, even those outside the pid namespace's view."""

    def wait_empty(self, timeout: float = 1.0) -> bool:
        """Wait until the cgroup has no process left; True if it emptied in time."""

    def destroy(self, own_leaves: bool = True) -> None:
        """Remove the container's cgroups (and the parents handcar made), children first;
        `own_leaves=False` keeps leaves that existed before create."""

    def check_usable(self) -> None:
        """Refuse a frozen cgroup; warn about one that already has processes."""

    def apply(self, resources: LinuxResources, *, devices: bool | None = None) -> None:
        """Write `linux.resources` (validated beforehand) to the cgroup files."""

    def stats(self) -> dict[str, Any]:
        """runc's `events --stats` data: the cgroup's counters, in runc's shape."""

    def oom_events(self) -> OomEvents:
        """A watcher of the cgroup's OOM events."""
