"""personality(2), sched_setattr(2), ioprio_set(2) (x86_64 numbers; the libc has no wrappers
for the last two)."""

from __future__ import annotations

import ctypes
import os

from handcar.linux import libc

SYS_SCHED_SETATTR = 314
SYS_IOPRIO_SET = 251
IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_SHIFT = 13

libc.personality.argtypes = [ctypes.c_ulong]
libc.personality.restype = ctypes.c_int


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def personality(persona: int) -> None:
    if libc.personality(persona) == -1:
        raise _fail("personality")


class _SchedAttr(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


def sched_setattr(
    policy: int, flags: int, nice: int, priority: int, runtime: int, deadline: int, period: int
) -> None:
    attr = _SchedAttr(
        ctypes.sizeof(_SchedAttr), policy, flags, nice, priority, runtime, deadline, period
    )
    if libc.syscall(SYS_SCHED_SETATTR, 0, ctypes.byref(attr), 0) != 0:
        raise _fail("sched_setattr")


def ioprio_set(io_class: int, level: int) -> None:
    value = (io_class << IOPRIO_CLASS_SHIFT) | level
    if libc.syscall(SYS_IOPRIO_SET, IOPRIO_WHO_PROCESS, 0, value) != 0:
        raise _fail("ioprio_set")
