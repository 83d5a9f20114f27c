"""The process settings of the OCI `process` object, applied just before exec.

Shared by the container's init and by `exec`. The order follows runc's: rlimits and the OOM
score while still privileged, then the user (keeping capabilities across setuid), then the
capability sets; no_new_privs and seccomp last, in the order the spec asks.
"""

from __future__ import annotations

import os

from handcar import linux
from handcar.errors import HandcarError
from handcar.spec.caps import CAP_SETPCAP, CAPABILITIES, capability_mask
from handcar.spec.validate import RLIMITS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from handcar.spec.types import LinuxCapabilities, Process, User

    # The config's Process, or exec's working copy of one: a plain dict, since it carries the
    # signal mask to restore under a private key until the joiner's child takes it out.
    ProcessObject = Process | dict[str, Any]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _errtext(err: OSError) -> str:
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


def env_path(env: list[str]) -> str:
    for entry in env:
        if entry.startswith("PATH="):
            return entry[5:]
    return DEFAULT_PATH


def find_executable(name: str, env: list[str]) -> str:
    """Resolve args[0] the way Go's exec.LookPath does; its error text is what engines match."""
    if "/" in name:
        try:
            st = os.stat(name)
        except OSError as err:
            raise HandcarError(f'exec: "{name}": stat {name}: {_errtext(err)}') from None
        # Go's LookPath refuses a directory or a file without x bits; runc then checks
        # faccessat(X_OK) as the process's user (noexec mounts). Docker maps "permission
        # denied" to 126, so the wording is runc's.
        if os.path.isdir(name) or not st.st_mode & 0o111:
            raise HandcarError(f'exec: "{name}": permission denied')
        if not os.access(name, os.X_OK, effective_ids=True):
            raise HandcarError(f"exec {name}: permission denied")
        return name
    for directory in env_path(env).split(":"):
        candidate = (directory or ".") + "/" + name
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if st.st_mode & 0o111 and not os.path.isdir(candidate):
            return candidate
    raise HandcarError(f'exec: "{name}": executable file not found in $PATH')


def set_rlimits(process: ProcessObject, where: str = "process") -> None:
    for i, rlimit in enumerate(process.get("rlimits", [])):
        kind = rlimit["type"]
        try:
            linux.setrlimit(RLIMITS[kind], rlimit["soft"], rlimit["hard"])
        except OSError as err:
            hint = ""
            if err.errno == 1:
                hint = f" (the host's hard limit is {linux.getrlimit(RLIMITS[kind])[1]})"
            raise HandcarError(
                f"{where}.rlimits[{i}]: setrlimit {kind} soft={rlimit['soft']} "
                f"hard={rlimit['hard']}: {_errtext(err)}{hint}"
            ) from None


def set_oom_score_adj(process: ProcessObject, where: str = "process") -> None:
    if "oomScoreAdj" not in process:
        return
    value = process["oomScoreAdj"]
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as err:
        raise HandcarError(f"{where}.oomScoreAdj: cannot set {value}: {_errtext(err)}") from None


def check_lsm(process: ProcessObject, where: str = "process") -> None:
    """This host has no AppArmor or SELinux: a profile or label cannot be honoured."""
    if process.get("apparmorProfile") and not os.path.exists("/sys/kernel/security/apparmor"):
        raise HandcarError(f"{where}.apparmorProfile: apparmor is not enabled on this system")
    if process.get("selinuxLabel") and not os.path.exists("/sys/fs/selinux/enforce"):
        raise HandcarError(f"{where}.selinuxLabel: selinux is not enabled on this system")


class CapabilitySets:
    __slots__ = ("bounding", "effective", "permitted", "inheritable", "ambient")

    def __init__(self, caps: LinuxCapabilities | None) -> None:
        caps = caps or {}
        self.bounding = capability_mask(caps.get("bounding", []))
        self.effective = capability_mask(caps.get("effective", []))
        self.permitted = capability_mask(caps.get("permitted", []))
        self.inheritable = capability_mask(caps.get("inheritable", []))
        self.ambient = [CAPABILITIES[c] for c in caps.get("ambient", []) if c in CAPABILITIES]


def drop_bounding_set(sets: CapabilitySets) -> None:
    last = linux.last_cap()
    for cap in range(last + 1):
        if not sets.bounding & (1 << cap):
            linux.bounding_drop(cap)


