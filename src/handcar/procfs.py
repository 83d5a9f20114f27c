"""A process's identity from /proc: alive, not a zombie, and not a recycled pid."""

from __future__ import annotations


def read_proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) of a live pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), fields[19].decode()


def process_is_alive(pid: int, start_time: str) -> bool:
    """True while `pid` is the process we started: not exited, not a zombie, not recycled."""
    if pid <= 0:
        return False
    stat = read_proc_stat(pid)
    return stat is not None and stat[1] == start_time and stat[0] not in ("Z", "X")
