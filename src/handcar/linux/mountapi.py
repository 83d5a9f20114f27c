"""The new mount API (fsopen, fsconfig, fsmount, move_mount, open_tree, mount_setattr) and loop
devices.

The new mount API works on file descriptors: a mount is built detached, in no namespace, and is
only attached by move_mount. That is what lets a process build a mount from a host file and then
attach it inside a container's mount namespace, without the mount ever appearing on the host.

The syscall numbers of these calls are the same on every architecture but alpha (they were
added after the syscall tables were unified), so nothing here is x86_64-only.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import time

from handcar.linux import libc

SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
SYS_FSPICK = 433
SYS_MOUNT_SETATTR = 442

FSOPEN_CLOEXEC = 0x1
FSPICK_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1

# fsconfig commands.
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_BINARY = 2
FSCONFIG_SET_PATH = 3
FSCONFIG_SET_PATH_EMPTY = 4
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6
FSCONFIG_CMD_RECONFIGURE = 7

# Per-mount attributes for fsmount and mount_setattr.
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# move_mount flags.
MOVE_MOUNT_F_SYMLINKS = 0x1
MOVE_MOUNT_F_AUTOMOUNTS = 0x2
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_SYMLINKS = 0x10
MOVE_MOUNT_T_AUTOMOUNTS = 0x20
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOVE_MOUNT_SET_GROUP = 0x100
MOVE_MOUNT_BENEATH = 0x200

# open_tree flags and the *at() flags the new calls share.
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

# umount2 flags beyond MNT_DETACH.
MNT_FORCE = 0x1
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _fail(what: str, err: int | None = None) -> OSError:
    err = ctypes.get_errno() if err is None else err
    return OSError(err, f"{what}: {os.strerror(err)}")


def _path(path: str | bytes) -> bytes:
    return path.encode() if isinstance(path, str) else path


def _syscall(what: str, number: int, *args: object) -> int:
    result: int = libc.syscall(number, *args)
    if result < 0:
        raise _fail(what)
    return result


def _fs_context_messages(fs_fd: int) -> str:
    """The kernel's own explanation of a failed fsconfig, read from the fs context fd."""
    messages = []
    for _ in range(8):
        try:
            line = os.read(fs_fd, 1024)
        except OSError:
            break
        if not line:
            break
        messages.append(line.decode(errors="replace").strip())
    return "; ".join(messages)


def fsopen(fstype: str) -> int:
    """Open a filesystem context for `fstype`; configure it with fsconfig_* below."""
    return _syscall(f"fsopen({fstype})", SYS_FSOPEN, _path(fstype), FSOPEN_CLOEXEC)


def fspick(path: str, dirfd: int = AT_FDCWD, flags: int = 0) -> int:
    """Open the filesystem context of an existing mount, for reconfiguration."""
    return _syscall("fspick", SYS_FSPICK, dirfd, _path(path), flags | FSPICK_CLOEXEC)


def _fsconfig(fs_fd: int, cmd: int, key: bytes | None, value: object, aux: int) -> None:
    if libc.syscall(SYS_FSCONFIG, fs_fd, cmd, key, value, aux) < 0:
        err = ctypes.get_errno()
        detail = _fs_context_messages(fs_fd)
        what = f"fsconfig({key.decode() if key else 'create'})"
        raise OSError(err, f"{what}: {os.strerror(err)}" + (f" ({detail})" if detail else ""))


def fsconfig_set_flag(fs_fd: int, key: str) -> None:
    _fsconfig(fs_fd, FSCONFIG_SET_FLAG, _path(key), None, 0)


def fsconfig_set_string(fs_fd: int, key: str, value: str) -> None:
    _fsconfig(fs_fd, FSCONFIG_SET_STRING, _path(key), _path(value), 0)


def fsconfig_create(fs_fd: int) -> None:
    _fsconfig(fs_fd, FSCONFIG_CMD_CREATE, None, None, 0)


def fsmount(fs_fd: int, attr_flags: int = 0) -> int:
    """Turn a created filesystem context into a detached mount; returns the mount's fd."""
    return _syscall("fsmount", SYS_FSMOUNT, fs_fd, FSMOUNT_CLOEXEC, attr_flags)


