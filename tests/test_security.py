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
    for field, value in (("apparmorProfile", "docker-default"),
                         ("selinuxLabel", "system_u:system_r:container_t:s0")):
        config = hc.config(["true"])
        config["process"][field] = value
        run = hc.run(["true"], config)
        assert run.rc == 1
        assert f"process.{field}" in run.msg and "not enabled" in run.msg, run
