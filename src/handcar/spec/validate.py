"""The OCI runtime configuration: loading, validation and the default `spec`.

A config stays the plain dict parsed from config.json; validation walks it once and raises a
ConfigError whose message names the JSON field (`config.json: process.args: must be ...`).
"""

from __future__ import annotations

from handcar import jsonio
from handcar.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from handcar.spec.types import Spec

    Json = dict[str, Any]

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
HOOK_KINDS = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)
ROOTFS_PROPAGATIONS = (
    "shared",
    "slave",
    "private",
    "unbindable",
    "rshared",
    "rslave",
    "rprivate",
    "runbindable",
)
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


class Checker:
    """Type checks that name the field at fault; `source` prefixes every message."""

    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {problem}")

    def obj(self, value: object, where: str) -> Json:
        if not isinstance(value, dict):
            raise self.fail(where, "must be an object")
        return value

    def opt_obj(self, parent: Json, key: str, where: str) -> Json | None:
        value = parent.get(key)
        return None if value is None else self.obj(value, where)

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, "must be a string")
        return value

    def abs_path(self, value: object, where: str) -> str:
        path = self.string(value, where)
        if not path.startswith("/"):
            raise self.fail(where, f"must be an absolute path, not {path!r}")
        return path

    def boolean(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "must be true or false")
        return value

    def integer(self, value: object, where: str, minimum: int | None = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(where, "must be an integer")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"must be at least {minimum}, not {value}")
        return value

    def array(self, value: object, where: str) -> list[object]:
        if not isinstance(value, list):
            raise self.fail(where, "must be an array")
        return value

    def strings(self, value: object, where: str) -> list[str]:
        items = self.array(value, where)
        for i, item in enumerate(items):
            self.string(item, f"{where}[{i}]")
        return items  # type: ignore[return-value]

    def string_map(self, value: object, where: str) -> dict[str, str]:
        mapping = self.obj(value, where)
        for key, item in mapping.items():
            self.string(item, f"{where}.{key}")
        return mapping

    def choice(self, value: object, where: str, choices: tuple[str, ...]) -> str:
        text = self.string(value, where)
        if text not in choices:
            raise self.fail(where, f"unknown value {text!r} (expected one of {', '.join(choices)})")
        return text


def check_process(process: Json, check: Checker, where: str = "process") -> None:
    """Validate a process object (config.json's, or an exec's process.json)."""
    args = process.get("args")
    if not isinstance(args, list) or not args:
        raise check.fail(f"{where}.args", "must be a non-empty array")
    check.strings(args, f"{where}.args")
    if "env" in process:
        for i, entry in enumerate(check.strings(process["env"], f"{where}.env")):
            if "=" not in entry:
                raise check.fail(f"{where}.env[{i}]", f"must be KEY=VALUE, not {entry!r}")
    if "cwd" in process:
        check.abs_path(process["cwd"], f"{where}.cwd")
    for key in ("terminal", "noNewPrivileges"):
        if key in process:
            check.boolean(process[key], f"{where}.{key}")
    _check_user(process, check, where)
    _check_capabilities(process, check, where)
    _check_rlimits(process, check, where)
    size = check.opt_obj(process, "consoleSize", f"{where}.consoleSize")
    if size is not None:
        for key in ("height", "width"):
            check.integer(size.get(key, 0), f"{where}.consoleSize.{key}", 0)
    if "oomScoreAdj" in process:
        score = check.integer(process["oomScoreAdj"], f"{where}.oomScoreAdj")
        if not -1000 <= score <= 1000:
            raise check.fail(f"{where}.oomScoreAdj", f"must be between -1000 and 1000, not {score}")
    for key in ("apparmorProfile", "selinuxLabel"):
        if key in process:
            check.string(process[key], f"{where}.{key}")
    if "personality" in process or "scheduler" in process or "ioPriority" in process:
        from handcar.spec.process_security import check_process_security

        check_process_security(process, check, where)


