"""The OCI `linux.seccomp` section: compile it in the runtime, load it in the container init.

Order of use (the init's part is deliberately tiny):
1. Runtime process, before fork: `compiled = compile_filter(section)`. This validates the whole
   section (raising SeccompError that names the JSON field), builds the filter with libseccomp,
   exports it as classic BPF and prepends runc's -ENOSYS stub. The result is cached on disk.
2. Container init, as late as possible before exec (after mounts, hostname, capabilities'
   bounding set work, so those syscalls need not be allowed by the profile), and while still
   privileged when `process.noNewPrivileges` is false (then the kernel requires CAP_SYS_ADMIN):
   `fd = load_filter(compiled)`. It makes exactly one syscall and maps no library.
3. If `fd` is not None (an action is SCMP_ACT_NOTIFY), the init hands the fd to the runtime
   (SCM_RIGHTS over its init channel, handcar.init.listener), and the runtime
   calls `send_listener_fd(section["listenerPath"], fd, state_json, metadata)`. The init must
   not make a notified syscall before the agent has the fd, or it blocks.

Behaviour follows runc 1.1: unknown syscall names are skipped, a rule whose action equals the
default action is dropped, several conditions on one argument index become separate rules (an
OR), SCMP_ACT_KILL means kill-thread, ERRNO and TRACE default to EPERM, SECCOMP_FILTER_FLAG_TSYNC
is accepted and ignored, and syscalls newer than any the profile names get ENOSYS.
"""

from __future__ import annotations

import os

from handcar.errors import ConfigError
from handcar.linux import libseccomp as scmp

TYPE_CHECKING = False  # typing costs an import at run time; mypy treats this name as True
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from handcar.spec.types import LinuxSeccomp, SeccompFeatures

EPERM = 1
ENOSYS = 38

# OCI action name -> libseccomp action value (ERRNO and TRACE get their errno OR-ed in).
ACTIONS = {
    "SCMP_ACT_KILL": scmp.SCMP_ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": scmp.SCMP_ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": scmp.SCMP_ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": scmp.SCMP_ACT_TRAP,
    "SCMP_ACT_ERRNO": scmp.SCMP_ACT_ERRNO,
    "SCMP_ACT_TRACE": scmp.SCMP_ACT_TRACE,
    "SCMP_ACT_ALLOW": scmp.SCMP_ACT_ALLOW,
    "SCMP_ACT_LOG": scmp.SCMP_ACT_LOG,
    "SCMP_ACT_NOTIFY": scmp.SCMP_ACT_NOTIFY,
}
_ACTIONS_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
# Actions for which runc adds no -ENOSYS stub: a default that lets syscalls through should let
# unknown ones through too (a tracer handles ENOSYS itself).
_PERMISSIVE_ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")

OPERATORS = {
    "SCMP_CMP_NE": scmp.SCMP_CMP_NE,
    "SCMP_CMP_LT": scmp.SCMP_CMP_LT,
    "SCMP_CMP_LE": scmp.SCMP_CMP_LE,
    "SCMP_CMP_EQ": scmp.SCMP_CMP_EQ,
    "SCMP_CMP_GE": scmp.SCMP_CMP_GE,
    "SCMP_CMP_GT": scmp.SCMP_CMP_GT,
    "SCMP_CMP_MASKED_EQ": scmp.SCMP_CMP_MASKED_EQ,
}

# OCI architecture name -> the name libseccomp resolves with seccomp_arch_resolve_name.
ARCHS = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
}

# OCI flag name -> seccomp(2) flag bit. TSYNC is 0: like runc we accept and ignore it, since the
# init is single-threaded when it loads the filter (and TSYNC conflicts with NEW_LISTENER).
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 0,
    "SECCOMP_FILTER_FLAG_LOG": scmp.SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": scmp.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": scmp.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

_MAX_ARGS = 6  # a Linux syscall has at most six arguments
_U64 = (1 << 64) - 1
# runc turns on libseccomp's binary-tree layout above this many syscall entries.
_OPTIMIZE_THRESHOLD = 32
_FORMAT = b"HCSC1\n"  # serialized CompiledFilter; bump when the layout or the compiler changes


class SeccompError(ConfigError, ValueError):
    """An invalid linux.seccomp section; the message starts with the JSON path of the field.
    A ConfigError, so the CLI reports it like any other bad config.json field."""


