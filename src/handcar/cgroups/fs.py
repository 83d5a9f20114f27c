"""Low-level cgroupfs access: reading and writing control files, and finding the hierarchies.

Everything here uses only `os` so that the create/add_pid path stays cheap to import. Errors
become `CgroupError` with a one-line message of the form `FIELD: VALUE: reason`.
"""

from __future__ import annotations

import os

from handcar.errors import HandcarError
from handcar.procfs import unescape_mount_path

CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED_HYBRID = "/sys/fs/cgroup/unified"

# The v1 controllers handcar knows how to place a process in. `name=systemd` is the named
# hierarchy that systemd (and runc) keep in sync with the others on v1 and hybrid hosts.
V1_CONTROLLERS = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
    "name=systemd",
)


class CgroupError(HandcarError):
    """A cgroup operation failed; the message is one line that names the field and the value."""


def reason(err: OSError) -> str:
    """The kernel's reason, in lower case as runc prints it: `device or resource busy`."""
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


def write_file(dirpath: str, name: str, value: str, field: str = "", shown: object = None) -> None:
    """Write `value` to the control file `dirpath/name` in one write(2).

    `field` is the OCI field this value came from; it and `shown` (the value as the user wrote
    it) go into the error message so that the user can tell which setting the kernel refused.
    """
    path = dirpath + "/" + name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as err:
        raise CgroupError(_message(path, field, value if shown is None else shown, err)) from None


def _message(path: str, field: str, shown: object, err: OSError) -> str:
    if err.errno == 2 and not os.path.isdir(path.rpartition("/")[0]):
        why = f"cgroup {path.rpartition('/')[0]} does not exist"
    elif err.errno == 2:
        why = f"{path.rpartition('/')[2]} is not supported on this host"
    else:
        why = reason(err)
    if field:
        return f"{field}: {shown}: {why}"
    return f"write {path}: {shown}: {why}"


def read_file(path: str) -> str:
    """Read a whole control file (they are small) with one open and one read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def read_optional(path: str) -> str | None:
    """Read a control file, or None when the kernel does not provide it."""
    try:
        return read_file(path)
    except FileNotFoundError:
        return None


def read_uint(path: str, default: int = 0) -> int:
    """Read a single number; `max` (v2 for "no limit") maps to 2**64-1 as runc reports it."""
    text = read_optional(path)
    if text is None:
        return default
    text = text.strip()
    if text == "max":
        return 0xFFFFFFFFFFFFFFFF
    if not text:
        return default
    value = int(text)
    return value if value >= 0 else 0


def read_key_values(path: str) -> dict[str, int]:
    """Parse a flat-keyed file (`key value` per line), such as memory.stat or cpu.stat."""
    text = read_optional(path)
    result: dict[str, int] = {}
    if text is None:
        return result
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if value == "max":
            result[key] = 0xFFFFFFFFFFFFFFFF
        elif value.lstrip("-").isdigit():
            result[key] = int(value)
    return result


def detect_layout() -> str:
    """Return "v2", "hybrid" or "v1" for this host with at most two stat(2) calls.

    `cgroup.controllers` exists only at the root of a cgroup2 filesystem, so finding it at
    /sys/fs/cgroup means unified mode, and finding it at /sys/fs/cgroup/unified means the
    hybrid layout (systemd's convention, which runc checks the same way).
    """
    if os.path.exists(CGROUP_ROOT + "/cgroup.controllers"):
        return "v2"
    if os.path.exists(UNIFIED_HYBRID + "/cgroup.controllers"):
        return "hybrid"
    return "v1"


def cgroup_mounts() -> tuple[dict[str, tuple[str, str]], tuple[str, str] | None]:
    """Find every cgroup mount from one read of /proc/self/mountinfo.

    Returns ({controller: (mount point, mount root)}, (unified mount point, root) or None).
    The first mount of a controller wins, as in runc.
    """
    v1: dict[str, tuple[str, str]] = {}
    unified: tuple[str, str] | None = None
    for line in read_file("/proc/self/mountinfo").splitlines():
        fields, _, tail = line.partition(" - ")
        fstype, _, rest = tail.partition(" ")
        if fstype == "cgroup2":
            if unified is None:
                parts = fields.split(" ")
                unified = (unescape_mount_path(parts[4]), unescape_mount_path(parts[3]))
            continue
        if fstype != "cgroup":
            continue
        parts = fields.split(" ")
        options = rest.rpartition(" ")[2].split(",")
        for option in options:
            if option in V1_CONTROLLERS and option not in v1:
                v1[option] = (unescape_mount_path(parts[4]), unescape_mount_path(parts[3]))
    return v1, unified


def own_cgroups(pid: str = "self") -> dict[str, str]:
    """Parse /proc/PID/cgroup into {controller: path}; the cgroup2 entry is under "" ."""
    result: dict[str, str] = {}
    for line in read_file(f"/proc/{pid}/cgroup").splitlines():
        _, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if not names:
            result[""] = path
            continue
        for name in names.split(","):
            result[name] = path
    return result


def clean_path(path: str) -> str:
    """Lexically clean a cgroup path the way runc's CleanPath does (no `..` escapes)."""
    if not path:
        return ""
    absolute = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    joined = "/".join(parts)
    if absolute:
        return "/" + joined
    # A relative path is cleaned as if rooted, so that `../..` cannot climb out.
    return joined


# --- cgroup2 hierarchy ---------------------------------------------------------------------


def cgroup2_mount_of(path: str) -> str:
    """The cgroup2 mount point above `path`: the nearest ancestor holding cgroup.controllers
    but no cgroup.type (only the root cgroup lacks cgroup.type)."""
    current = path
    while current and current != "/":
        parent = current.rpartition("/")[0] or "/"
        if os.path.exists(parent + "/cgroup.controllers") and not os.path.exists(
            parent + "/cgroup.type"
        ):
            return parent
        current = parent
    raise CgroupError(f"{path} is not below a cgroup2 mount")


def enable_controllers(mount: str, leaf: str) -> None:
    """Enable every available controller in each ancestor's cgroup.subtree_control, so the
    leaf gets cpu, memory, io, pids and the rest (as runc's CreateCgroupPath does)."""
    current = mount
    for part in leaf[len(mount) :].strip("/").split("/")[:-1]:
        _enable_in(current)
        current = current + "/" + part
    _enable_in(current)


def _enable_in(path: str) -> None:
    available = (read_optional(path + "/cgroup.controllers") or "").split()
    enabled = (read_optional(path + "/cgroup.subtree_control") or "").split()
    wanted = [c for c in available if c not in enabled]
    if not wanted:
        return
    try:
        write_file(path, "cgroup.subtree_control", " ".join("+" + c for c in wanted))
    except CgroupError:
        # One refused controller (say, a threaded subtree) must not block the others; limits
        # on a controller that stayed off fail later, naming the field.
        for controller in wanted:
            try:
                write_file(path, "cgroup.subtree_control", "+" + controller)
            except CgroupError:
                pass