def _check_user(process: Json, check: Checker, where: str) -> None:
    user = check.opt_obj(process, "user", f"{where}.user")
    if user is None:
        return
    for key in ("uid", "gid", "umask"):
        if key in user:
            check.integer(user[key], f"{where}.user.{key}", 0)
    if "additionalGids" in user:
        gids = check.array(user["additionalGids"], f"{where}.user.additionalGids")
        for i, gid in enumerate(gids):
            check.integer(gid, f"{where}.user.additionalGids[{i}]", 0)


def _check_capabilities(process: Json, check: Checker, where: str) -> None:
    caps = check.opt_obj(process, "capabilities", f"{where}.capabilities")
    if caps is None:
        return
    for key, names in caps.items():
        if key not in CAPABILITY_SETS:
            raise check.fail(f"{where}.capabilities.{key}", "unknown capability set")
        for i, name in enumerate(check.strings(names, f"{where}.capabilities.{key}")):
            if not name.startswith("CAP_"):
                raise check.fail(f"{where}.capabilities.{key}[{i}]", f"unknown capability {name!r}")


def _check_rlimits(process: Json, check: Checker, where: str) -> None:
    if "rlimits" not in process:
        return
    seen: set[str] = set()
    for i, item in enumerate(check.array(process["rlimits"], f"{where}.rlimits")):
        at = f"{where}.rlimits[{i}]"
        rlimit = check.obj(item, at)
        kind = check.string(rlimit.get("type"), f"{at}.type")
        if kind not in RLIMITS:
            raise check.fail(f"{at}.type", f"unknown rlimit {kind!r}")
        if kind in seen:
            raise check.fail(f"{at}.type", f"duplicate rlimit {kind!r}")
        seen.add(kind)
        soft = check.integer(rlimit.get("soft"), f"{at}.soft", 0)
        hard = check.integer(rlimit.get("hard"), f"{at}.hard", 0)
        if soft > hard:
            raise check.fail(at, f"soft limit {soft} is above the hard limit {hard}")


RLIMITS = {
    "RLIMIT_CPU": 0,
    "RLIMIT_FSIZE": 1,
    "RLIMIT_DATA": 2,
    "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6,
    "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14,
    "RLIMIT_RTTIME": 15,
}


def _check_mounts(config: Json, check: Checker) -> None:
    for i, item in enumerate(check.array(config.get("mounts", []), "mounts")):
        at = f"mounts[{i}]"
        mount = check.obj(item, at)
        check.abs_path(mount.get("destination"), f"{at}.destination")
        for key in ("type", "source"):
            if key in mount:
                check.string(mount[key], f"{at}.{key}")
        if "options" in mount:
            check.strings(mount["options"], f"{at}.options")


def _check_hooks(config: Json, check: Checker) -> None:
    hooks = check.opt_obj(config, "hooks", "hooks")
    if hooks is None:
        return
    for kind, entries in hooks.items():
        if kind not in HOOK_KINDS:
            raise check.fail(f"hooks.{kind}", "unknown hook kind")
        for i, item in enumerate(check.array(entries, f"hooks.{kind}")):
            at = f"hooks.{kind}[{i}]"
            hook = check.obj(item, at)
            check.abs_path(hook.get("path"), f"{at}.path")
            for key in ("args", "env"):
                if key in hook:
                    check.strings(hook[key], f"{at}.{key}")
            if "timeout" in hook:
                check.integer(hook["timeout"], f"{at}.timeout", 1)


def _check_namespaces(linux: Json, check: Checker) -> None:
    seen: set[str] = set()
    for i, item in enumerate(check.array(linux.get("namespaces", []), "linux.namespaces")):
        at = f"linux.namespaces[{i}]"
        ns = check.obj(item, at)
        kind = check.choice(ns.get("type"), f"{at}.type", NAMESPACE_TYPES)
        if kind in seen:
            raise check.fail(f"{at}.type", f"duplicate namespace {kind!r}")
        seen.add(kind)
        if "path" in ns:
            check.abs_path(ns["path"], f"{at}.path")
    for key in ("uidMappings", "gidMappings"):
        for i, item in enumerate(check.array(linux.get(key, []), f"linux.{key}")):
            at = f"linux.{key}[{i}]"
            mapping = check.obj(item, at)
            for field in ("containerID", "hostID", "size"):
                check.integer(mapping.get(field), f"{at}.{field}", 0)
    if (linux.get("uidMappings") or linux.get("gidMappings")) and "user" not in seen:
        raise check.fail("linux.uidMappings", "user mappings need a user namespace")


