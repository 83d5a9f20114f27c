"""ctypes bindings to libseccomp.so.2, plus the raw seccomp(2) calls handcar needs around it.

Two halves with different costs:
- Compiling (`Filter`, `resolve_syscall`, `version`) uses libseccomp. The library is loaded on
  first use, with `CDLL("libseccomp.so.2")` directly: `ctypes.util.find_library` runs ldconfig
  and costs 30-50 ms.
- Loading a compiled program (`set_filter`) and talking to a notify listener (`notif_recv`,
  `notif_send`) need only the kernel, so the container init never maps libseccomp at all.
"""

from __future__ import annotations

import ctypes
import os

from handcar.linux import SYS_SECCOMP, libc

# Action values from <seccomp.h>. ERRNO and TRACE carry a 16-bit datum in the low bits.
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_ERRNO = 0x00050000
SCMP_ACT_TRACE = 0x7FF00000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_NOTIFY = 0x7FC00000

# Comparison operators (enum scmp_compare).
SCMP_CMP_NE = 1
SCMP_CMP_LT = 2
SCMP_CMP_LE = 3
SCMP_CMP_EQ = 4
SCMP_CMP_GE = 5
SCMP_CMP_GT = 6
SCMP_CMP_MASKED_EQ = 7

# Filter attributes (enum scmp_filter_attr).
SCMP_FLTATR_CTL_NNP = 3
SCMP_FLTATR_CTL_OPTIMIZE = 8

# seccomp_syscall_resolve_name's answer for a name it does not know on any architecture.
NR_SCMP_ERROR = -1

# seccomp(2) operations and filter flags (<linux/seccomp.h>).
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

# Kernel return values of a filter (SECCOMP_RET_*): what the BPF program itself returns.
SECCOMP_RET_ERRNO = 0x00050000

# The kernel's AUDIT_ARCH_* values, as seen in seccomp_data.arch.
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
# x32 shares AUDIT_ARCH_X86_64 and marks its syscall numbers with this bit.
X32_SYSCALL_BIT = 0x40000000

# Notify ioctls: _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp),
# _IOW('!', 2, __u64).
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """libseccomp, loaded and typed on first use."""
    global _lib
    if _lib is None:
        handle = ctypes.CDLL("libseccomp.so.2")
        handle.seccomp_init.restype = ctypes.c_void_p
        handle.seccomp_init.argtypes = [ctypes.c_uint32]
        handle.seccomp_release.argtypes = [ctypes.c_void_p]
        handle.seccomp_release.restype = None
        handle.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        handle.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        handle.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        handle.seccomp_arch_native.restype = ctypes.c_uint32
        handle.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        handle.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        handle.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
        handle.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_ArgCmp),
        ]
        handle.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        handle.seccomp_version.restype = ctypes.POINTER(_Version)
        handle.seccomp_api_get.restype = ctypes.c_uint
        _lib = handle
    return _lib


def version() -> tuple[int, int, int]:
    v = lib().seccomp_version().contents
    return (v.major, v.minor, v.micro)


def arch_token(name: str) -> int:
    """libseccomp's token for an architecture named as libseccomp names it ("x86_64"), or 0."""
    token: int = lib().seccomp_arch_resolve_name(name.encode())
    return token


def native_arch() -> int:
    token: int = lib().seccomp_arch_native()
    return token


def resolve_syscall(name: str) -> int:
    """The native number of a syscall, a negative pseudo-number for a name that exists only on
    other architectures (libseccomp translates it per architecture when a rule is added), or
    NR_SCMP_ERROR for a name libseccomp does not know."""
    number: int = lib().seccomp_syscall_resolve_name(name.encode())
    return number


def resolve_syscall_arch(arch: int, name: str) -> int:
    number: int = lib().seccomp_syscall_resolve_name_arch(arch, name.encode())
    return number


