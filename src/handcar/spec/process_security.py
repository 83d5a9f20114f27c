"""Validation of the process security settings that have no kernel default: personality,
scheduler, I/O priority, and the time namespace's offsets. Each error names the JSON field.
The tables here are shared with the init, which applies them (handcar.init.security).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from handcar.spec.validate import Checker

PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
PERSONALITY_FLAGS = {
    "UNAME26": 0x0020000,
    "ADDR_NO_RANDOMIZE": 0x0040000,
    "FDPIC_FUNCPTRS": 0x0080000,
    "MMAP_PAGE_ZERO": 0x0100000,
    "ADDR_COMPAT_LAYOUT": 0x0200000,
    "READ_IMPLIES_EXEC": 0x0400000,
    "ADDR_LIMIT_32BIT": 0x0800000,
    "SHORT_INODE": 0x1000000,
    "WHOLE_SECONDS": 0x2000000,
    "STICKY_TIMEOUTS": 0x4000000,
    "ADDR_LIMIT_3GB": 0x8000000,
}
SCHED_POLICIES = {
    "SCHED_OTHER": 0,
    "SCHED_FIFO": 1,
    "SCHED_RR": 2,
    "SCHED_BATCH": 3,
    "SCHED_ISO": 4,
    "SCHED_IDLE": 5,
    "SCHED_DEADLINE": 6,
}
SCHED_FLAGS = {
    "SCHED_FLAG_RESET_ON_FORK": 0x01,
    "SCHED_FLAG_RECLAIM": 0x02,
    "SCHED_FLAG_DL_OVERRUN": 0x04,
    "SCHED_FLAG_KEEP_POLICY": 0x08,
    "SCHED_FLAG_KEEP_PARAMS": 0x10,
    "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
    "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40,
}
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
TIME_CLOCKS = ("monotonic", "boottime")


def check_process_security(process: dict[str, Any], check: Checker, where: str) -> None:
    persona = check.opt_obj(process, "personality", f"{where}.personality")
    if persona is not None:
        at = f"{where}.personality"
        check.choice(persona.get("domain"), f"{at}.domain", tuple(PERSONALITY_DOMAINS))
        for i, flag in enumerate(check.strings(persona.get("flags", []), f"{at}.flags")):
            if flag not in PERSONALITY_FLAGS:
                raise check.fail(f"{at}.flags[{i}]", f"unknown personality flag {flag!r}")
    sched = check.opt_obj(process, "scheduler", f"{where}.scheduler")
    if sched is not None:
        at = f"{where}.scheduler"
        policy = check.choice(sched.get("policy"), f"{at}.policy", tuple(SCHED_POLICIES))
        if "nice" in sched:
            nice = check.integer(sched["nice"], f"{at}.nice")
            if not -20 <= nice <= 19:
                raise check.fail(f"{at}.nice", f"must be between -20 and 19, not {nice}")
        if "priority" in sched:
            priority = check.integer(sched["priority"], f"{at}.priority", 0)
            if policy in ("SCHED_FIFO", "SCHED_RR") and not 1 <= priority <= 99:
                raise check.fail(f"{at}.priority", f"must be 1 to 99 for {policy}")
            if policy not in ("SCHED_FIFO", "SCHED_RR") and priority:
                raise check.fail(f"{at}.priority", f"must be 0 for {policy}")
        for key in ("runtime", "deadline", "period"):
            if key in sched:
                check.integer(sched[key], f"{at}.{key}", 0)
        for i, flag in enumerate(check.strings(sched.get("flags", []), f"{at}.flags")):
            if flag not in SCHED_FLAGS:
                raise check.fail(f"{at}.flags[{i}]", f"unknown scheduler flag {flag!r}")
    ioprio = check.opt_obj(process, "ioPriority", f"{where}.ioPriority")
    if ioprio is not None:
        at = f"{where}.ioPriority"
        check.choice(ioprio.get("class"), f"{at}.class", tuple(IOPRIO_CLASSES))
        level = check.integer(ioprio.get("priority", 0), f"{at}.priority", 0)
        if level > 7:
            raise check.fail(f"{at}.priority", f"must be 0 to 7, not {level}")


def check_time_offsets(linux: dict[str, Any], check: Checker) -> None:
    offsets = check.opt_obj(linux, "timeOffsets", "linux.timeOffsets")
    if offsets is None:
        return
    has_timens = any(
        isinstance(ns, dict) and ns.get("type") == "time" and not ns.get("path")
        for ns in linux.get("namespaces", [])
    )
    if not has_timens:
        raise check.fail("linux.timeOffsets", "needs a new time namespace in linux.namespaces")
    for clock, value in offsets.items():
        at = f"linux.timeOffsets.{clock}"
        if clock not in TIME_CLOCKS:
            raise check.fail(at, "unknown clock (monotonic or boottime)")
        offset = check.obj(value, at)
        check.integer(offset.get("secs", 0), f"{at}.secs")
        nanos = check.integer(offset.get("nanosecs", 0), f"{at}.nanosecs", 0)
        if nanos >= 1_000_000_000:
            raise check.fail(f"{at}.nanosecs", "must be below 1000000000")
