"""linux.sysctl: which kernel parameters a container may set, judged as runc judges them.

/proc/sys is only partly namespaced. The init writes each parameter from inside the
container, but a parameter lands in whichever namespace owns it: one the container does not
own is the host's. So, as runc's validator does, and before anything is applied:
- the IPC parameters (kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*) need the
  container's own ipc namespace;
- net.* needs its own network namespace;
- kernel.domainname needs its own uts namespace, and kernel.hostname is refused outright
  (the OCI `hostname` field sets it);
- everything else is refused.

A namespace joined by `path` is the container's own unless it is the runtime's current
namespace. runc judges only network paths that way and takes any ipc or uts entry as the
container's own, so with the host's ipc or uts namespace as `path` runc 1.1.5 writes to the
host. handcar applies the network rule to all three.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.spec.validate import Checker, Json

IPC_SYSCTLS = frozenset(
    (
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    )
)
_NS_FILES = {"ipc": "ipc", "network": "net", "uts": "uts"}


def dotted(key: str) -> str:
    """The key in dot form: sysctl(8) also takes `/` as the separator, and then a `.` is part
    of a name (net/ipv4/conf/eth0.100/rp_filter); runc converts the same way."""
    first = next((c for c in key if c in "./"), ".")
    if first == ".":
        return key
    return key.translate(str.maketrans("./", "/."))


def proc_path(key: str) -> str | None:
    """The /proc/sys file for `key`, or None if a component is empty, `.` or `..`."""
    names = [part.replace("/", ".") for part in dotted(key).split(".")]
    if any(name in ("", ".", "..") for name in names):
        return None
    return "/proc/sys/" + "/".join(names)


def check_sysctls(linux: Json, check: Checker) -> None:
    """Refuse every linux.sysctl entry that would not land in a namespace of the container's."""
    entries = linux.get("namespaces") or []
    whose: dict[str, str] = {}
    for key in linux.get("sysctl") or {}:
        name = dotted(key)
        kind = _namespace_of(name)
        if kind and kind not in whose:
            whose[kind] = _whose(entries, kind, check)
        problem = _refusal(name, kind, whose.get(kind, "none"))
        if problem is None and proc_path(key) is None:
            problem = f"invalid sysctl name {name!r}"
        if problem is not None:
            raise check.fail("linux.sysctl", problem)


def _namespace_of(name: str) -> str:
    if name in IPC_SYSCTLS or name.startswith("fs.mqueue."):
        return "ipc"
    if name.startswith("net."):
        return "network"
    if name in ("kernel.domainname", "kernel.hostname"):
        return "uts"
    return ""


def _refusal(name: str, kind: str, whose: str) -> str | None:
    """runc's reason to refuse `name` (None: allowed), given whose namespace of `kind` the
    container is in: "own", "host" (joined by path) or "none" (no entry: the runtime's)."""
    if kind == "ipc" and whose != "own":
        return f'sysctl "{name}" is not allowed in the hosts ipc namespace'
    if kind == "network" and whose != "own":
        return f'sysctl "{name}" not allowed in host network namespace'
    if kind == "uts" and whose == "host":
        return f'sysctl "{name}" is not allowed in the hosts uts namespace'
    if kind == "uts" and whose == "own":
        if name == "kernel.domainname":
            return None
        return f'sysctl "{name}" is not allowed as it conflicts with the OCI "hostname" field'
    if kind in ("ipc", "network"):
        return None
    return f'sysctl "{name}" is not in a separate kernel namespace'


def _whose(entries: list[Json], kind: str, check: Checker) -> str:
    for index, entry in enumerate(entries):
        if entry.get("type") != kind:
            continue
        path = entry.get("path") or ""
        if not path:
            return "own"
        try:
            joined = os.stat(path)
            current = os.stat(f"/proc/self/ns/{_NS_FILES[kind]}")
        except OSError as err:
            if kind != "network":
                return "own"  # joining it fails later, with its own message
            text = os.strerror(err.errno or 0).lower()
            where = f"linux.namespaces[{index}].path"
            raise check.fail(where, f"invalid netns path: stat {path}: {text}") from None
        same = (joined.st_dev, joined.st_ino) == (current.st_dev, current.st_ino)
        return "host" if same else "own"
    return "none"
