"""What handcar reads from /proc: a process's identity (alive, not a zombie, not a recycled
pid) and the paths of /proc/PID/mountinfo."""

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


def unescape_mount_path(path: str) -> str:
    """A path field of mountinfo as it is: the kernel writes space, tab, newline and backslash
    as octal escapes (\\040 and so on)."""
    if "\\" not in path:
        return path
    out = []
    i = 0
    while i < len(path):
        if path[i] == "\\" and path[i + 1 : i + 4].isdigit():
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)
