"""Docker (Debian's docker.io 20.10): a private dockerd with `--add-runtime handcar=...` as its
default runtime, on a private containerd."""

from __future__ import annotations

import json
import uuid

import pytest

from engines.engine_helpers import free_port, http_get, run_in_pty
from engines.engine_setup import Docker
from harness import HANDCAR, wait_for

pytestmark = pytest.mark.slow

IMAGE = "localhost/bb"


def name() -> str:
    return "hct-" + uuid.uuid4().hex[:8]


def test_runtime_is_registered(docker: Docker) -> None:
    info = json.loads(docker.ok("info", "--format", "{{json .Runtimes}}"))
    assert info["handcar"]["path"] == HANDCAR


def test_run_and_exit_codes(docker: Docker) -> None:
    result = docker("run", "--rm", "--runtime", "handcar", IMAGE, "echo", "hello")
    assert (result.returncode, result.stdout) == (0, "hello\n"), result
    assert docker("run", "--rm", IMAGE, "sh", "-c", "exit 9").returncode == 9
    missing = docker("run", "--rm", IMAGE, "no-such-command")
    assert missing.returncode == 127, missing
    assert "executable file not found" in missing.stderr
    denied = docker("run", "--rm", IMAGE, "/etc/passwd")
    assert denied.returncode == 126, denied


def test_detached_exec_pause_stop_rm(docker: Docker) -> None:
    cid = name()
    script = 'echo started; trap "echo got-term; exit 3" TERM; while :; do sleep 0.1; done'
    docker.ok("run", "-d", "--name", cid, IMAGE, "sh", "-c", script)
    assert wait_for(lambda: "started" in docker("logs", cid).stdout, 20)
    result = docker("exec", cid, "sh", "-c", "echo in-exec; exit 4")
    assert (result.returncode, result.stdout) == (4, "in-exec\n"), result
    assert docker("exec", cid, "no-such-command").returncode == 126  # docker exec's code
    docker.ok("pause", cid)
    assert docker.ok("inspect", "--format", "{{.State.Status}}", cid).strip() == "paused"
    docker.ok("unpause", cid)
    assert docker.ok("inspect", "--format", "{{.State.Status}}", cid).strip() == "running"
    docker.ok("stop", "-t", "10", cid)
    assert docker.ok("inspect", "--format", "{{.State.ExitCode}}", cid).strip() == "3"
    assert docker.ok("logs", cid) == "started\ngot-term\n"
    docker.ok("rm", cid)
    assert cid not in docker.ok("ps", "-a", "--format", "{{.Names}}")


def test_rm_force(docker: Docker) -> None:
    cid = name()
    docker.ok("run", "-d", "--name", cid, IMAGE, "sleep", "1000")
    docker.ok("rm", "-f", cid)
    assert cid not in docker.ok("ps", "-a", "--format", "{{.Names}}")


def test_published_port(docker: Docker) -> None:
    cid = name()
    port = free_port()
    docker.ok(
        "run",
        "-d",
        "--name",
        cid,
        "-p",
        f"127.0.0.1:{port}:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    )
    try:
        reply = http_get(port, "/index.html")
        assert "200 OK" in reply and "hello-from-httpd" in reply, reply
    finally:
        docker.ok("rm", "-f", cid)


def test_host_network(docker: Docker) -> None:
    out = docker.ok(
        "run", "--rm", "--network", "host", IMAGE, "sh", "-c", "hostname; ls /sys/class/net"
    )
    assert "lo" in out.split()


def test_run_and_exec_tty(docker: Docker) -> None:
    argv = ["docker", "-H", "unix://" + docker.sock]
    result = run_in_pty(
        [*argv, "run", "-it", "--rm", IMAGE, "sh", "-c", "tty; echo READY; exec sh"],
        [(b"READY", b"echo typed-$((6*7)); exit 5\n")],
    )
    # (no window size check: docker 20.10's resize does not reach the container here, with
    # runc as with handcar)
    assert result.code == 5, result
    assert "/dev/pts/0" in result.text, result
    assert "typed-42" in result.text, result
    cid = name()
    docker.ok("run", "-d", "--name", cid, IMAGE, "sleep", "1000")
    result = run_in_pty(
        [*argv, "exec", "-it", cid, "sh", "-c", "tty; echo READY; exec sh"],
        [(b"READY", b"echo typed-$((6*7)); exit 6\n")],
    )
    assert result.code == 6 and "typed-42" in result.text, result
    docker.ok("rm", "-f", cid)
