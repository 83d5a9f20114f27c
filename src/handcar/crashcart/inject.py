"""Attaching the toolbox image inside a container's mount namespace, and taking it away.

The mount is built on the host side with the new mount API (erofs straight from the image file,
squashfs through an auto-clearing read-only loop device), so it is a detached mount that never
appears in the host's mount table. A short-lived helper process then enters the container's mount
namespace, chroots into the container's root, and attaches it with move_mount. The mount point is
opened with openat2(RESOLVE_NO_SYMLINKS), so a symlink the container planted can't redirect it.

Sessions share one mount. Each session holds a shared flock on a per-namespace `sessions` file
for its whole life; whoever can turn that into an exclusive lock at exit is the last one out and
removes the mount. A global lock serialises these decisions, and since flocks die with their
holder, a crashed session never keeps the mount alive.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from handcar import linux
from handcar.crashcart.errors import CrashcartError
from handcar.linux import mountapi

RUN_DIR = "/run/crashcart"
RESOLVE_NO_SYMLINKS = 0x04
IMAGE_FILESYSTEMS = ("erofs", "squashfs")
HELPER_NO_MOUNT_POINT = 3


class MountPointUnavailable(CrashcartError):
    """The container has no directory for the mount and none can be made (read-only parent)."""


class MountState:
    """What crashcart remembers about its mount in one mount namespace (a small JSON file)."""

    def __init__(self, created_dir: bool = False, pinned: bool = False, image: str = "") -> None:
        self.created_dir = created_dir
        self.pinned = pinned
        self.image = image


def _mount_point_parts(prefix: str) -> tuple[str, str]:
    relative = prefix.strip("/")
    parent, _, leaf = relative.rpartition("/")
    return parent or ".", leaf


def mounts_at(pid: int, prefix: str) -> list[str]:
    """Filesystem types mounted at `prefix` as the process `pid` sees it (its mountinfo)."""
    found = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            separator = fields.index("-")
            if fields[4] == prefix:
                found.append(fields[separator + 1])
    return found


def open_image_mount(image: str, fs_format: str) -> int:
    """A detached, read-only mount of the image; the caller attaches or closes it."""
    attributes = mountapi.MOUNT_ATTR_RDONLY | mountapi.MOUNT_ATTR_NODEV
    fs_fd = mountapi.fsopen(fs_format)
    try:
        mountapi.fsconfig_set_flag(fs_fd, "ro")
        try:
            mountapi.fsconfig_set_string(fs_fd, "source", image)
            mountapi.fsconfig_create(fs_fd)
            return mountapi.fsmount(fs_fd, attributes)
        except OSError as error:
            # Block-device filesystems (squashfs, erofs before 6.12) need a loop device.
            if error.errno not in (errno.ENOTBLK, errno.EINVAL, errno.ENODEV):
                raise
        os.close(fs_fd)
        fs_fd = mountapi.fsopen(fs_format)
        mountapi.fsconfig_set_flag(fs_fd, "ro")
        device, loop_fd = mountapi.attach_loop_readonly(image)
        try:
            mountapi.fsconfig_set_string(fs_fd, "source", device)
            mountapi.fsconfig_create(fs_fd)
            return mountapi.fsmount(fs_fd, attributes)
        finally:
            # The superblock holds the device now; closing our fd lets autoclear free it later.
            os.close(loop_fd)
    finally:
        os.close(fs_fd)


def run_in_helper(action: Callable[[], None]) -> None:
    """Run `action` in a forked child and wait for it, so setns and chroot never touch the
    caller. The child's error comes back through a pipe as one line."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_end)
            action()
        except BaseException as error:  # noqa: BLE001 - everything must reach the parent
            os.write(write_end, str(error).encode(errors="replace")[:4000])
            code = HELPER_NO_MOUNT_POINT if isinstance(error, MountPointUnavailable) else 1
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == HELPER_NO_MOUNT_POINT:
        raise MountPointUnavailable(message)
    if code != 0:
        raise CrashcartError(message or f"helper failed with status {status}")


def enter_container_root(pid_mnt_fd: int, root_fd: int) -> None:
    """In a helper: join the mount namespace and make the container's root ours."""
    linux.setns(pid_mnt_fd, linux.CLONE_NEWNS)
    os.fchdir(root_fd)
    os.chroot(".")
    os.chdir("/")


def make_mount_point(parent_fd: int, leaf: str, owner: tuple[int, int]) -> None:
    """Create the mount point as the container's root. In a user-namespaced container /dev
    belongs to that namespace, where the host's uid 0 has no mapping (mkdir: EOVERFLOW)."""
    uid, gid = owner
    os.setegid(gid)
    os.seteuid(uid)
    try:
        os.mkdir(leaf, 0o755, dir_fd=parent_fd)
    except OSError as error:
        why = "read-only" if error.errno == errno.EROFS else error.strerror
        message = f"cannot create the mount point {leaf} in the container: {why}"
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise MountPointUnavailable(message) from None
        raise CrashcartError(message) from None
    finally:
        # Back to euid 0, which brings the effective capabilities back for move_mount.
        os.seteuid(0)
        os.setegid(0)


