"""The command line: runc's flags, output formats, exit codes and error wording."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness import HANDCAR, Runtime, has_tool

COMMANDS = ["create", "start", "run", "state", "list", "kill", "delete", "spec"]


def test_version_has_runc_three_line_shape(hc: Runtime) -> None:
    result = hc("--version")
    assert result.rc == 0
    lines = result.out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("handcar version ")
    assert lines[1].startswith("commit: ")
    assert lines[2].startswith("spec: ")


def test_every_command_has_help(hc: Runtime) -> None:
    for command in COMMANDS:
        result = hc(command, "--help")
        assert result.rc == 0, (command, result)
        assert f"handcar {command}" in result.out
    assert hc("--help").rc == 0


def test_unknown_flag_and_command_are_one_line_errors(hc: Runtime) -> None:
    result = hc("state", "--bogus", "x")
    assert result.rc == 1
    assert "flag provided but not defined: -bogus" in result.err
    assert "Traceback" not in result.err
    result = hc("frobnicate")
    assert result.rc == 1 and "frobnicate" in result.err


def test_missing_argument_wording(hc: Runtime) -> None:
    result = hc("create")
    assert result.rc == 1
    assert 'handcar: \\"create\\" requires exactly 1 argument(s)' in result.err


def test_unknown_container_text_log_on_stderr(hc: Runtime) -> None:
    result = hc("state", "nope")
    assert result.rc == 1
    assert 'level=error msg="container does not exist"' in result.err
    assert result.err.startswith('time="')


def test_json_log_file_gets_one_object_and_stderr_the_message(hc: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    result = hc("--log", str(log), "--log-format", "json", "kill", "nope", "9")
    assert result.rc == 1
    assert result.err == "container does not exist\n"
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "error"
    assert record["msg"] == "container does not exist"
    assert record["time"].endswith("Z")


def test_invalid_id_is_refused(hc: Runtime) -> None:
    bundle = hc.bundle(args=["true"])
    for bad in ("a/b", "..", "x y"):
        result = hc("create", "--bundle", str(bundle), bad)
        assert result.rc == 1
        assert "invalid container ID format" in result.err
    assert not hc.root.exists() or not list(hc.root.iterdir())


def test_delete_force_of_unknown_id_succeeds(hc: Runtime) -> None:
    assert hc("delete", "--force", "nope").rc == 0
    result = hc("delete", "nope")
    assert result.rc == 1 and "container does not exist" in result.err


def test_list_empty(hc: Runtime) -> None:
    result = hc("list")
    assert result.rc == 0
    assert result.out.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert hc("list", "--format", "json").out == "null\n"
    assert hc("list", "-q").out == ""


def test_spec_writes_runc_like_default(tmp_path: Path, hc: Runtime) -> None:
    result = hc("spec", "--bundle", str(tmp_path))
    assert result.rc == 0, result
    text = (tmp_path / "config.json").read_text()
    assert text.startswith("{\n\t")
    config = json.loads(text)
    assert config["process"]["args"] == ["sh"]
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert {ns["type"] for ns in config["linux"]["namespaces"]} == {
        "pid",
        "network",
        "ipc",
        "uts",
        "mount",
    }
    again = hc("spec", "--bundle", str(tmp_path))
    assert again.rc == 1 and "File config.json exists. Remove it first" in again.err


def test_spec_rootless(tmp_path: Path, hc: Runtime) -> None:
    assert hc("spec", "--rootless", "-b", str(tmp_path)).rc == 0
    config = json.loads((tmp_path / "config.json").read_text())
    types = {ns["type"] for ns in config["linux"]["namespaces"]}
    assert "user" in types and "network" not in types
    assert config["linux"]["uidMappings"][0]["size"] == 1


def test_flags_after_the_id_are_accepted(hc: Runtime) -> None:
    bundle = hc.bundle(args=["sleep", "100"])
    cid = hc.new_id()
    result = hc("create", cid, "--bundle", str(bundle))
    assert result.rc == 0, result
    assert hc.state(cid)["status"] == "created"


def _interpreter_exec(tmp_path: Path, *args: str) -> str:
    """The launcher's exec of the interpreter (the second exec of the process), from strace."""
    trace = tmp_path / "trace"
    subprocess.run(
        [
            "strace",
            "-qq",
            "-e",
            "signal=none",
            "-e",
            "trace=execve,execveat",
            "-o",
            str(trace),
            HANDCAR,
            *args,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
    lines = trace.read_text().splitlines()
    assert len(lines) == 2, lines
    return lines[1]


@pytest.mark.skipif(not has_tool("strace"), reason="strace is not installed")
@pytest.mark.parametrize(
    ("args", "sealed"),
    [
        (["state", "x"], False),
        (["--root", "R", "kill", "x", "KILL"], False),
        (["--log-format", "json", "--debug", "delete", "x"], False),
        (["-root=R", "start", "x"], False),
        (["list"], False),
        (["--version"], False),
        (["create", "--bundle", "/nonexistent", "x"], True),
        (["--root", "R", "--log", "/dev/null", "run", "--bundle", "/nonexistent", "x"], True),
        (["--root=R", "exec", "x", "state"], True),
        (["--cgroup-manager", "cgroupfs", "--systemd-cgroup", "create", "x"], True),
        (["restore", "x"], True),
        (["no-such-command"], True),
    ],
)
def test_launcher_execs_the_isolated_interpreter(
    tmp_path: Path, args: list[str], sealed: bool
) -> None:
    """-IS and the entry point on every call; a read-only or sealed image (execveat of an fd)
    exactly for the commands that fork processes into a container's sight (or that it does
    not know), and a plain execve for the rest, which stay on the hot path."""
    root = str(tmp_path / "root")
    line = _interpreter_exec(tmp_path, *[a.replace("R", root) if "R" in a else a for a in args])
    assert '"-IS", "-c", "import sys;sys.path.insert(0,sys"...' in line, line
    assert line.startswith("execveat(") == sealed, line
