"""Process security settings on real containers: the seccomp notify listener, LSM errors,
personality, scheduler, I/O priority and the time namespace."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from handcar.linux import libseccomp as scmp
from harness import Runtime


def _agent(sock: socket.socket, result: dict[str, Any], answers: int) -> None:
    """A seccomp agent: take the listener, refuse `answers` notified syscalls with EACCES."""
    conn, _ = sock.accept()
    with conn:
        message, fds, _, _ = socket.recv_fds(conn, 65536, 1)
        while chunk := conn.recv(65536):
            message += chunk
    result["message"] = json.loads(message)
    listener = fds[0]
    try:
        for _ in range(answers):
            notification = scmp.notif_recv(listener)
            result.setdefault("nrs", []).append(notification.nr)
            scmp.notif_send(listener, notification.id, error=-errno.EACCES)
    finally:
        os.close(listener)


@pytest.mark.parametrize("nnp", [True, False])
def test_seccomp_listener_reaches_a_real_agent(hc: Runtime, tmp_path: Path, nnp: bool) -> None:
    path = str(tmp_path / "agent.sock")
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(path)
    agent.listen(1)
    agent.settimeout(20)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=_agent, args=(agent, result, 1), daemon=True)
    thread.start()
    config = hc.config(["sh", "-c", "mkdir /tmp/x 2>&1; echo done"])
    config["process"]["noNewPrivileges"] = nnp
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": path,
        "listenerMetadata": "handcar-test",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
    }
    try:
        run = hc.run(config["process"]["args"], config)
    finally:
        thread.join(20)
        agent.close()
    assert run.rc == 0, run
    assert "Permission denied" in run.out and "done" in run.out, run
    message = result["message"]
    assert message["fds"] == ["seccompFd"] and message["metadata"] == "handcar-test"
    assert message["state"]["status"] == "creating" and message["state"]["pid"] == message["pid"]
    assert message["state"]["id"].startswith("hct-")
    assert result["nrs"] and len(result["nrs"]) == 1


def test_seccomp_listener_unreachable_is_a_clear_error(hc: Runtime, tmp_path: Path) -> None:
    config = hc.config(["true"])
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": str(tmp_path / "nobody.sock"),
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
    }
    run = hc.run(["true"], config)
    assert run.rc == 1
    assert "linux.seccomp.listenerPath" in run.msg, run
    assert list(hc.root.iterdir()) == []


def test_apparmor_and_selinux_are_clear_errors(hc: Runtime) -> None:
    for field, value in (
        ("apparmorProfile", "docker-default"),
        ("selinuxLabel", "system_u:system_r:container_t:s0"),
    ):
        config = hc.config(["true"])
        config["process"][field] = value
        run = hc.run(["true"], config)
        assert run.rc == 1
        assert f"process.{field}" in run.msg and "not enabled" in run.msg, run


def _stat_fields(out: str) -> list[str]:
    return out.rsplit(")", 1)[1].split()


def test_personality_linux32(hc: Runtime) -> None:
    config = hc.config(["sh", "-c", "uname -m"])
    config["process"]["personality"] = {"domain": "LINUX32", "flags": []}
    result = hc.run(config["process"]["args"], config)
    assert result.rc == 0, result
    assert result.out.strip() in ("i686", "i386")


def test_scheduler_policy_and_nice(hc: Runtime) -> None:
    config = hc.config(["cat", "/proc/self/stat"])
    config["process"]["scheduler"] = {"policy": "SCHED_BATCH", "nice": 7}
    result = hc.run(config["process"]["args"], config)
    assert result.rc == 0, result
    fields = _stat_fields(result.out)  # fields from 3 (state) on
    assert fields[19 - 3] == "7"  # nice
    assert fields[41 - 3] == "3"  # policy: SCHED_BATCH


def test_scheduler_realtime_priority(hc: Runtime) -> None:
    config = hc.config(["cat", "/proc/self/stat"])
    config["process"]["scheduler"] = {"policy": "SCHED_RR", "priority": 5}
    result = hc.run(config["process"]["args"], config)
    if result.rc != 0:  # an RT budget of 0 in the cgroup refuses RT tasks: a clear error then
        assert "process.scheduler" in result.msg, result
        return
    fields = _stat_fields(result.out)
    assert fields[40 - 3] == "5" and fields[41 - 3] == "2"


def test_io_priority(hc: Runtime) -> None:
    config = hc.config(["ionice"])
    config["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_IDLE", "priority": 0}
    result = hc.run(config["process"]["args"], config)
    assert result.rc == 0, result
    assert "idle" in result.out, result
    config["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 6}
    result = hc.run(config["process"]["args"], config)
    assert result.rc == 0, result
    assert "best-effort" in result.out and "6" in result.out, result


def test_time_namespace_offsets(hc: Runtime) -> None:
    config = hc.config(["sh", "-c", "cat /proc/self/timens_offsets; cut -d. -f1 /proc/uptime"])
    config["linux"]["namespaces"].append({"type": "time"})
    config["linux"]["timeOffsets"] = {
        "boottime": {"secs": 864000, "nanosecs": 0},
        "monotonic": {"secs": 3600, "nanosecs": 5},
    }
    result = hc.run(config["process"]["args"], config)
    assert result.rc == 0, result
    lines = result.out.splitlines()
    assert "monotonic" in lines[0] or "monotonic" in lines[1]
    assert any(line.split()[1:] == ["864000", "0"] for line in lines[:2])
    host_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert int(lines[2]) >= host_uptime + 864000 - 5


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("personality", {"domain": "PDP11"}, "process.personality.domain: unknown value"),
        ("personality", {"domain": "LINUX", "flags": ["NOPE"]}, "process.personality.flags[0]"),
        ("scheduler", {"policy": "SCHED_FAST"}, "process.scheduler.policy: unknown value"),
        ("scheduler", {"policy": "SCHED_OTHER", "nice": 40}, "process.scheduler.nice"),
        ("scheduler", {"policy": "SCHED_FIFO", "priority": 0}, "process.scheduler.priority"),
        ("ioPriority", {"class": "IOPRIO_CLASS_X"}, "process.ioPriority.class: unknown value"),
        ("ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 9}, "process.ioPriority.priority"),
    ],
)
def test_bad_settings_name_the_field(
    hc: Runtime, section: str, value: object, message: str
) -> None:
    config = hc.config(["true"])
    config["process"][section] = value
    result = hc.run(["true"], config)
    assert result.rc == 1
    assert message in result.msg, result
    assert not hc.root.exists() or list(hc.root.iterdir()) == []


def test_time_offsets_need_a_time_namespace(hc: Runtime) -> None:
    config = hc.config(["true"])
    config["linux"]["timeOffsets"] = {"boottime": {"secs": 1}}
    result = hc.run(["true"], config)
    assert result.rc == 1
    assert "linux.timeOffsets" in result.msg, result
