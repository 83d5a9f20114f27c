"""The `cgroup` mount type inside the container, on v1, hybrid and unified hosts.

Runs in the container's init, before the switch of root, when the init already sits in its
cgroups. With a cgroup namespace each hierarchy is mounted afresh (the namespace makes the
container's cgroup its root); without one, the init's own cgroup directory of each hierarchy
is bind-mounted, so the container never sees its siblings.
"""

from __future__ import annotations

import os

from handcar import linux

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.init.rootfs import RootfsBuilder
    from handcar.spec.mount_options import MountOptions

_SUPER_DROP = frozenset(("rw", "ro"))


class Hierarchy:
    __slots__ = ("mountpoint", "fstype", "options")

    def __init__(self, mountpoint: str, fstype: str, options: str) -> None:
        self.mountpoint = mountpoint
        self.fstype = fstype
        self.options = options


def host_hierarchies() -> list[Hierarchy]:
    """Every cgroup and cgroup2 mount of the (still host-shaped) mount table."""
    found: list[Hierarchy] = []
    with open("/proc/self/mountinfo", "rb") as f:
        for raw in f.read().decode().splitlines():
            left, _, right = raw.partition(" - ")
            fstype, _source, superopts = (right.split(" ") + ["", ""])[:3]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            mountpoint = left.split(" ")[4].replace("\\040", " ")
            options = ",".join(o for o in superopts.split(",") if o not in _SUPER_DROP)
            found.append(Hierarchy(mountpoint, fstype, options))
    return found


def own_cgroup(hierarchy: Hierarchy, proc_cgroup: list[str]) -> str:
    """This process's path in `hierarchy`, from the lines of /proc/self/cgroup."""
    options = set(hierarchy.options.split(","))
    for line in proc_cgroup:
        _, controllers, path = line.split(":", 2)
        if hierarchy.fstype == "cgroup2":
            if controllers == "":
                return path
        elif controllers and set(controllers.split(",")) <= options:
            return path
    return "/"


def mount_cgroups(builder: RootfsBuilder, dest: str, opts: MountOptions, in_cgroupns: bool) -> None:
    hierarchies = host_hierarchies()
    with open("/proc/self/cgroup", "rb") as f:
        proc_cgroup = f.read().decode().splitlines()
    flags = opts.flags & ~(linux.MS_BIND | linux.MS_REC | linux.MS_REMOUNT)
    unified_root = [
        h for h in hierarchies if h.fstype == "cgroup2" and h.mountpoint == "/sys/fs/cgroup"
    ]
    if unified_root:
        _mount_one(builder, dest, unified_root[0], proc_cgroup, flags, in_cgroupns)
        return
    with builder.target(dest, True) as target:
        linux.mount("cgroup", target, "tmpfs", flags & ~linux.MS_RDONLY, "mode=755")
    for hierarchy in hierarchies:
        if not hierarchy.mountpoint.startswith("/sys/fs/cgroup/"):
            continue
        name = hierarchy.mountpoint[len("/sys/fs/cgroup/") :]
        if "/" in name:
            continue
        _mount_one(builder, f"{dest}/{name}", hierarchy, proc_cgroup, flags, in_cgroupns)
        _link_comounted(builder, dest, name)
    if flags & linux.MS_RDONLY:
        with builder.target(dest, True) as target:
            builder.remount_bind(target, flags)


def _mount_one(
    builder: RootfsBuilder,
    dest: str,
    hierarchy: Hierarchy,
    proc_cgroup: list[str],
    flags: int,
    in_cgroupns: bool,
) -> None:
    if in_cgroupns:
        data = hierarchy.options if hierarchy.fstype == "cgroup" else None
        with builder.target(dest, True) as target:
            linux.mount("cgroup", target, hierarchy.fstype, flags, data)
        return
    source = hierarchy.mountpoint + own_cgroup(hierarchy, proc_cgroup).rstrip("/")
    with builder.target(dest, True) as target:
        linux.mount(source, target, None, linux.MS_BIND)
    with builder.target(dest, True) as target:
        builder.remount_bind(target, flags)


def _link_comounted(builder: RootfsBuilder, dest: str, name: str) -> None:
    """`cpu,cpuacct` gets `cpu` and `cpuacct` links, as on the host."""
    if "," not in name:
        return
    fd = builder.ensure_target(dest, True)
    try:
        for part in name.split(","):
            try:
                os.symlink(name, f"/proc/self/fd/{fd}/{part}")
            except FileExistsError:
                pass
    finally:
        os.close(fd)