class Filter:
    """One libseccomp filter context; `release` must be called (use it as a context manager)."""

    __slots__ = ("_ctx",)

    def __init__(self, default_action: int) -> None:
        ctx = lib().seccomp_init(default_action)
        if not ctx:
            raise OSError(22, "seccomp_init: invalid default action")
        self._ctx: int = ctx

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._ctx:
            lib().seccomp_release(self._ctx)
            self._ctx = 0

    def add_arch(self, arch: int) -> None:
        rc: int = lib().seccomp_arch_add(self._ctx, arch)
        # -EEXIST: the native architecture is always present already.
        if rc < 0 and rc != -17:
            raise OSError(-rc, f"seccomp_arch_add: {os.strerror(-rc)}")

    def set_attr(self, attr: int, value: int) -> None:
        rc: int = lib().seccomp_attr_set(self._ctx, attr, value)
        if rc < 0:
            raise OSError(-rc, f"seccomp_attr_set({attr}): {os.strerror(-rc)}")

    def add_rule(self, action: int, syscall: int, conds: list[tuple[int, int, int, int]]) -> None:
        """Add a rule; each condition is (arg index, op, datum_a, datum_b), all ANDed."""
        array = (_ArgCmp * max(len(conds), 1))(*(_ArgCmp(*cond) for cond in conds))
        rc: int = lib().seccomp_rule_add_array(self._ctx, action, syscall, len(conds), array)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add: {os.strerror(-rc)}")

    def export_bpf(self) -> bytes:
        """The classic BPF program, as an array of struct sock_filter in host byte order."""
        # A memfd rather than a pipe: a pipe would block once the program outgrows its buffer.
        fd = os.memfd_create("handcar-seccomp", os.MFD_CLOEXEC)
        try:
            rc: int = lib().seccomp_export_bpf(self._ctx, fd)
            if rc < 0:
                raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
            size = os.fstat(fd).st_size
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)


def _seccomp(op: int, flags: int, arg: object) -> int:
    result: int = libc.syscall(SYS_SECCOMP, op, flags, arg)
    return result


def set_filter(flags: int, program: bytes) -> int:
    """Install a classic BPF program on the calling thread; the listener fd when flags ask for
    one, else 0. Raises OSError with the errno."""
    fprog = _SockFprog(len(program) // 8, program)
    result = _seccomp(SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(err)}")
    return result


def filter_flags_supported(flags: int) -> bool:
    """Whether this kernel accepts these filter flags. A NULL program makes the kernel check the
    flags first (EINVAL if unknown) and then fail to read the program (EFAULT): no filter is
    ever installed by the probe."""
    if _seccomp(SECCOMP_SET_MODE_FILTER, flags, None) == 0:
        return True  # cannot happen with a NULL program, but it would mean "accepted"
    return ctypes.get_errno() == 14  # EFAULT


_NOTIF_SIZE = 80


class Notification:
    """One syscall the kernel handed to a notify listener."""

    __slots__ = ("id", "pid", "nr", "arch", "args")

    def __init__(self, raw: bytes) -> None:
        import struct

        fields = struct.unpack("=QIIiIQ6Q", raw)
        self.id: int = fields[0]
        self.pid: int = fields[1]
        self.nr: int = fields[3]
        self.arch: int = fields[4]
        self.args: tuple[int, ...] = fields[6:12]


def notif_recv(listener_fd: int) -> Notification:
    """Block until a notified syscall arrives on the listener and return it."""
    import fcntl

    buf = bytearray(_NOTIF_SIZE)  # the kernel wants the buffer zeroed
    fcntl.ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
    return Notification(bytes(buf))


def notif_send(
    listener_fd: int, notif_id: int, val: int = 0, error: int = 0, flags: int = 0
) -> None:
    """Answer a notification: the syscall returns `val`, or fails with -`error` (a negative
    errno, as the kernel expects), or really runs with SECCOMP_USER_NOTIF_FLAG_CONTINUE."""
    import fcntl
    import struct

    buf = bytearray(struct.pack("=QqiI", notif_id, val, error, flags))
    fcntl.ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_SEND, buf, True)
