"""handcar's cgroup manager, for v1, hybrid and unified (v2) hosts.

The calls the runtime makes, in order, for a container:

    manager = open_manager(spec_cgroups_path, container_id, systemd=..., rootless=...)
    manager.create()                      # mkdir on every hierarchy
    manager.apply(resources, devices=True)  # limits + device policy, before the init joins
    manager.add_pid(init_pid)             # while the child sets itself up (slow first time)
    save manager.state() in the container's state
    ...
    manager = from_paths(state["paths"], state["created"])  # in a later handcar process
    manager.kill_all(signal.SIGKILL); manager.wait_empty(); manager.destroy()

Only `os` is imported here; limits, stats, OOM watching and update parsing load on use.
"""

from __future__ import annotations

from handcar.cgroups.fs import CgroupError, detect_layout
from handcar.cgroups.manager import Manager, V1Manager, V2Manager, from_paths, open_manager

# typing is not imported at run time (it costs milliseconds on every container start).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.spec.types import LinuxResources

__all__ = [
    "CgroupError",
    "Manager",
    "V1Manager",
    "V2Manager",
    "detect_layout",
    "from_paths",
    "open_manager",
    "paths_frozen",
    "resources_from_update_flags",
    "validate_resources",
]


def paths_frozen(paths: dict[str, str]) -> bool:
    """Whether the container with these saved cgroup paths is paused: one read of the v1
    freezer.state or the v2 cgroup.freeze, for `state` and `list`."""
    return bool(paths) and from_paths(paths).is_frozen()


def resources_from_update_flags(flags: dict[str, str]) -> LinuxResources:
    """runc update's individual flags as a partial `linux.resources` (validated)."""
    from handcar.cgroups import update

    return update.resources_from_update_flags(flags)


def validate_resources(resources: object, where: str = "linux.resources") -> LinuxResources:
    """Raise CgroupError naming the JSON path of the first invalid value in `resources`;
    return it, typed."""
    from handcar.cgroups import update

    return update.validate_resources(resources, where)
