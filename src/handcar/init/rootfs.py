"""The container's root filesystem, built inside its new mount namespace (runs in the init).

Every mount target is resolved *inside* the rootfs with openat2(RESOLVE_IN_ROOT): a symlink or
`..` in the rootfs resolves against the rootfs, never the host. The mount then goes onto the
resolved O_PATH fd through /proc/self/fd, so a path swapped after the check cannot redirect it.
"""

from __future__ import annotations

import errno
import os
import stat

from handcar import linux
from handcar.errors import HandcarError
from handcar.linux import mountapi  # loaded before pivot_root: used after it
from handcar.procfs import unescape_mount_path
from handcar.spec.mount_options import PROPAGATION_OPTIONS, MountOptions
from handcar.spec.paths import in_bundle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from handcar.spec.types import LinuxDevice, Mount

# Flags that a bind remount must keep when the kernel has locked them on the source mount.
_LOCKABLE_FLAGS = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC | linux.MS_RDONLY
_ST_FLAGS = {1: linux.MS_RDONLY, 2: linux.MS_NOSUID, 4: linux.MS_NODEV, 8: linux.MS_NOEXEC}


def _errtext(err: OSError) -> str:
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


class RootfsBuilder:
    """Builds the rootfs at `root` (an absolute host path with no symlink in it) for one
    container config, whose relative bind sources are relative to `bundle`."""

    __slots__ = ("root", "bundle", "root_fd", "config", "userns", "console_fd", "idmap_fds")

    def __init__(self, root: str, bundle: str, config: Mapping[str, Any], userns: bool) -> None:
        self.root = root
        self.bundle = bundle
        self.config = config
        self.userns = userns
        self.root_fd = -1
        self.console_fd = -1  # /dev/console, for the pty (the caller closes it)
        self.idmap_fds: dict[int, int] = {}  # mounts index -> id-mapped tree from the runtime

    # ---- safe resolution -------------------------------------------------------------------

    def resolve(self, path: str) -> int:
        """An O_PATH fd for a container path; the kernel confines the walk to the rootfs."""
        return linux.openat2(
            self.root_fd,
            path or ".",
            os.O_PATH,
            linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS,
        )

    def ensure_target(self, path: str, is_dir: bool) -> int:
        """Create a mount target inside the rootfs if missing; return an O_PATH fd to it.

        Missing components are made one at a time in a parent resolved with RESOLVE_IN_ROOT.
        A dangling symlink on the way is followed as if the rootfs were `/` (so an absolute
        link to a host path creates that path inside the rootfs), as runc's securejoin does.
        """
        parts = [p for p in path.split("/") if p]
        for _ in range(255):
            try:
                return self.resolve("/".join(parts))
            except FileNotFoundError:
                pass
            index = self._first_missing(parts)
            parent_fd = self.resolve("/".join(parts[:index]))
            try:
                name = parts[index]
                link = _readlink_at(parent_fd, name)
                if link is not None:
                    base = [] if link.startswith("/") else parts[:index]
                    parts = _normalize(base + link.split("/") + parts[index + 1 :])
                    continue
                _create_at(parent_fd, name, is_dir or index < len(parts) - 1)
            finally:
                os.close(parent_fd)
        raise OSError(40, f"too many levels of symbolic links in {path}")

    def _first_missing(self, parts: list[str]) -> int:
        for index in range(len(parts)):
            try:
                os.close(self.resolve("/".join(parts[: index + 1])))
            except FileNotFoundError:
                return index
        return len(parts) - 1

    # ---- the steps, in order ---------------------------------------------------------------

    def prepare(self) -> None:
        """Make the host's mounts invisible to propagation and the rootfs a mount point."""
        linux_cfg = self.config.get("linux") or {}
        propagation = linux_cfg.get("rootfsPropagation", "")
        root_flags = PROPAGATION_OPTIONS.get(propagation, linux.MS_SLAVE | linux.MS_REC)
        linux.mount(None, "/", None, root_flags)
        self.root_fd = self._bind_rootfs()
        if propagation in ("shared", "rshared", "private", "rprivate", "unbindable", "runbindable"):
            where = f"/proc/self/fd/{self.root_fd}"
            linux.mount(None, where, None, PROPAGATION_OPTIONS[propagation])

    def _bind_rootfs(self) -> int:
        """Bind the rootfs onto itself; return an O_PATH fd of the new mount's root.

        The path is opened without following any symlink (the runtime refused one already, as
        runc does; this keeps a swap since then from redirecting the bind), and the copy goes
        onto that very directory through its fd.
        """
        try:
            fd = linux.openat2(
                mountapi.AT_FDCWD, self.root, os.O_PATH | os.O_DIRECTORY, linux.RESOLVE_NO_SYMLINKS
            )
        except OSError as err:
            if err.errno == errno.ELOOP:  # a symlink on the way
                raise HandcarError(
                    "root.path: invalid rootfs: not an absolute path, or a symlink"
                ) from None
            raise HandcarError(f"root.path: {self.root}: {_errtext(err)}") from None
        try:
            flags = mountapi.OPEN_TREE_CLONE | mountapi.AT_RECURSIVE | mountapi.AT_EMPTY_PATH
            tree: int = mountapi.open_tree("", flags, fd)
            try:
                mountapi.attach_mount(tree, fd)
            except OSError:
                os.close(tree)
                raise
        except OSError as err:
            raise HandcarError(f"root.path: cannot bind {self.root}: {_errtext(err)}") from None
        finally:
            os.close(fd)
        return tree

    def mount_all(self, cgroup_mounter: Any = None) -> None:
        for index, entry in enumerate(self.config.get("mounts", [])):
            self.mount_entry(index, entry, cgroup_mounter)

    def mount_entry(self, index: int, entry: Mount, cgroup_mounter: Any = None) -> None:
        dest = entry["destination"]
        fstype = entry.get("type", "")
        source = entry.get("source", fstype or "none")
        opts = MountOptions(entry.get("options", []))
        if fstype == "bind":
            opts.flags |= linux.MS_BIND
        if fstype == "cgroup" and cgroup_mounter is not None:
            cgroup_mounter(self, dest, opts)
            return
        is_dir = True
        if opts.is_bind:
            source = in_bundle(self.bundle, source)
            try:
                is_dir = stat.S_ISDIR(os.stat(source).st_mode)
            except OSError as err:
                raise HandcarError(
                    f"mounts[{index}]: bind source {source}: {_errtext(err)}"
                ) from None
        try:
            if index in self.idmap_fds:
                self.idmap_mount(self.idmap_fds[index], dest, is_dir, opts)
            elif fstype in ("proc", "sysfs"):
                fd = self._ordinary_directory(dest)
                if fd < 0:
                    raise HandcarError(
                        f"mounts[{index}].destination: error mounting {jq(source)} to rootfs at"
                        f" {jq(dest)}: filesystem {jq(fstype)} must be mounted on ordinary directory"
                    )
                self._mount(source, dest, is_dir, fstype, opts, fd)
            else:
                self._mount(source, dest, is_dir, fstype, opts)
        except OSError as err:
            raise HandcarError(f"mount {jq(source)} on {dest}: {_errtext(err)}") from None

    def _ordinary_directory(self, dest: str) -> int:
        """An O_PATH fd of `dest` if it is a directory, made if missing; -1 if it is anything
        else, a symlink included. procfs and sysfs go only there, as runc requires: through a
        symlink, the kernel's own view would be mounted wherever the rootfs points it."""
        parent, _, name = dest.rstrip("/").rpartition("/")
        if not name:
            return -1
        parent_fd = self.ensure_target(parent or "/", True)
        try:
            try:
                mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                _create_at(parent_fd, name, True)
                mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
            if not stat.S_ISDIR(mode):
                return -1
            flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(name, flags, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)

    def idmap_mount(self, tree_fd: int, dest: str, is_dir: bool, opts: MountOptions) -> None:
        """Attach the id-mapped tree the runtime made (handcar.idmap) onto its target."""
        try:
            target_fd = self.ensure_target(dest, is_dir)
            try:
                mountapi.attach_mount(tree_fd, target_fd)
            finally:
                os.close(target_fd)
        finally:
            os.close(tree_fd)
        if opts.propagation:
            with self.target(dest, is_dir) as target:
                for propagation in opts.propagation:
                    linux.mount(None, target, None, propagation)

    def _mount(
        self,
        source: str,
        dest: str,
        is_dir: bool,
        fstype: str,
        opts: MountOptions,
        target_fd: int = -1,
    ) -> None:
        first = _Target(target_fd) if target_fd >= 0 else self.target(dest, is_dir)
        with first as target:
            if opts.is_bind:
                linux.mount(source, target, None, opts.flags & (linux.MS_BIND | linux.MS_REC))
            else:
                kind = None if fstype in ("", "none") else fstype
                linux.mount(source, target, kind, opts.flags, opts.data or None)
        extra = opts.flags & ~(linux.MS_BIND | linux.MS_REC | linux.MS_REMOUNT)
        if (opts.is_bind and extra) or opts.propagation:
            # The fd we mounted through points below the new mount: reopen to reach its root.
            with self.target(dest, is_dir) as target:
                if opts.is_bind and extra:
                    self.remount_bind(target, extra)
                for propagation in opts.propagation:
                    linux.mount(None, target, None, propagation)

    def target(self, dest: str, is_dir: bool) -> _Target:
        """`with builder.target(path) as t:` gives a /proc/self/fd path to mount on."""
        return _Target(self.ensure_target(dest, is_dir))

    @staticmethod
    def remount_bind(target: str, flags: int) -> None:
        """Apply flags to a bind mount; keep the flags the kernel locked on the source."""
        try:
            linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | flags)
        except PermissionError:
            locked = 0
            current = os.statvfs(target).f_flag
            for bit, flag in _ST_FLAGS.items():
                if current & bit:
                    locked |= flag
            linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | flags | locked)

    # ---- /dev --------------------------------------------------------------------------------

    def setup_dev(self) -> None:
        """Default devices, the standard links and linux.devices, unless /dev is a bind."""
        linux_cfg = self.config.get("linux") or {}
        devices = list(DEFAULT_DEVICES)
        for device in linux_cfg.get("devices", []):
            devices = [d for d in devices if d["path"] != device["path"]]
            devices.append(device)
        if not self._dev_is_bind():
            for device in devices:
                self.create_device(device)
            self._dev_links()
        else:
            for device in linux_cfg.get("devices", []):
                self.create_device(device)
        if (self.config.get("process") or {}).get("terminal"):
            self.console_fd = self._console_target()

    def _console_target(self) -> int:
        """An O_PATH fd to /dev/console, a plain file made in /dev if missing.

        Never a symlink: the pty bound there would land wherever it points, in /proc for
        instance, before the masks go on (CVE-2025-52565). The bind goes onto this fd later.
        """
        dev_fd = self.ensure_target("/dev", True)
        try:
            link = _readlink_at(dev_fd, "console")
            if link is not None:
                raise HandcarError(f"/dev/console is a symlink (to {link}) in the rootfs")
            _create_at(dev_fd, "console", False)
            fd = os.open("console", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev_fd)
        finally:
            os.close(dev_fd)
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
            os.close(fd)
            raise HandcarError("/dev/console in the rootfs is neither a file nor a device")
        return fd

    def _dev_is_bind(self) -> bool:
        for entry in self.config.get("mounts", []):
            if entry.get("destination") == "/dev":
                opts = entry.get("options", [])
                return entry.get("type") == "bind" or "bind" in opts or "rbind" in opts
        return False

    def create_device(self, device: LinuxDevice) -> None:
        path = device["path"]
        kind = device["type"]
        mode = device.get("fileMode", 0o666) & 0o7777
        type_bits = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
        dirname, _, name = path.rpartition("/")
        parent_fd = self.ensure_target(dirname or "/", True)
        parent = f"/proc/self/fd/{parent_fd}/"
        try:
            try:
                os.unlink(parent + name)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                raise HandcarError(f"linux.devices: {path} is a directory in the rootfs") from None
            if self.userns:
                self._bind_host_device(parent + name, path)
            else:
                dev = os.makedev(device.get("major", 0), device.get("minor", 0))
                os.mknod(parent + name, type_bits[kind] | mode, dev)
                os.chmod(parent + name, mode)
                os.chown(parent + name, device.get("uid", 0), device.get("gid", 0))
        except OSError as err:
            raise HandcarError(f"create device {path}: {_errtext(err)}") from None
        finally:
            os.close(parent_fd)

    @staticmethod
    def _bind_host_device(target: str, path: str) -> None:
        # mknod is not allowed in a user namespace: bind the host's node instead.
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        linux.mount(path, target, None, linux.MS_BIND)

    def _dev_links(self) -> None:
        links = (
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
            ("pts/ptmx", "ptmx"),
        )
        dev_fd = self.ensure_target("/dev", True)
        try:
            for source, name in links:
                try:
                    os.symlink(source, f"/proc/self/fd/{dev_fd}/{name}")
                except FileExistsError:
                    pass
        finally:
            os.close(dev_fd)
        if os.path.exists("/proc/kcore"):
            dev_fd = self.ensure_target("/dev", True)
            try:
                os.symlink("/proc/kcore", f"/proc/self/fd/{dev_fd}/core")
            except FileExistsError:
                pass
            finally:
                os.close(dev_fd)

    # ---- after the mounts: the switch, then masking ------------------------------------------

    def pivot(self, no_pivot: bool) -> None:
        if no_pivot:
            self._move_root()
            return
        # pivot_root(".", ".") stacks the old root on top of the new one; unmounting "." then
        # removes the old root without needing a directory for it inside the rootfs.
        os.fchdir(self.root_fd)
        linux.pivot_root(".", ".")
        linux.mount(None, ".", None, linux.MS_SLAVE | linux.MS_REC)
        linux.umount(".", linux.MNT_DETACH)
        os.chdir("/")

    def _move_root(self) -> None:
        """--no-pivot: move the rootfs onto / and chroot into it, leaving none of the host's
        mounts in the container's mount namespace.

        Without pivot_root the old root stays the namespace's root mount, under the rootfs,
        and so would every other mount of the host: out of reach of any path, not of the
        kernel, which lets a new user namespace mount a fresh procfs or sysfs while a full one
        is anywhere in the namespace. So the old root is made private (neither the move nor
        the unmounts may reach the host's peers) and every mount on it but the rootfs is
        detached. A mount that the kernel locked (the container has a user namespace) cannot
        go: each procfs and sysfs among those is covered with an empty tmpfs, as runc does.
        Only the old root mount itself stays, as it must: it is the namespace's root.
        """
        old_root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # Opened while the host's /proc is there: read again, fresh, after each round.
        mountinfo = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        try:
            old_id = _mount_id(old_root)
            rootfs_id = _mount_id(self.root_fd)
            linux.mount(None, "/", None, linux.MS_PRIVATE)
            os.fchdir(self.root_fd)
            linux.mount(".", "/", None, linux.MS_MOVE)
            _detach_host_mounts(mountinfo, old_id, rootfs_id)
        except OSError as err:
            raise HandcarError(f"--no-pivot: {_errtext(err)}") from None
        finally:
            os.close(mountinfo)
            os.close(old_root)
        os.chroot(".")
        os.chdir("/")

    def close(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1


class _Mount:
    __slots__ = ("id", "parent", "point", "fstype")

    def __init__(self, line: str) -> None:
        fields, _, tail = line.partition(" - ")
        parts = fields.split(" ")
        self.id = int(parts[0])
        self.parent = int(parts[1])
        self.point = unescape_mount_path(parts[4])
        self.fstype = tail.partition(" ")[0]


def _read_mounts(mountinfo_fd: int) -> list[_Mount]:
    os.lseek(mountinfo_fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(mountinfo_fd, 65536):
        chunks.append(chunk)
    text = b"".join(chunks).decode(errors="surrogateescape")
    return [_Mount(line) for line in text.splitlines() if line]


def _mount_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
        for line in f.read().decode().splitlines():
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise HandcarError(f"--no-pivot: no mount id in /proc/self/fdinfo/{fd}")


_UNREACHABLE = frozenset((errno.EINVAL, errno.EPERM, errno.EACCES, errno.ENOENT, errno.ENOTDIR))


def _detach_host_mounts(mountinfo_fd: int, old_id: int, rootfs_id: int) -> None:
    """Detach every mount on the old root (`old_id`) but the rootfs; cover what is locked.

    Paths still resolve from the old root here (the chroot comes after). Each round detaches
    the mounts on top, last mounted first, so that stacked and shadowed ones surface next.
    """
    for _ in range(64):
        victims = [m for m in _read_mounts(mountinfo_fd) if m.parent == old_id]
        victims = [m for m in victims if m.id != rootfs_id]
        detached = 0
        for victim in reversed(victims):
            try:
                # A slave sends nothing: its submounts go without the host's copies.
                linux.mount(None, victim.point, None, linux.MS_SLAVE | linux.MS_REC)
                linux.umount(victim.point, linux.MNT_DETACH)
                detached += 1
            except OSError as err:
                # Locked, shadowed by a locked mount, or below a directory closed to a user
                # namespace: a procfs or sysfs among them is covered below.
                if err.errno not in _UNREACHABLE:
                    raise
        if not detached:
            break
    mounts = _read_mounts(mountinfo_fd)
    keep = _subtree(mounts, rootfs_id) | {old_id}
    for point in {m.point for m in mounts if m.id not in keep and m.fstype in ("proc", "sysfs")}:
        try:
            linux.mount("tmpfs", point, "tmpfs", linux.MS_RDONLY, "size=0k,nr_inodes=1")
        except OSError as err:
            raise HandcarError(
                f"--no-pivot: cannot hide the host's {point}: {_errtext(err)}"
            ) from None


def _subtree(mounts: list[_Mount], top: int) -> set[int]:
    """The ids of `top` and every mount below it."""
    found = {top}
    grew = True
    while grew:
        below = {m.id for m in mounts if m.parent in found} - found
        grew = bool(below)
        found |= below
    return found


def _readlink_at(dir_fd: int, name: str) -> str | None:
    """The target of `name` in `dir_fd` if it is a symlink, else None."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def _create_at(dir_fd: int, name: str, is_dir: bool) -> None:
    # Through the parent's O_PATH fd, so the creation lands in the directory we resolved.
    where = f"/proc/self/fd/{dir_fd}/{name}"
    try:
        if is_dir:
            os.mkdir(where, 0o755)
        else:
            os.close(os.open(where, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    except FileExistsError:
        pass


def _normalize(parts: list[str]) -> list[str]:
    """Lexically resolve `.` and `..`, never above the root."""
    result: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if result:
                result.pop()
        else:
            result.append(part)
    return result


class _Target:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def open_null_device() -> int:
    """A detached clone of the host's /dev/null mount, made before the switch and checked to be
    the null device. Masks are cloned from it, never bound from a path in the rootfs that could
    be a symlink to a procfs file (CVE-2025-31133)."""
    fd = os.open("/dev/null", os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
            raise HandcarError("linux.maskedPaths: /dev/null is not the null device (1:3)")
        tree: int = mountapi.open_tree("", mountapi.OPEN_TREE_CLONE | mountapi.AT_EMPTY_PATH, fd)
        return tree
    finally:
        os.close(fd)


def mask_paths(paths: list[str], null_fd: int) -> None:
    """After the switch: hide each path, a directory behind an empty read-only tmpfs and
    anything else behind the null device of `null_fd`. Missing paths are skipped, as runc does.

    Every target is resolved inside the new root (RESOLVE_IN_ROOT) and mounted on through its
    fd with the new mount API, so neither a symlink nor a swapped path can redirect a mask.
    """
    if not paths:
        return
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path in paths:
            try:
                fd = linux.openat2(
                    root_fd, path, os.O_PATH, linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
                )
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as err:
                raise HandcarError(f"linux.maskedPaths: {path}: {_errtext(err)}") from None
            try:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    mount_fd = _empty_readonly_tmpfs()
                else:
                    mount_fd = mountapi.open_tree(
                        "", mountapi.OPEN_TREE_CLONE | mountapi.AT_EMPTY_PATH, null_fd
                    )
                try:
                    mountapi.attach_mount(mount_fd, fd)
                finally:
                    os.close(mount_fd)
            except OSError as err:
                raise HandcarError(f"linux.maskedPaths: {path}: {_errtext(err)}") from None
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)


def _empty_readonly_tmpfs() -> int:
    fs_fd = mountapi.fsopen("tmpfs")
    try:
        mountapi.fsconfig_set_string(fs_fd, "size", "0k")
        mountapi.fsconfig_set_string(fs_fd, "nr_inodes", "1")
        mountapi.fsconfig_create(fs_fd)
        fd: int = mountapi.fsmount(fs_fd, mountapi.MOUNT_ATTR_RDONLY)
        return fd
    finally:
        os.close(fs_fd)


def bind_console(target_fd: int, pty_fd: int = 0) -> None:
    """Bind the pty open as `pty_fd` onto /dev/console, through the fd the builder checked."""
    try:
        tree = mountapi.open_tree("", mountapi.OPEN_TREE_CLONE | mountapi.AT_EMPTY_PATH, pty_fd)
        try:
            mountapi.attach_mount(tree, target_fd)
        finally:
            os.close(tree)
    except OSError as err:
        raise HandcarError(f"/dev/console: cannot bind the terminal: {_errtext(err)}") from None


def readonly_paths(paths: list[str]) -> None:
    for path in paths:
        try:
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
        except FileNotFoundError:
            continue
        except OSError as err:
            raise HandcarError(f"linux.readonlyPaths: {path}: {_errtext(err)}") from None
        RootfsBuilder.remount_bind(
            path, linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        )


def remount_root_readonly() -> None:
    RootfsBuilder.remount_bind("/", linux.MS_RDONLY)


def jq(text: str) -> str:
    """Go's %q for the simple strings in mount messages."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


DEFAULT_DEVICES: tuple[LinuxDevice, ...] = (
    {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
    {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
    {"path": "/dev/full", "type": "c", "major": 1, "minor": 7, "fileMode": 0o666},
    {"path": "/dev/random", "type": "c", "major": 1, "minor": 8, "fileMode": 0o666},
    {"path": "/dev/urandom", "type": "c", "major": 1, "minor": 9, "fileMode": 0o666},
    {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0, "fileMode": 0o666},
)


# `handcar features` reports mountExtensions.idmap by this name.
idmap_mount = RootfsBuilder.idmap_mount