class CompiledFilter:
    """A filter ready for seccomp(2): the BPF program, the filter flags, and whether the load
    returns a notify listener fd."""

    __slots__ = ("program", "flags", "needs_listener")

    def __init__(self, program: bytes, flags: int, needs_listener: bool) -> None:
        self.program = program
        self.flags = flags
        self.needs_listener = needs_listener

    def __repr__(self) -> str:
        return (
            f"CompiledFilter({len(self.program) // 8} insns, flags={self.flags:#x}, "
            f"needs_listener={self.needs_listener})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompiledFilter):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Callable[[bytes], CompiledFilter], tuple[bytes]]:
        return (CompiledFilter.from_bytes, (self.to_bytes(),))

    def to_bytes(self) -> bytes:
        header = b"%s%d %d\n" % (_FORMAT, self.flags, int(self.needs_listener))
        return header + self.program

    @classmethod
    def from_bytes(cls, data: bytes) -> CompiledFilter:
        if not data.startswith(_FORMAT):
            raise ValueError("not a serialized handcar seccomp filter")
        end = data.index(b"\n", len(_FORMAT))
        flags, listener = data[len(_FORMAT) : end].split()
        program = data[end + 1 :]
        if not program or len(program) % 8:
            raise ValueError("truncated seccomp program")
        return cls(program, int(flags), listener == b"1")


# ---------------------------------------------------------------------------------------------
# Validation: the section as JSON -> plain tuples, every error naming its field.


class _Rule:
    """One syscall name with its action and conditions, as runc's configs.Syscall has it."""

    __slots__ = ("name", "action_name", "action", "conds", "where")

    def __init__(
        self,
        name: str,
        action_name: str,
        action: int,
        conds: list[tuple[int, int, int, int]],
        where: str,
    ) -> None:
        self.name = name
        self.action_name = action_name
        self.action = action
        self.conds = conds
        self.where = where


def _quoted(value: object) -> str:
    """A JSON-looking rendering of a bad value for messages: strings in double quotes."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _fail(where: str, message: str) -> SeccompError:
    return SeccompError(f"{where}: {message}")


def _uint(value: object, where: str, limit: int = _U64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise _fail(where, f"must be an unsigned integer up to {limit}, not {value!r}")
    return value


def _list(value: object, where: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, f"must be an array, not {type(value).__name__}")
    return value


def _action(name: object, errno_ret: object, where: str, errno_field: str) -> int:
    """The libseccomp action value for an OCI action name and its optional errno."""
    if not isinstance(name, str) or name not in ACTIONS:
        raise _fail(where, f"unknown action {_quoted(name)}")
    value = ACTIONS[name]
    if name in _ACTIONS_WITH_ERRNO:
        errno = EPERM if errno_ret is None else _uint(errno_ret, errno_field, 0xFFFF)
        return value | errno
    if errno_ret is not None:
        # The spec: when the action doesn't support an errno, the runtime MUST fail.
        raise _fail(errno_field, f"is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {name}")
    return value


def _conditions(args: object, where: str) -> list[tuple[int, int, int, int]]:
    conds = []
    for i, arg in enumerate(_list(args, where)):
        at = f"{where}[{i}]"
        if not isinstance(arg, dict):
            raise _fail(at, "must be an object")
        index = _uint(arg.get("index"), f"{at}.index", _MAX_ARGS - 1)
        op_name = arg.get("op")
        if not isinstance(op_name, str) or op_name not in OPERATORS:
            raise _fail(f"{at}.op", f"unknown operator {_quoted(op_name)}")
        value = _uint(arg.get("value"), f"{at}.value")
        value_two = _uint(arg.get("valueTwo", 0), f"{at}.valueTwo")
        conds.append((index, OPERATORS[op_name], value, value_two))
    return conds


def _rules(section: Mapping[str, object], where: str) -> list[_Rule]:
    rules = []
    for i, entry in enumerate(_list(section.get("syscalls"), f"{where}.syscalls")):
        at = f"{where}.syscalls[{i}]"
        if not isinstance(entry, dict):
            raise _fail(at, "must be an object")
        names = _list(entry.get("names"), f"{at}.names")
        if not names:
            raise _fail(f"{at}.names", "must name at least one syscall")
        action_name = entry.get("action")
        action = _action(action_name, entry.get("errnoRet"), f"{at}.action", f"{at}.errnoRet")
        conds = _conditions(entry.get("args"), f"{at}.args")
        for j, name in enumerate(names):
            if not isinstance(name, str) or not name:
                raise _fail(f"{at}.names[{j}]", f"must be a syscall name, not {name!r}")
            rules.append(_Rule(name, str(action_name), action, conds, at))
    return rules


def _arches(section: Mapping[str, object], where: str) -> list[int]:
    tokens = []
    for i, name in enumerate(_list(section.get("architectures"), f"{where}.architectures")):
        at = f"{where}.architectures[{i}]"
        token = scmp.arch_token(ARCHS[name]) if isinstance(name, str) and name in ARCHS else 0
        if not token:
            raise _fail(at, f"unknown architecture {_quoted(name)}")
        tokens.append(token)
    return tokens


def _flags(section: Mapping[str, object], where: str, needs_listener: bool) -> int:
    bits = 0
    for i, name in enumerate(_list(section.get("flags"), f"{where}.flags")):
        at = f"{where}.flags[{i}]"
        if not isinstance(name, str) or name not in FLAGS:
            raise _fail(at, f"unknown flag {_quoted(name)}")
        bit = FLAGS[name]
        if bit == scmp.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV and not needs_listener:
            continue  # it only changes how a listener waits; the kernel refuses it without one
        probe = bit | (scmp.SECCOMP_FILTER_FLAG_NEW_LISTENER if needs_listener else 0)
        if bit and not scmp.filter_flags_supported(probe):
            raise _fail(at, f"{name} is not supported by this kernel")
        bits |= bit
    return bits


# ---------------------------------------------------------------------------------------------
# Compilation.


def _build_program(default_action: int, arches: list[int], rules: list[_Rule]) -> bytes:
    with scmp.Filter(default_action) as flt:
        for token in arches:
            flt.add_arch(token)
        # runc handles no_new_privs itself; the exported program does not carry it anyway.
        flt.set_attr(scmp.SCMP_FLTATR_CTL_NNP, 0)
        if len(rules) > _OPTIMIZE_THRESHOLD:
            flt.set_attr(scmp.SCMP_FLTATR_CTL_OPTIMIZE, 2)
        for rule in rules:
            _add_rule(flt, rule, default_action)
        return flt.export_bpf()


def _add_rule(flt: scmp.Filter, rule: _Rule, default_action: int) -> None:
    if rule.action == default_action:
        return  # redundant, and libseccomp refuses it
    number = scmp.resolve_syscall(rule.name)
    if number == scmp.NR_SCMP_ERROR:
        return  # unknown to libseccomp: assume this kernel lacks it, as runc does
    indexes = [cond[0] for cond in rule.conds]
    # libseccomp cannot AND two conditions on one argument; runc then adds one rule per
    # condition, which ORs them. Keep that so profiles behave the same.
    groups = [[c] for c in rule.conds] if len(set(indexes)) < len(indexes) else [rule.conds]
    for conds in groups:
        try:
            flt.add_rule(rule.action, number, conds)
        except OSError as err:
            raise _fail(rule.where, f"cannot add rule for {rule.name}: {err.strerror}") from None


def compile_filter(
    section: LinuxSeccomp | Mapping[str, object], *, cache_dir: str | bool = True
) -> CompiledFilter:
    """Validate and compile a `linux.seccomp` section. Runs in the runtime, before fork.

    The section comes straight from config.json: every field is checked here (a SeccompError
    names the one at fault), so the internals read it as an untyped Mapping.

    cache_dir: True for the default cache (/run/handcar/seccomp-cache as root, else under
    $XDG_RUNTIME_DIR), False for none, or a directory.
    """
    directory = _default_cache_dir() if cache_dir is True else (cache_dir or None)
    key = _cache_key(section) if directory else b""
    if directory:
        cached = _cache_load(directory, key)
        if cached is not None:
            return CompiledFilter.from_bytes(cached)
    compiled = _compile(section)
    if directory:
        _cache_store(directory, key, compiled.to_bytes())
    return compiled


def _compile(section: Mapping[str, object], where: str = "linux.seccomp") -> CompiledFilter:
    if not isinstance(section, dict):
        raise _fail(where, "must be an object")
    default_name = section.get("defaultAction")
    default_action = _action(
        default_name,
        section.get("defaultErrnoRet"),
        f"{where}.defaultAction",
        f"{where}.defaultErrnoRet",
    )
    if default_name == "SCMP_ACT_NOTIFY":
        # The init writes to its sync socket after loading; that write would wait on the agent.
        raise _fail(f"{where}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action")
    rules = _rules(section, where)
    needs_listener = _check_notify(section, rules, where)
    arches = _arches(section, where)
    flags = _flags(section, where, needs_listener)
    program = _build_program(default_action, arches, rules)
    if default_name not in _PERMISSIVE_ACTIONS:
        program = enosys_stub(arches, [rule.name for rule in rules]) + program
    if needs_listener:
        flags |= scmp.SECCOMP_FILTER_FLAG_NEW_LISTENER
    return CompiledFilter(program, flags, needs_listener)


def _check_notify(section: Mapping[str, object], rules: list[_Rule], where: str) -> bool:
    notify = [rule for rule in rules if rule.action_name == "SCMP_ACT_NOTIFY"]
    for rule in notify:
        if rule.name == "write":
            raise _fail(f"{rule.where}.action", "SCMP_ACT_NOTIFY cannot be used for write")
    if notify and not section.get("listenerPath"):
        raise _fail(f"{where}.listenerPath", "must be set when SCMP_ACT_NOTIFY is used")
    if section.get("listenerMetadata") and not section.get("listenerPath"):
        raise _fail(f"{where}.listenerMetadata", "must not be set without listenerPath")
    return bool(notify)


# ---------------------------------------------------------------------------------------------
# runc's -ENOSYS stub: a syscall numbered above every syscall the profile names (for its
# architecture) is newer than the profile, so it gets ENOSYS, which makes programs fall back
# (clone3 -> clone) instead of failing on the default action's EPERM.

_BPF_LD_W_ABS = 0x20
_BPF_JA = 0x05
_BPF_JEQ = 0x15
_BPF_JGT = 0x25
_BPF_JSET = 0x45
_BPF_RET = 0x06
_OFFSET_NR = 0
_OFFSET_ARCH = 4

# An instruction before label resolution: (code, jump-if-true, jump-if-false, k). A jump target
# is an int offset or a label name; for BPF_JA the target is in k.
_Insn = tuple[int, "int | str", "int | str", "int | str"]


def _audit_arch(token: int) -> int:
    """The AUDIT_ARCH the kernel reports for a libseccomp arch: they agree except for x32."""
    return scmp.AUDIT_ARCH_X86_64 if token == scmp.arch_token("x32") else token


def _last_syscalls(arches: list[int], names: list[str]) -> dict[int, dict[int, int]]:
    """audit arch -> {libseccomp arch token -> highest syscall number the profile names}."""
    last: dict[int, dict[int, int]] = {}
    for token in arches:
        numbers = [scmp.resolve_syscall_arch(token, name) for name in set(names)]
        highest = max([n for n in numbers if n > 0], default=0)
        if highest:
            last.setdefault(_audit_arch(token), {})[token] = highest
    return last


def _section(audit: int, highest: dict[int, int]) -> list[_Insn]:
    x32 = scmp.arch_token("x32")
    insns: list[_Insn] = [(_BPF_LD_W_ABS, 0, 0, _OFFSET_NR)]
    if audit in (scmp.arch_token("s390"), scmp.arch_token("s390x")):
        # syscall 0 multiplexes numbers the kernel does not know on s390: answer ENOSYS.
        insns.append((_BPF_JEQ, "enosys", 0, 0))
    if audit != scmp.AUDIT_ARCH_X86_64:
        (limit,) = highest.values()
        return insns + [(_BPF_JGT, "enosys", 0, limit), (_BPF_JA, 0, 0, "filter")]
    native = highest.get(scmp.AUDIT_ARCH_X86_64)
    compat = highest.get(x32)
    # The x32 ABI sets bit 30 of the number; a mode the profile does not cover goes on to the
    # filter unpatched.
    insns.append((_BPF_JSET, 2 if compat else "filter", 0, scmp.X32_SYSCALL_BIT))
    if native:
        insns += [(_BPF_JGT, "enosys", 0, native), (_BPF_JA, 0, 0, "filter")]
    else:
        insns += [(_BPF_JA, 0, 0, "filter"), (_BPF_JA, 0, 0, "filter")]
    if compat:
        insns += [(_BPF_JGT, "enosys", 0, compat), (_BPF_JA, 0, 0, "filter")]
    return insns


def enosys_stub(arches: list[int], names: list[str]) -> bytes:
    """The stub runc prepends to the libseccomp program, as BPF bytes ("" when nothing to do)."""
    last = _last_syscalls(arches, names)
    if not last:
        return b""
    insns: list[_Insn] = [(_BPF_LD_W_ABS, 0, 0, _OFFSET_ARCH)]
    insns += [(_BPF_JEQ, f"arch{audit}", 0, audit) for audit in sorted(last)]
    insns.append((_BPF_JA, 0, 0, "filter"))
    labels: dict[str, int] = {}
    for audit in sorted(last):
        labels[f"arch{audit}"] = len(insns)
        insns += _section(audit, last[audit])
    labels["enosys"] = len(insns)
    insns.append((_BPF_RET, 0, 0, scmp.SECCOMP_RET_ERRNO | ENOSYS))
    labels["filter"] = len(insns)
    return _assemble(insns, labels)


def _assemble(insns: list[_Insn], labels: dict[str, int]) -> bytes:
    import struct

    def offset(target: int | str, at: int) -> int:
        if isinstance(target, int):
            return target
        distance = labels[target] - at - 1
        if not 0 <= distance <= 255 and insns[at][0] != _BPF_JA:
            raise ValueError("seccomp stub jump out of range")
        return distance

    out = []
    for at, (code, jt, jf, k) in enumerate(insns):
        if code == _BPF_JA:
            out.append(struct.pack("=HBBI", code, 0, 0, offset(k, at)))
        else:
            out.append(struct.pack("=HBBI", code, offset(jt, at), offset(jf, at), offset(k, at)))
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# `handcar features`.


def libseccomp_version() -> str:
    return ".".join(str(part) for part in scmp.version())


def features_section() -> SeccompFeatures:
    """The `linux.seccomp` part of `handcar features`, in runc 1.2's shape."""
    known = list(FLAGS)
    supported = [name for name in known if _flag_usable(FLAGS[name])]
    return {
        "enabled": True,
        "actions": sorted(ACTIONS),
        "operators": sorted(OPERATORS),
        "archs": sorted(name for name, lib_name in ARCHS.items() if scmp.arch_token(lib_name)),
        "knownFlags": known,
        "supportedFlags": supported,
    }


def _flag_usable(bit: int) -> bool:
    if bit == 0:
        return True  # TSYNC: accepted and ignored
    if bit == scmp.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV:
        bit |= scmp.SECCOMP_FILTER_FLAG_NEW_LISTENER
    return scmp.filter_flags_supported(bit)


# ---------------------------------------------------------------------------------------------
# The on-disk cache of compiled filters.
#
# A file holds the full key next to the program, and a read compares the key byte for byte, so a
# hash collision can never hand a container the wrong filter. The key covers the section, the
# libseccomp version, the native arch, the kernel (flag support is probed at compile time) and
# the format of this compiler.

DEFAULT_CACHE_DIR = "/run/handcar/seccomp-cache"


def _default_cache_dir() -> str | None:
    if os.geteuid() == 0:
        return DEFAULT_CACHE_DIR
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return f"{runtime_dir}/handcar/seccomp-cache" if runtime_dir else None


def _canonical(value: object, out: list[str]) -> None:
    """A deterministic text of JSON-like data (sorted keys), without the json module's import."""
    if isinstance(value, dict):
        out.append("{")
        for key in sorted(value):
            out.append(repr(key))
            out.append(":")
            _canonical(value[key], out)
            out.append(",")
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for item in value:
            _canonical(item, out)
            out.append(",")
        out.append("]")
    else:
        out.append(repr(value))


def _cache_key(section: Mapping[str, object]) -> bytes:
    text: list[str] = []
    _canonical(section, text)
    environment = f"{_FORMAT!r} libseccomp {scmp.version()} arch {scmp.native_arch()} "
    return (environment + os.uname().release + "\n" + "".join(text)).encode()


def _cache_path(directory: str, key: bytes) -> str:
    try:
        # The builtin module: hashlib would cost ~10 ms to import.
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - interpreters built without it
        from hashlib import sha256
    return f"{directory}/{sha256(key).hexdigest()}"


def _cache_load(directory: str, key: bytes) -> bytes | None:
    try:
        fd = os.open(_cache_path(directory, key), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            return None  # not ours, or writable by others: do not trust it
        data = os.read(fd, info.st_size + 1)
    finally:
        os.close(fd)
    header = b"%d\n" % len(key)
    if not data.startswith(header) or data[len(header) : len(header) + len(key)] != key:
        return None
    return data[len(header) + len(key) :]


def _cache_store(directory: str, key: bytes, payload: bytes) -> None:
    """Write atomically (temp file + rename); a cache that cannot be written is simply skipped."""
    path = _cache_path(directory, key)
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"%d\n%s%s" % (len(key), key, payload))
        finally:
            os.close(fd)
        os.rename(temp, path)
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass
