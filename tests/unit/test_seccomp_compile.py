"""seccomp compile, in this process: the BPF program, bad input named by field, the cache,
serialization, the features section and the import cost. Loading filters into real processes
is tests/integration/test_seccomp.py."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handcar.errors import ConfigError
from handcar.linux import libseccomp as scmp
from handcar.seccomp import compile as seccomp

# ---------------------------------------------------------------------------------------------
# the ENOSYS stub


def test_no_stub_when_the_default_allows() -> None:
    section = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]}
    plain = seccomp.compile_filter(section, cache_dir=False)
    rule = {"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}
    denying = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"]}
    stubbed = seccomp.compile_filter({**denying, "syscalls": [rule]}, cache_dir=False)
    assert seccomp.enosys_stub([scmp.AUDIT_ARCH_X86_64], ["getppid"]) != b""
    assert stubbed.program.startswith(seccomp.enosys_stub([scmp.AUDIT_ARCH_X86_64], ["getppid"]))
    assert not plain.program.startswith(stubbed.program[:64])
    assert seccomp.enosys_stub([scmp.AUDIT_ARCH_X86_64], ["read"]) == b""  # read is 0: runc too


def test_rule_equal_to_default_is_dropped() -> None:
    section = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}],
    }
    assert seccomp.compile_filter(section, cache_dir=False).program


# ---------------------------------------------------------------------------------------------
# bad input

BAD_SECTIONS = [
    (
        {"defaultAction": "SCMP_ACT_FOO"},
        'linux.seccomp.defaultAction: unknown action "SCMP_ACT_FOO"',
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["read"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["read"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["read"], "action": "SCMP_ACT_FOO"},
            ],
        },
        'linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_FOO"',
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {
                    "names": ["read"],
                    "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}],
                }
            ],
        },
        'linux.seccomp.syscalls[0].args[0].op: unknown operator "SCMP_CMP_XX"',
    ),
    (
        {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]},
        'linux.seccomp.architectures[0]: unknown architecture "SCMP_ARCH_Z80"',
    ),
    (
        {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]},
        'linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_NOPE"',
    ),
    (
        {"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
        "linux.seccomp.defaultErrnoRet: is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_KILL", "errnoRet": 1}],
        },
        "linux.seccomp.syscalls[0].errnoRet: is only valid with",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {
                    "names": ["read"],
                    "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}],
                }
            ],
        },
        "linux.seccomp.syscalls[0].args[0].index: must be an unsigned integer up to 5",
    ),
    (
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_LOG"}]},
        "linux.seccomp.syscalls[0].names: must name at least one syscall",
    ),
    (
        {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000},
        "linux.seccomp.defaultErrnoRet: must be an unsigned integer up to 65535",
    ),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot"),
    (
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}],
        },
        "linux.seccomp.listenerPath: must be set when SCMP_ACT_NOTIFY is used",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/x",
            "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}],
        },
        "linux.seccomp.syscalls[0].action: SCMP_ACT_NOTIFY cannot be used for write",
    ),
    ("not an object", "linux.seccomp: must be an object"),
]


@pytest.mark.parametrize(("section", "message"), BAD_SECTIONS)
def test_bad_input_names_the_field(section: dict[str, object], message: str) -> None:
    with pytest.raises(seccomp.SeccompError) as caught:
        seccomp.compile_filter(section, cache_dir=False)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ConfigError)


# ---------------------------------------------------------------------------------------------
# cache, serialization, features, imports


def test_cache_hit_skips_compiling_and_rejects_tampering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["swapon"], "action": "SCMP_ACT_ERRNO"}],
    }
    first = seccomp.compile_filter(section, cache_dir=str(tmp_path))
    (entry,) = list(tmp_path.iterdir())
    assert entry.stat().st_mode & 0o777 == 0o600
    monkeypatch.setattr(seccomp, "_compile", lambda *a: pytest.fail("compiled despite the cache"))
    assert seccomp.compile_filter(section, cache_dir=str(tmp_path)) == first
    # Another section never reads this entry, even under the same name.
    other = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}],
    }
    shutil.copy(
        entry,
        tmp_path / seccomp._cache_path(str(tmp_path), seccomp._cache_key(other)).split("/")[-1],
    )
    with pytest.raises(pytest.fail.Exception):
        seccomp.compile_filter(other, cache_dir=str(tmp_path))
    entry.chmod(0o622)  # writable by others: not trusted
    with pytest.raises(pytest.fail.Exception):
        seccomp.compile_filter(section, cache_dir=str(tmp_path))


def test_unwritable_cache_is_skipped(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    section = {"defaultAction": "SCMP_ACT_ALLOW"}
    assert seccomp.compile_filter(section, cache_dir=str(blocker / "sub")).program


def test_compiled_filter_round_trips() -> None:
    compiled = seccomp.CompiledFilter(b"\x06\x00\x00\x00\x00\x00\xff\x7f", 6, True)
    assert seccomp.CompiledFilter.from_bytes(compiled.to_bytes()) == compiled
    assert pickle.loads(pickle.dumps(compiled)) == compiled
    with pytest.raises(ValueError):
        seccomp.CompiledFilter.from_bytes(b"garbage")


def test_features_section() -> None:
    features: dict[str, Any] = dict(seccomp.features_section())
    assert features["enabled"] is True
    assert "SCMP_ACT_NOTIFY" in features["actions"]
    assert "SCMP_CMP_MASKED_EQ" in features["operators"]
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"} <= set(features["archs"])
    assert set(features["supportedFlags"]) <= set(features["knownFlags"])
    assert "SECCOMP_FILTER_FLAG_LOG" in features["supportedFlags"]
    assert seccomp.libseccomp_version().count(".") == 2


def test_import_is_light() -> None:
    src = str(Path(seccomp.__file__).parents[2])
    code = f"import sys; sys.path.insert(0, {src!r}); import handcar.seccomp.compile"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert not imported & {
        "typing",
        "re",
        "enum",
        "json",
        "dataclasses",
        "logging",
        "subprocess",
        "socket",
        "hashlib",
    }
