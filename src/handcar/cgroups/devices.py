"""Device access rules: runc's semantics, the v1 devices.allow/deny writes, and the v2 eBPF
program that enforces the same policy.

A rule list is first reduced to a policy, the way the v1 kernel controller (and runc's
emulator) would end up after applying the rules in order: a default (allow or deny) plus a
set of exceptions. A rule of type `a` resets the policy; other rules add or remove exception
bits. Both back ends then program that single policy, so v1 and v2 behave the same.
"""

from __future__ import annotations

import struct

from handcar.cgroups.fs import CgroupError, read_optional, write_file

# typing is not imported at run time (it costs milliseconds on every container start).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.spec.types import LinuxDeviceCgroup

WILDCARD = -1
FIELD = "linux.resources.devices"

# runc's AllowedDevices, appended after the config's own rules: mknod of anything, the
# standard character devices, /dev/pts/*, /dev/ptmx and /dev/net/tun.
DEFAULT_ALLOWED: tuple[tuple[str, int, int, str], ...] = (
    ("c", WILDCARD, WILDCARD, "m"),
    ("b", WILDCARD, WILDCARD, "m"),
    ("c", 1, 3, "rwm"),  # /dev/null
    ("c", 1, 8, "rwm"),  # /dev/random
    ("c", 1, 7, "rwm"),  # /dev/full
    ("c", 5, 0, "rwm"),  # /dev/tty
    ("c", 1, 5, "rwm"),  # /dev/zero
    ("c", 1, 9, "rwm"),  # /dev/urandom
    ("c", 136, WILDCARD, "rwm"),  # /dev/pts/*
    ("c", 5, 2, "rwm"),  # /dev/ptmx
    ("c", 10, 200, "rwm"),  # /dev/net/tun
)

Key = tuple[str, int, int]


class Policy:
    """A default action plus exceptions {(type, major, minor): access letters}."""

    __slots__ = ("default_allow", "exceptions")

    def __init__(self) -> None:
        # runc's emulator starts as a whitelist: nothing is allowed until a rule allows it.
        self.default_allow = False
        self.exceptions: dict[Key, str] = {}

    def apply(self, kind: str, major: int, minor: int, access: str, allow: bool) -> None:
        if kind == "a" and major == WILDCARD and minor == WILDCARD:
            self.default_allow = allow
            self.exceptions = {}
            return
        key = (kind, major, minor)
        if allow != self.default_allow:
            # An exception to the default: add these access bits.
            merged = set(self.exceptions.get(key, "")) | set(access)
            self.exceptions[key] = _letters(merged)
        elif key in self.exceptions:
            # Same as the default: take these bits out of the matching exception.
            left = set(self.exceptions[key]) - set(access)
            if left:
                self.exceptions[key] = _letters(left)
            else:
                del self.exceptions[key]


def _letters(bits: set[str]) -> str:
    return "".join(c for c in "rwm" if c in bits)


def parse_rules(
    rules: list[LinuxDeviceCgroup], field: str = FIELD
) -> list[tuple[str, int, int, str, bool]]:
    """OCI rules as (type, major, minor, access, allow); a missing major or minor is `*`."""
    parsed = []
    for i, rule in enumerate(rules):
        kind = rule.get("type") or "a"
        access = rule.get("access") or "rwm"
        if kind not in ("a", "b", "c") or any(c not in "rwm" for c in access):
            raise CgroupError(f"{field}[{i}]: {rule}: invalid device rule")
        major = rule.get("major")
        minor = rule.get("minor")
        parsed.append(
            (
                kind,
                WILDCARD if major is None else int(major),
                WILDCARD if minor is None else int(minor),
                access,
                bool(rule.get("allow", False)),
            )
        )
    return parsed


def container_policy(rules: list[LinuxDeviceCgroup] | None) -> Policy:
    """The policy runc gives a container: the config's rules, then runc's default devices."""
    policy = Policy()
    for kind, major, minor, access, allow in parse_rules(rules or []):
        policy.apply(kind, major, minor, access, allow)
    for kind, major, minor, access in DEFAULT_ALLOWED:
        policy.apply(kind, major, minor, access, True)
    return policy


# --- cgroup v1 -------------------------------------------------------------------------


def _rule_text(key: Key, access: str) -> str:
    kind, major, minor = key
    major_text = "*" if major == WILDCARD else str(major)
    minor_text = "*" if minor == WILDCARD else str(minor)
    return f"{kind} {major_text}:{minor_text} {access}"