def set_user(user: User, where: str = "process") -> None:
    uid = user.get("uid", 0)
    gid = user.get("gid", 0)
    gids = user.get("additionalGids")
    try:
        if gids is not None or not _setgroups_denied():
            os.setgroups(list(gids or []))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as err:
        raise HandcarError(f"{where}.user: cannot switch to {uid}:{gid}: {_errtext(err)}") from None


def _setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups", "rb") as f:
            return f.read().strip() == b"deny"
    except OSError:
        return False


def apply_identity(process: ProcessObject, where: str = "process") -> None:
    """Bounding set, then the user with capabilities kept across setuid, then the cap sets."""
    sets = CapabilitySets(process.get("capabilities"))
    if linux.capget()[0] & (1 << CAP_SETPCAP):
        drop_bounding_set(sets)
    linux.keep_capabilities(True)
    set_user(process.get("user") or {}, where)
    linux.keep_capabilities(False)
    try:
        linux.capset(sets.effective, sets.permitted, sets.inheritable)
    except OSError as err:
        raise HandcarError(f"{where}.capabilities: capset: {_errtext(err)}") from None
    linux.ambient_clear()
    for cap in sets.ambient:
        try:
            linux.ambient_raise(cap)
        except OSError:
            pass  # runc too ignores ambient caps outside the permitted/inheritable sets
    umask = (process.get("user") or {}).get("umask")
    os.umask(0o022 if umask is None else umask)


def enter_cwd(process: ProcessObject, where: str = "process") -> None:
    """chdir to process.cwd and prove it lies inside the container's root.

    A leaked host directory fd used as cwd (CVE-2024-21626) would leave getcwd() unreachable.
    """
    cwd = process.get("cwd", "/")
    try:
        os.chdir(cwd)
        reached = os.getcwd()
    except OSError as err:
        raise HandcarError(f"{where}.cwd: chdir to {cwd}: {_errtext(err)}") from None
    if not reached.startswith("/"):
        raise HandcarError(f"{where}.cwd: {cwd} lies outside the container")


def home_of(uid: int) -> str:
    """HOME from the container's /etc/passwd, "/" without an entry (runc's fallback)."""
    try:
        with open("/etc/passwd", "rb") as f:
            for line in f:
                fields = line.decode(errors="replace").rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def exec_environment(env: list[str]) -> dict[str, str]:
    """The process's environment as execve wants it, completed the way runc completes it:
    HOME from /etc/passwd when missing, and LISTEN_PID naming this very process when socket
    activation (LISTEN_FDS) passes fds in."""
    result: dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        result[key] = value
    if "LISTEN_FDS" in result:
        result["LISTEN_PID"] = str(os.getpid())
    if "HOME" not in result:
        result["HOME"] = home_of(os.getuid())
    return result


def close_fds_from(first: int, keep: set[int]) -> None:
    """Close every fd >= first but `keep`. Closing, not only marking close-on-exec: a host fd
    still open during setup could become the process's cwd (CVE-2024-21626)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def uses_security_settings(process: ProcessObject) -> bool:
    return "personality" in process or "scheduler" in process or "ioPriority" in process


def prepare(
    process: ProcessObject,
    container_id: str,
    new_keyring: bool,
    load_seccomp_early: Callable[[], None] | None,
) -> str:
    """Apply the process settings in the spec's order, short of the exec itself; return the
    executable's path. Shared by the container's init and by exec.

    `load_seccomp_early` runs where the filter must go on when no_new_privs is off: loading
    it then needs CAP_SYS_ADMIN, so before the capabilities are dropped (runc's order). With
    no_new_privs the caller loads the filter last, just before the exec.
    """
    if new_keyring:
        try:
            linux.join_session_keyring(f"_ses.{container_id}")
        except OSError:
            pass  # keyrings may be unavailable (ENOSYS, EDQUOT); runc ignores that too
    check_lsm(process)
    set_rlimits(process)
    set_oom_score_adj(process)
    if uses_security_settings(process):
        from handcar.init.security import apply_process_security

        apply_process_security(process)
    if process.get("noNewPrivileges"):
        linux.set_no_new_privs()
    elif load_seccomp_early is not None:
        load_seccomp_early()
    apply_identity(process)
    enter_cwd(process)
    return find_executable(process["args"][0], process.get("env") or [])