def move_mount(
    from_dirfd: int,
    from_path: str,
    to_dirfd: int,
    to_path: str,
    flags: int = 0,
) -> None:
    """Move (or attach, for a detached mount fd) a mount; see move_mount(2)."""
    _syscall(
        "move_mount",
        SYS_MOVE_MOUNT,
        from_dirfd,
        _path(from_path),
        to_dirfd,
        _path(to_path),
        flags,
    )


def attach_mount(mount_fd: int, target_fd: int) -> None:
    """Attach the detached mount `mount_fd` on the directory (or file) open as `target_fd`."""
    move_mount(mount_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def open_tree(path: str, flags: int = 0, dirfd: int = AT_FDCWD) -> int:
    """Open a mount (OPEN_TREE_CLONE: a detached copy, AT_RECURSIVE: with its submounts)."""
    return _syscall("open_tree", SYS_OPEN_TREE, dirfd, _path(path), flags | OPEN_TREE_CLOEXEC)


class MountAttr(ctypes.Structure):
    """struct mount_attr (linux/mount.h), version 0."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def mount_setattr(
    path: str,
    attr_set: int = 0,
    attr_clr: int = 0,
    propagation: int = 0,
    userns_fd: int = 0,
    dirfd: int = AT_FDCWD,
    flags: int = 0,
) -> None:
    """Change a mount's attributes. With MOUNT_ATTR_IDMAP and a user namespace fd this makes an
    id-mapped mount (on a detached mount from open_tree(OPEN_TREE_CLONE))."""
    attr = MountAttr(attr_set, attr_clr, propagation, userns_fd)
    _syscall(
        "mount_setattr",
        SYS_MOUNT_SETATTR,
        dirfd,
        _path(path),
        flags,
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )


def umount_nofollow(path: str, flags: int = MNT_DETACH) -> None:
    """Unmount without following a final symlink, so a path inside a container can't redirect us."""
    if libc.umount2(_path(path), flags | UMOUNT_NOFOLLOW) != 0:
        raise _fail(f"umount {path}")


libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]


def filesystem_magic(path: str) -> int:
    """f_type of statfs(2): the magic number of the filesystem `path` is on."""
    buffer = ctypes.create_string_buffer(256)  # larger than struct statfs on any architecture
    if libc.statfs(_path(path), buffer) != 0:
        raise _fail(f"statfs {path}")
    return ctypes.c_ulong.from_buffer(buffer).value & 0xFFFFFFFF


# Loop devices (linux/loop.h).
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64


class LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_uint8 * LO_NAME_SIZE),
        ("lo_crypt_name", ctypes.c_uint8 * LO_NAME_SIZE),
        ("lo_encrypt_key", ctypes.c_uint8 * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class LoopConfig(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]


def attach_loop_readonly(image_path: str) -> tuple[str, int]:
    """Bind `image_path` to a free loop device, read-only and auto-clearing.

    Returns the device path and an open fd on it. Because of LO_FLAGS_AUTOCLEAR the kernel
    detaches the device once its last user is gone: close the fd after mounting, and unmounting
    is all it takes to free the device, even if this process dies.
    """
    image_fd = os.open(image_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        control_fd = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            # Another process may grab the device between GET_FREE and CONFIGURE: retry.
            for _attempt in range(20):
                number = fcntl.ioctl(control_fd, LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                try:
                    loop_fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    time.sleep(0.01)
                    continue
                config = LoopConfig()
                config.fd = image_fd
                config.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR
                name = os.path.basename(image_path).encode()[: LO_NAME_SIZE - 1]
                ctypes.memmove(config.info.lo_file_name, name, len(name))
                try:
                    fcntl.ioctl(loop_fd, LOOP_CONFIGURE, bytes(config))
                except OSError as error:
                    os.close(loop_fd)
                    if error.errno == errno.EBUSY:
                        continue
                    raise OSError(
                        error.errno, f"LOOP_CONFIGURE {device}: {error.strerror}"
                    ) from None
                return device, loop_fd
            raise OSError(errno.EBUSY, "no free loop device after 20 attempts")
        finally:
            os.close(control_fd)
    finally:
        os.close(image_fd)
