"""Id-mapped bind mounts (OCI mounts[].uidMappings/gidMappings): open_tree(OPEN_TREE_CLONE),
mount_setattr(MOUNT_ATTR_IDMAP) with a user namespace made from the mapping, move_mount.

The runtime makes each detached, id-mapped tree on the host before it forks (only the host's
root may id-map a host filesystem; a user-namespaced init could not), and the init attaches it
onto the target it resolved inside the rootfs, as runc 1.2 does.

The mapping's lines are written to the helper namespace as given ("containerID hostID size"),
as runc and crun do: a file owned on disk by containerID shows as hostID in the mount.
"""

from __future__ import annotations

import os

from handcar import linux
from handcar.errors import HandcarError
from handcar.linux import mountapi

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.spec.types import LinuxIDMapping, Mount, Spec


def _lines(mappings: list[LinuxIDMapping]) -> str:
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings)


def userns_fd(uid_maps: list[LinuxIDMapping], gid_maps: list[LinuxIDMapping]) -> int:
    """An fd of a new user namespace with these maps, held by no process."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(go_w)
            linux.unshare(linux.CLONE_NEWUSER)
            # Our pid as /proc knows it: the init may be pid 1 of a new pid namespace while
            # /proc is still the host's.
            os.write(ready_w, os.readlink("/proc/self").encode())
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    try:
        proc_pid = os.read(ready_r, 32).decode()
        if not proc_pid.isdigit():
            raise HandcarError("idmapped mount: the helper could not make a user namespace")
        for name, maps in (("uid_map", uid_maps), ("gid_map", gid_maps)):
            if maps:
                with open(f"/proc/{proc_pid}/{name}", "w") as f:
                    f.write(_lines(maps))
        return os.open(f"/proc/{proc_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(go_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


_ATTRS = (
    (linux.MS_RDONLY, mountapi.MOUNT_ATTR_RDONLY),
    (linux.MS_NOSUID, mountapi.MOUNT_ATTR_NOSUID),
    (linux.MS_NODEV, mountapi.MOUNT_ATTR_NODEV),
    (linux.MS_NOEXEC, mountapi.MOUNT_ATTR_NOEXEC),
)


def prepare(config: Spec, bundle: str) -> dict[int, int]:
    """In the runtime: {mounts index: detached id-mapped tree fd} for every mapped bind mount."""
    from handcar.spec.mount_options import MountOptions
    from handcar.spec.paths import in_bundle

    trees: dict[int, int] = {}
    try:
        for index, entry in enumerate(config.get("mounts") or []):
            if not (entry.get("uidMappings") or entry.get("gidMappings")):
                continue
            opts = MountOptions(entry.get("options", []))
            if entry.get("type") == "bind":
                opts.flags |= linux.MS_BIND
            if not opts.is_bind:
                raise HandcarError(f"mounts[{index}]: uidMappings/gidMappings need a bind mount")
            source = in_bundle(bundle, entry.get("source", ""))
            try:
                trees[index] = idmapped_tree(source, opts.flags, entry)
            except OSError as err:
                raise HandcarError(
                    f"mounts[{index}]: idmapped mount of {source}: {err.strerror}"
                ) from None
    except BaseException:
        for fd in trees.values():
            os.close(fd)
        raise
    return trees


def idmapped_tree(source: str, flags: int, entry: Mount) -> int:
    """A detached clone of `source`, id-mapped per `entry`."""
    ns_fd = userns_fd(entry.get("uidMappings") or [], entry.get("gidMappings") or [])
    try:
        recursive = mountapi.AT_RECURSIVE if flags & linux.MS_REC else 0
        tree: int = mountapi.open_tree(source, mountapi.OPEN_TREE_CLONE | recursive)
        try:
            attrs = mountapi.MOUNT_ATTR_IDMAP
            for ms_flag, attr in _ATTRS:
                if flags & ms_flag:
                    attrs |= attr
            mountapi.mount_setattr(
                "", attrs, userns_fd=ns_fd, dirfd=tree, flags=mountapi.AT_EMPTY_PATH | recursive
            )
        except BaseException:
            os.close(tree)
            raise
        return tree
    finally:
        os.close(ns_fd)