def mapped_root(pid: int) -> tuple[int, int]:
    """The host uid and gid that are root inside the target's user namespace."""
    ids = []
    for kind in ("uid_map", "gid_map"):
        host_id = 0
        with open(f"/proc/{pid}/{kind}") as f:
            for line in f:
                inside, outside, _count = (int(x) for x in line.split())
                if inside == 0:
                    host_id = outside
                    break
        ids.append(host_id)
    return ids[0], ids[1]


def attach_in_container(
    mount_fd: int, mnt_ns_fd: int, root_fd: int, prefix: str, owner: tuple[int, int]
) -> bool:
    """Attach the detached mount at `prefix` in the container; returns whether we had to create
    the mount point directory (and so must remove it afterwards)."""
    created_read, created_write = os.pipe2(os.O_CLOEXEC)

    def attach() -> None:
        enter_container_root(mnt_ns_fd, root_fd)
        parent, leaf = _mount_point_parts(prefix)
        resolve = RESOLVE_NO_SYMLINKS
        flags = os.O_PATH | os.O_DIRECTORY
        try:
            parent_fd = linux.openat2(mountapi.AT_FDCWD, "/" + parent, flags, resolve)
        except OSError as error:
            raise CrashcartError(
                f"cannot open /{parent} in the container: {error.strerror}"
            ) from None
        try:
            target_fd = linux.openat2(parent_fd, leaf, flags, resolve)
        except FileNotFoundError:
            make_mount_point(parent_fd, leaf, owner)
            os.write(created_write, b"1")
            target_fd = linux.openat2(parent_fd, leaf, flags, resolve)
        mountapi.attach_mount(mount_fd, target_fd)

    try:
        run_in_helper(attach)
    finally:
        os.close(created_write)
        created = os.read(created_read, 1) == b"1"
        os.close(created_read)
    return created


def detach_in_container(mnt_ns_fd: int, root_fd: int, prefix: str, remove_dir: bool) -> None:
    def detach() -> None:
        enter_container_root(mnt_ns_fd, root_fd)
        # Only our own kind of filesystem is taken away: never something the container mounted.
        while True:
            try:
                fs_type = _filesystem_type(prefix)
            except OSError:
                break
            if fs_type not in IMAGE_FILESYSTEMS:
                break
            mountapi.umount_nofollow(prefix, mountapi.MNT_DETACH)
        if remove_dir:
            try:
                os.rmdir(prefix)
            except OSError:
                pass  # the container put something there: leave it

    run_in_helper(detach)


def _filesystem_type(path: str) -> str:
    """The type of the mount at exactly `path`, from /proc/self/mountinfo if the container
    has /proc, else by comparing the device with the parent's."""
    own = os.lstat(path)
    if not stat.S_ISDIR(own.st_mode):
        raise FileNotFoundError(path)
    parent = os.lstat(os.path.dirname(path))
    if own.st_dev == parent.st_dev:
        return "none"
    return _statfs_type(path)


def _statfs_type(path: str) -> str:
    # os.statvfs has no f_type; a mounted erofs or squashfs directory is recognised by the
    # magic number the kernel reports through statfs(2), read via the linux layer.
    magic = mountapi.filesystem_magic(path)
    return {0xE0F5E1E2: "erofs", 0x73717368: "squashfs"}.get(magic, f"0x{magic:x}")