def _check_devices(linux: Json, check: Checker) -> None:
    for i, item in enumerate(check.array(linux.get("devices", []), "linux.devices")):
        at = f"linux.devices[{i}]"
        device = check.obj(item, at)
        check.abs_path(device.get("path"), f"{at}.path")
        kind = check.choice(device.get("type"), f"{at}.type", ("c", "b", "u", "p"))
        if kind != "p":
            check.integer(device.get("major"), f"{at}.major", 0)
            check.integer(device.get("minor"), f"{at}.minor", 0)
        for key in ("fileMode", "uid", "gid"):
            if key in device:
                check.integer(device[key], f"{at}.{key}", 0)


def _check_linux(config: Json, check: Checker) -> None:
    linux = check.opt_obj(config, "linux", "linux")
    if linux is None:
        return
    _check_namespaces(linux, check)
    _check_devices(linux, check)
    if "timeOffsets" in linux:
        from handcar.spec.process_security import check_time_offsets

        check_time_offsets(linux, check)
    if "cgroupsPath" in linux:
        check.string(linux["cgroupsPath"], "linux.cgroupsPath")
    if "resources" in linux:
        check.obj(linux["resources"], "linux.resources")
    if "sysctl" in linux:
        check.string_map(linux["sysctl"], "linux.sysctl")
    for key in ("maskedPaths", "readonlyPaths"):
        if key in linux:
            for i, path in enumerate(check.strings(linux[key], f"linux.{key}")):
                check.abs_path(path, f"linux.{key}[{i}]")
    if "rootfsPropagation" in linux:
        check.choice(linux["rootfsPropagation"], "linux.rootfsPropagation", ROOTFS_PROPAGATIONS)
    if "seccomp" in linux:
        check.obj(linux["seccomp"], "linux.seccomp")


def validate(config: object, source: str = "config.json", need_process: bool = True) -> Spec:
    check = Checker(source)
    cfg: Any = check.obj(config, "(top level)")  # untrusted JSON, until checked below
    if "ociVersion" in cfg:
        check.string(cfg["ociVersion"], "ociVersion")
    root = check.opt_obj(cfg, "root", "root")
    if root is None:
        raise check.fail("root", "is required")
    path = root.get("path")
    if not isinstance(path, str) or not path:
        raise check.fail("root.path", "must be a non-empty string")
    if "readonly" in root:
        check.boolean(root["readonly"], "root.readonly")
    process = check.opt_obj(cfg, "process", "process")
    if process is not None:
        check_process(process, check)
    elif need_process:
        raise check.fail("process", "is required")
    for key in ("hostname", "domainname"):
        if key in cfg:
            check.string(cfg[key], key)
    if "annotations" in cfg:
        check.string_map(cfg["annotations"], "annotations")
    _check_mounts(cfg, check)
    _check_hooks(cfg, check)
    _check_linux(cfg, check)
    for key in ("hostname", "domainname"):
        # runc refuses these without a UTS namespace rather than rename the host (or ignore
        # them): a host-network CRI pod must not carry a hostname.
        if cfg.get(key) and "uts" not in namespaces(cfg):
            raise check.fail(key, f"unable to set {key} without a private UTS namespace")
    linux = cfg.get("linux") or {}
    if linux.get("sysctl"):
        from handcar.spec.sysctl import check_sysctls

        check_sysctls(linux, check)
    checked: Spec = cfg
    return checked


def load_config(bundle: str) -> Spec:
    """Read and validate BUNDLE/config.json."""
    path = bundle + "/config.json"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config.json: no such file in bundle {bundle}") from None
    except OSError as err:
        raise ConfigError(f"config.json: cannot read {path}: {err.strerror}") from None
    return validate(jsonio.loads(raw, "config.json"))


def namespaces(config: Spec) -> dict[str, str]:
    """The namespace types the config names, each with its `path` ("" means create a new one)."""
    linux = config.get("linux") or {}
    entries = linux.get("namespaces", []) if isinstance(linux, dict) else []
    return {ns["type"]: ns.get("path", "") for ns in entries}
