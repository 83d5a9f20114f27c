"""Apply the process security settings in the init: personality, scheduler, I/O priority, and
the time namespace's offsets (validated beforehand by handcar.spec.process_security).
"""

from __future__ import annotations

import os

from handcar.errors import HandcarError
from handcar.spec.process_security import (
    IOPRIO_CLASSES,
    PERSONALITY_DOMAINS,
    PERSONALITY_FLAGS,
    SCHED_FLAGS,
    SCHED_POLICIES,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from handcar.spec.types import Linux


def apply_process_security(process: Mapping[str, Any], where: str = "process") -> None:
    """personality, scheduler and I/O priority, while the init still holds its capabilities
    (an RT policy or class needs CAP_SYS_NICE / CAP_SYS_ADMIN, as under runc).

    `process` is not typed Process: handcar reads `personality` from it, where runtime-spec
    1.3 has `linux.personality`."""
    persona = process.get("personality")
    sched = process.get("scheduler")
    ioprio = process.get("ioPriority")
    if not (persona or sched or ioprio):
        return
    from handcar.linux import sched as lsched

    try:
        if persona:
            value = PERSONALITY_DOMAINS[persona["domain"]]
            for flag in persona.get("flags", []):
                value |= PERSONALITY_FLAGS[flag]
            lsched.personality(value)
    except OSError as err:
        raise HandcarError(f"{where}.personality: {err.strerror}") from None
    try:
        if sched:
            flags = 0
            for flag in sched.get("flags", []):
                flags |= SCHED_FLAGS[flag]
            lsched.sched_setattr(
                SCHED_POLICIES[sched["policy"]],
                flags,
                sched.get("nice", 0),
                sched.get("priority", 0),
                sched.get("runtime", 0),
                sched.get("deadline", 0),
                sched.get("period", 0),
            )
    except OSError as err:
        raise HandcarError(f"{where}.scheduler: {err.strerror}") from None
    try:
        if ioprio:
            lsched.ioprio_set(IOPRIO_CLASSES[ioprio["class"]], ioprio.get("priority", 0))
    except OSError as err:
        raise HandcarError(f"{where}.ioPriority: {err.strerror}") from None


def write_time_offsets(linux_cfg: Linux) -> None:
    """After unshare(CLONE_NEWTIME) and before the first child: the init, forked next, is the
    first process of the new time namespace and sees these offsets."""
    offsets = linux_cfg.get("timeOffsets") or {}
    lines = "".join(
        f"{clock} {offsets[clock].get('secs', 0)} {offsets[clock].get('nanosecs', 0)}\n"
        for clock in ("monotonic", "boottime")  # the clocks validation lets through
        if clock in offsets
    )
    if not lines:
        return
    try:
        fd = os.open("/proc/self/timens_offsets", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
    except OSError as err:
        raise HandcarError(f"linux.timeOffsets: {err.strerror}") from None
