"""The only place in handcar that calls into libc through ctypes.

Every wrapper raises OSError with the errno and a short description of the call, so callers
can turn it into a one-line message that names what failed.
"""

from __future__ import annotations

import ctypes
import os

if os.uname().machine != "x86_64":
    # The syscall numbers below are x86_64's: on another machine they name other calls.
    raise ImportError(f"handcar.linux: x86_64 only, and this machine is {os.uname().machine}")

libc = ctypes.CDLL(None, use_errno=True)

# x86_64 syscall numbers for calls that glibc 2.36 does not wrap.
SYS_PIVOT_ROOT = 155
SYS_OPENAT2 = 437
SYS_PIDFD_OPEN = 434
SYS_CAPGET = 125
SYS_CAPSET = 126
SYS_SECCOMP = 317  # used by handcar.linux.libseccomp

# Namespace flags (sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "time": CLONE_NEWTIME,
}

# Mount flags (sys/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2
MS_PROPAGATION = MS_SHARED | MS_SLAVE | MS_PRIVATE | MS_UNBINDABLE

# prctl options.
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# openat2 resolve flags.
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10

libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.unshare.argtypes = [ctypes.c_int]
libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.syscall.restype = ctypes.c_long


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def _bytes(value: str | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return value.encode()


def mount(
    source: str | bytes | None,
    target: str | bytes,
    fstype: str | bytes | None,
    flags: int = 0,
    data: str | bytes | None = None,
) -> None:
    if libc.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data)) != 0:
        raise _fail("mount")


def umount(target: str | bytes, flags: int = MNT_DETACH) -> None:
    if libc.umount2(_bytes(target), flags) != 0:
        raise _fail("umount")


def unshare(flags: int) -> None:
    if libc.unshare(flags) != 0:
        raise _fail("unshare")


def setns(fd: int, nstype: int = 0) -> None:
    if libc.setns(fd, nstype) != 0:
        raise _fail("setns")


def pivot_root(new_root: str | bytes, put_old: str | bytes) -> None:
    if libc.syscall(SYS_PIVOT_ROOT, _bytes(new_root), _bytes(put_old)) != 0:
        raise _fail("pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    if libc.sethostname(raw, len(raw)) != 0:
        raise _fail("sethostname")


def setdomainname(name: str) -> None:
    raw = name.encode()
    if libc.setdomainname(raw, len(raw)) != 0:
        raise _fail("setdomainname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    result: int = libc.prctl(option, arg2, arg3, arg4, arg5)
    if result < 0:
        raise _fail(f"prctl({option})")
    return result


def set_dumpable(dumpable: bool) -> None:
    prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_child_subreaper(on: bool = True) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, int(on))


def is_child_subreaper() -> bool:
    value = ctypes.c_int(0)
    prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(value))
    return bool(value.value)


def set_parent_death_signal(signum: int) -> None:
    prctl(PR_SET_PDEATHSIG, signum)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """Open `path` relative to `dirfd` with the kernel's own resolution rules (openat2(2))."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd: int = libc.syscall(
        SYS_OPENAT2, dirfd, _bytes(path), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))
    )
    if fd < 0:
        raise _fail("openat2")
    return fd


def pidfd_open(pid: int) -> int:
    fd: int = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if fd < 0:
        raise _fail("pidfd_open")
    return fd


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if libc.syscall(SYS_CAPSET, ctypes.byref(header), data) != 0:
        raise _fail("capset")


def capget() -> tuple[int, int, int]:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.syscall(SYS_CAPGET, ctypes.byref(header), data) != 0:
        raise _fail("capget")
    eff = data[0].effective | (data[1].effective << 32)
    prm = data[0].permitted | (data[1].permitted << 32)
    inh = data[0].inheritable | (data[1].inheritable << 32)
    return eff, prm, inh


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
        return int(f.read())


def bounding_drop(cap: int) -> None:
    prctl(PR_CAPBSET_DROP, cap)


def ambient_clear() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def ambient_raise(cap: int) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def keep_capabilities(keep: bool) -> None:
    prctl(PR_SET_KEEPCAPS, 1 if keep else 0)


# Terminal ioctl numbers for the console.
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCGWINSZ = 0x5413
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431

# Network interface ioctls for bringing loopback up.
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """Bring `lo` up in the current network namespace: one ioctl, no netlink library."""
    import _socket
    import fcntl
    import struct

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM, 0)
    try:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    finally:
        sock.close()


class _Rlimit(ctypes.Structure):
    _fields_ = [("soft", ctypes.c_uint64), ("hard", ctypes.c_uint64)]


def setrlimit(resource: int, soft: int, hard: int) -> None:
    limit = _Rlimit(soft, hard)
    if libc.prlimit(0, resource, ctypes.byref(limit), None) != 0:
        raise _fail("setrlimit")


def getrlimit(resource: int) -> tuple[int, int]:
    limit = _Rlimit()
    if libc.prlimit(0, resource, None, ctypes.byref(limit)) != 0:
        raise _fail("getrlimit")
    return limit.soft, limit.hard


SYS_KEYCTL = 250
KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring(name: str) -> None:
    """Give the process a fresh session keyring so it cannot read the caller's keys."""
    if libc.syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, _bytes(name)) < 0:
        raise _fail("keyctl")