def apply_v1(path: str, policy: Policy) -> None:
    """Program the v1 devices controller: reset to the default, then write each exception.

    When the cgroup already holds exactly this whitelist (an update that did not change the
    rules), nothing is written, so running processes never see a moment of denied access.
    """
    wanted = {_rule_text(k, a) for k, a in policy.exceptions.items()}
    if not policy.default_allow:
        current = read_optional(path + "/devices.list")
        if current is not None and set(current.split("\n")) - {""} == wanted and wanted:
            return
    reset_file, exception_file = (
        ("devices.allow", "devices.deny")
        if policy.default_allow
        else ("devices.deny", "devices.allow")
    )
    write_file(
        path, reset_file, "a", FIELD, f"default {'allow' if policy.default_allow else 'deny'}"
    )
    for text in sorted(wanted):
        write_file(path, exception_file, text, FIELD, text)


# --- cgroup v2: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE ----------------------

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, where access_type is
# (access << 16) | type. Types and access bits from linux/bpf.h.
_DEV_BLOCK = 1
_DEV_CHAR = 2
_ACCESS_BITS = {"m": 1, "r": 2, "w": 4}

# eBPF opcodes used below (linux/bpf_common.h, linux/bpf.h).
_LDX_MEM_W = 0x61
_MOV64_IMM = 0xB7
_MOV64_REG = 0xBF
_AND64_IMM = 0x57
_RSH64_IMM = 0x77
_JEQ_IMM = 0x15
_JNE_IMM = 0x55
_EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def _access_mask(access: str) -> int:
    mask = 0
    for c in access:
        mask |= _ACCESS_BITS[c]
    return mask


def _exception_block(key: Key, access: str, allow: bool) -> list[bytes]:
    """Instructions that return `allow` when the request matches one exception.

    Registers on entry: r2 = requested access bits, r3 = device type, r4 = major, r5 = minor.
    Each check jumps past the rest of the block when it does not match.
    """
    kind, major, minor = key
    checks: list[tuple[int, int, int]] = []  # (opcode, register, immediate), jump if true
    if kind != "a":
        checks.append((_JNE_IMM, 3, _DEV_BLOCK if kind == "b" else _DEV_CHAR))
    mask = _access_mask(access)
    access_check: list[tuple[int, int, int]] = []
    if mask != 7:
        if allow:
            # An allowed exception covers a request only if it asks for nothing else.
            access_check = [(_AND64_IMM, 1, (~mask) & 7), (_JNE_IMM, 1, 0)]
        else:
            # A denied exception catches a request that asks for any of its bits.
            access_check = [(_AND64_IMM, 1, mask), (_JEQ_IMM, 1, 0)]
    if major != WILDCARD:
        checks.append((_JNE_IMM, 4, major))
    if minor != WILDCARD:
        checks.append((_JNE_IMM, 5, minor))
    body: list[tuple[int, int, int]] = []
    if access_check:
        body.append((_MOV64_REG, 1, 2))
        body.extend(access_check)
    body.extend(checks)
    block: list[bytes] = []
    total = len(body) + 2  # the checks, then `r0 = action; exit`
    for index, (code, reg, imm) in enumerate(body):
        if code == _MOV64_REG:
            block.append(_insn(code, dst=reg, src=imm))
        elif code == _AND64_IMM:
            block.append(_insn(code, dst=reg, imm=imm))
        else:
            block.append(_insn(code, dst=reg, off=total - index - 1, imm=imm))
    block.append(_insn(_MOV64_IMM, dst=0, imm=1 if allow else 0))
    block.append(_insn(_EXIT))
    return block


def bpf_program(policy: Policy) -> bytes:
    """Compile the policy to eBPF: check each exception, else return the default."""
    program = [
        _insn(_LDX_MEM_W, dst=2, src=1, off=0),  # r2 = access_type
        _insn(_MOV64_REG, dst=3, src=2),
        _insn(_AND64_IMM, dst=3, imm=0xFFFF),  # r3 = type
        _insn(_RSH64_IMM, dst=2, imm=16),  # r2 = access
        _insn(_LDX_MEM_W, dst=4, src=1, off=4),  # r4 = major
        _insn(_LDX_MEM_W, dst=5, src=1, off=8),  # r5 = minor
    ]
    exception_allows = not policy.default_allow
    for key in sorted(policy.exceptions):
        program.extend(_exception_block(key, policy.exceptions[key], exception_allows))
    program.append(_insn(_MOV64_IMM, dst=0, imm=1 if policy.default_allow else 0))
    program.append(_insn(_EXIT))
    return b"".join(program)


def apply_v2(path: str, policy: Policy) -> None:
    """Load the program and attach it to the cgroup, replacing handcar's previous one."""
    from handcar.linux import bpf

    program = bpf_program(policy)
    try:
        bpf.replace_device_filter(path, program)
    except OSError as err:
        raise CgroupError(f"{FIELD}: {len(policy.exceptions)} rules: {err.strerror}") from err
