"""What handcar reads from /proc: a process's identity (alive, not a zombie, not a recycled
pid), the paths of /proc/PID/mountinfo, and whether the image this process runs could be
written through /proc/<pid>/exe."""

from __future__ import annotations

import os


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


# F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE, and F_GET_SEALS (linux/fcntl.h)
_ALL_SEALS = 0x1 | 0x2 | 0x4 | 0x8
_F_GET_SEALS = 1034


def writable_exe() -> str:
    """The file this process runs when a process forked from it could be used to overwrite it,
    else "".

    A forked process keeps its parent's image as /proc/<pid>/exe; a container process with
    CAP_SYS_PTRACE that sees it can open that file, and reopen it for writing once nothing runs
    it (CVE-2019-5736). The launcher execs the interpreter from an image that cannot be written:
    a file on a read-only mount (its detached overlayfs) or a sealed memfd.
    """
    import fcntl

    try:
        fd = os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return "/proc/self/exe (unreadable)"
    try:
        if os.fstatvfs(fd).f_flag & os.ST_RDONLY:
            return ""
        try:
            if fcntl.fcntl(fd, _F_GET_SEALS) & _ALL_SEALS == _ALL_SEALS:
                return ""
        except OSError:  # EINVAL: not a memfd
            pass
        return os.readlink("/proc/self/exe")
    finally:
        os.close(fd)