class SessionRegistry:
    """The per-mount-namespace directory under /run/crashcart with the session lock and state."""

    def __init__(self, mnt_ns_inode: int) -> None:
        self.directory = os.path.join(RUN_DIR, f"mnt-{mnt_ns_inode}")
        self.state_file = os.path.join(self.directory, "state.json")
        self.sessions_fd: int | None = None

    @staticmethod
    @contextmanager
    def global_lock() -> Iterator[None]:
        os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(RUN_DIR, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read_state(self) -> MountState:
        try:
            with open(self.state_file) as f:
                raw = json.load(f)
            return MountState(bool(raw["created_dir"]), bool(raw["pinned"]), str(raw["image"]))
        except (OSError, ValueError, KeyError):
            return MountState()

    def write_state(self, state: MountState) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        temporary = self.state_file + ".tmp"
        with open(temporary, "w") as f:
            json.dump(
                {"created_dir": state.created_dir, "pinned": state.pinned, "image": state.image}, f
            )
        os.replace(temporary, self.state_file)

    def join(self) -> None:
        """Count this process as a session (call with the global lock held)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = os.path.join(self.directory, "sessions")
        self.sessions_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.sessions_fd, fcntl.LOCK_SH)

    def others_active(self) -> bool:
        """Whether any session but this one holds the sessions lock (global lock held)."""
        path = os.path.join(self.directory, "sessions")
        probe = self.sessions_fd
        if probe is None:
            try:
                probe = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            if probe != self.sessions_fd:
                os.close(probe)
        return False

    def leave(self) -> None:
        if self.sessions_fd is not None:
            os.close(self.sessions_fd)
            self.sessions_fd = None

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class Container:
    """Handles on a target process, opened once from the host's /proc."""

    def __init__(self, pid: int, pidfd: int, mnt_ns_fd: int, root_fd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.mnt_ns_fd = mnt_ns_fd
        self.root_fd = root_fd

    @classmethod
    def open(cls, pid: int) -> Container:
        pidfd = linux.pidfd_open(pid)
        mnt = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return cls(pid, pidfd, mnt, root)

    def close(self) -> None:
        for fd in (self.pidfd, self.mnt_ns_fd, self.root_fd):
            os.close(fd)

    def mnt_ns_inode(self) -> int:
        return os.fstat(self.mnt_ns_fd).st_ino


def ensure_mounted(container: Container, image: str, fs_format: str, prefix: str) -> bool:
    """Mount the image in the container unless it is there already (global lock held).

    Returns False when the container has no place for the mount (a read-only /dev without the
    mount point): the caller then gives its session a private view instead (private_toolbox)."""
    registry = SessionRegistry(container.mnt_ns_inode())
    present = [t for t in mounts_at(container.pid, prefix) if t in IMAGE_FILESYSTEMS]
    if present:
        return True
    mount_fd = open_image_mount(image, fs_format)
    try:
        owner = mapped_root(container.pid)
        created = attach_in_container(
            mount_fd, container.mnt_ns_fd, container.root_fd, prefix, owner
        )
    except MountPointUnavailable:
        return False
    finally:
        os.close(mount_fd)
    registry.write_state(MountState(created_dir=created, pinned=False, image=image))
    return True


def private_toolbox(image_mount_fd: int, prefix: str) -> None:
    """Give this process (already in the container's mount namespace and root) a private copy
    of that namespace in which the toolbox sits at `prefix`, for containers whose /dev is
    read-only and has no mount point: the container itself sees nothing change.

    In the copy, a fresh tmpfs covers the parent directory, and every entry of the original
    is bound back into it (submounts included), beside the new mount point."""
    linux.unshare(linux.CLONE_NEWNS)
    # Our mounts must not propagate back into the container's namespace.
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
    parent, leaf = _mount_point_parts(prefix)
    parent_path = "/" + parent.lstrip(".")
    original = os.open(parent_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        entries = [
            (name, os.lstat(os.path.join(parent_path, name))) for name in os.listdir(parent_path)
        ]
        fs_fd = mountapi.fsopen("tmpfs")
        try:
            mountapi.fsconfig_set_string(fs_fd, "mode", "755")
            mountapi.fsconfig_create(fs_fd)
            cover = mountapi.fsmount(fs_fd, mountapi.MOUNT_ATTR_NOSUID)
        finally:
            os.close(fs_fd)
        mountapi.move_mount(
            cover, "", mountapi.AT_FDCWD, parent_path, mountapi.MOVE_MOUNT_F_EMPTY_PATH
        )
        os.close(cover)
        for name, info in entries:
            _rebind_entry(original, parent_path, name, info)
        os.mkdir(os.path.join(parent_path, leaf), 0o755)
        mountapi.move_mount(
            image_mount_fd,
            "",
            mountapi.AT_FDCWD,
            os.path.join(parent_path, leaf),
            mountapi.MOVE_MOUNT_F_EMPTY_PATH,
        )
        mountapi.mount_setattr(parent_path, attr_set=mountapi.MOUNT_ATTR_RDONLY)
    finally:
        os.close(original)


def _rebind_entry(original_fd: int, parent_path: str, name: str, info: os.stat_result) -> None:
    path = os.path.join(parent_path, name)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(name, dir_fd=original_fd), path)
        return
    if stat.S_ISDIR(info.st_mode):
        os.mkdir(path, stat.S_IMODE(info.st_mode))
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    flags = mountapi.OPEN_TREE_CLONE | mountapi.AT_RECURSIVE | mountapi.AT_SYMLINK_NOFOLLOW
    tree = mountapi.open_tree(name, flags, dirfd=original_fd)
    try:
        mountapi.move_mount(tree, "", mountapi.AT_FDCWD, path, mountapi.MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(tree)


def remove_mount(container: Container, registry: SessionRegistry, prefix: str) -> None:
    """Take the image away (global lock held, no session left)."""
    state = registry.read_state()
    try:
        mounted = bool(mounts_at(container.pid, prefix))
    except OSError:
        # The container is gone. The namespace lived on only through our fd; closing it
        # frees the mount (and an auto-clearing loop device) with it.
        mounted = False
    if mounted:
        detach_in_container(container.mnt_ns_fd, container.root_fd, prefix, state.created_dir)
    registry.remove()
