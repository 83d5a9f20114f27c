"""podman (Debian's 4.3 with conmon) drives the runtime under test through `--runtime`."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from engines.engine_helpers import free_port, http_get, run_in_pty
from engines.engine_setup import Podman
from harness import HANDCAR, wait_for

pytestmark = pytest.mark.slow

IMAGE = "localhost/bb"


def name() -> str:
    return "hct-" + uuid.uuid4().hex[:8]


def cgroup_file(pid: int, controller: str, v1_file: str, v2_file: str) -> str:
    """Read a limit from the host's view of the process's cgroup (v1, hybrid or v2)."""
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for n in names.split(",") if names else [""]:
            paths[n] = path
    v1 = Path(f"/sys/fs/cgroup/{controller}{paths.get(controller, '')}/{v1_file}")
    if controller in paths and v1.exists():
        return v1.read_text().strip()
    root = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
    return Path(f"{root}{paths['']}/{v2_file}").read_text().strip()


def test_uses_the_runtime_under_test(podman: Podman) -> None:
    cid = name()
    podman.ok("create", "--name", cid, IMAGE, "true")
    runtime = podman.ok("inspect", "--format", "{{.OCIRuntime}}", cid).strip()
    podman.ok("rm", cid)
    assert runtime == HANDCAR


def test_run_rm_and_exit_codes(podman: Podman) -> None:
    result = podman("run", "--rm", IMAGE, "echo", "hello")
    assert (result.returncode, result.stdout) == (0, "hello\n"), result
    assert podman("run", "--rm", IMAGE, "sh", "-c", "exit 7").returncode == 7
    missing = podman("run", "--rm", IMAGE, "no-such-command")
    assert missing.returncode == 127, missing
    assert 'exec: "no-such-command": executable file not found in $PATH' in missing.stderr
    denied = podman("run", "--rm", IMAGE, "/etc/passwd")
    assert denied.returncode == 126, denied
    assert "permission denied" in denied.stderr
    assert podman("ps", "-aq").stdout == ""


def test_detached_lifecycle(podman: Podman) -> None:
    """run -d, exec, logs, top, pause/unpause, stop, wait, logs after stop, rm."""
    cid = name()
    script = 'echo started; trap "echo got-term; exit 3" TERM; while :; do sleep 0.1; done'
    podman.ok("run", "-d", "--name", cid, IMAGE, "sh", "-c", script)
    assert wait_for(lambda: "started" in podman("logs", cid).stdout, 20)
    exec_result = podman("exec", cid, "sh", "-c", "echo in-exec; exit 4")
    assert (exec_result.returncode, exec_result.stdout) == (4, "in-exec\n"), exec_result
    assert podman("exec", cid, "no-such-command").returncode == 127

    top = podman.ok("top", cid)
    assert "sh -c echo started" in top, top

    podman.ok("pause", cid)
    assert podman.ok("inspect", "--format", "{{.State.Status}}", cid).strip() == "paused"
    podman.ok("unpause", cid)
    assert podman.ok("inspect", "--format", "{{.State.Status}}", cid).strip() == "running"

    podman.ok("stop", "-t", "10", cid)
    assert podman.ok("wait", cid).strip() == "3"
    assert podman.ok("logs", cid) == "started\ngot-term\n"
    podman.ok("rm", cid)


def test_kill_and_wait(podman: Podman) -> None:
    cid = name()
    podman.ok("run", "-d", "--name", cid, IMAGE, "sleep", "1000")
    podman.ok("kill", cid)  # SIGKILL by default
    assert podman.ok("wait", cid).strip() == "137"
    assert podman.ok("inspect", "--format", "{{.State.Status}}", cid).strip() == "exited"
    podman.ok("rm", cid)


def test_rm_force_running(podman: Podman) -> None:
    cid = name()
    podman.ok("run", "-d", "--name", cid, IMAGE, "sleep", "1000")
    started = time.monotonic()
    podman.ok("rm", "-f", "-t", "0", cid)
    assert time.monotonic() - started < 20
    assert podman("inspect", cid).returncode != 0


def test_memory_and_pids_limits_stats_update(podman: Podman) -> None:
    cid = name()
    podman.ok(
        "run", "-d", "--name", cid, "--memory", "64m", "--pids-limit", "50", IMAGE, "sleep", "1000"
    )
    pid = int(podman.ok("inspect", "--format", "{{.State.Pid}}", cid))
    assert cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max") == str(64 << 20)
    assert cgroup_file(pid, "pids", "pids.max", "pids.max") == "50"
    assert podman.ok("stats", "--no-stream", "--format", "{{.MemLimit}}", cid).strip() == str(
        64 << 20
    )
    podman.ok("update", "--memory", "128m", cid)  # the runtime's `update --resources FILE`
    assert cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max") == str(128 << 20)
    podman.ok("rm", "-f", "-t", "0", cid)


def test_cap_drop_all(podman: Podman) -> None:
    out = podman.ok("run", "--rm", "--cap-drop", "all", IMAGE, "grep", "^Cap", "/proc/self/status")
    for line in out.splitlines():
        assert line.split()[1] == "0000000000000000", out
    default = podman.ok("run", "--rm", IMAGE, "grep", "^CapBnd", "/proc/self/status")
    assert default.split()[1] != "0000000000000000"


def test_user(podman: Podman) -> None:
    out = podman.ok("run", "--rm", "--user", "65534:65534", IMAGE, "id")
    assert out.startswith("uid=65534(nobody) gid=65534"), out
    assert podman.ok("run", "--rm", "--user", "1234", IMAGE, "id", "-u").strip() == "1234"


def test_read_only(podman: Podman) -> None:
    script = "touch /x 2>/dev/null && echo wrote-root; touch /tmp/y && echo wrote-tmp"
    out = podman.ok("run", "--rm", "--read-only", IMAGE, "sh", "-c", script)
    assert out == "wrote-tmp\n", out


def test_volume(podman: Podman, tmp_path: Path) -> None:
    (tmp_path / "in").write_text("from-host\n")
    out = podman.ok(
        "run",
        "--rm",
        "-v",
        f"{tmp_path}:/data",
        IMAGE,
        "sh",
        "-c",
        "cat /data/in; echo back > /data/out",
    )
    assert out == "from-host\n"
    assert (tmp_path / "out").read_text() == "back\n"


def test_run_tty(podman: Podman) -> None:
    """run -it through a real pty: a terminal inside, its size, typed input, the exit code."""
    result = run_in_pty(
        podman.argv("run", "-it", "--rm", IMAGE, "sh", "-c", "tty; stty size; echo READY; exec sh"),
        [(b"READY", b"echo typed-$((6*7)); exit 5\n")],
        env=podman.env,
        size=(33, 101),
    )
    assert result.code == 5, result
    assert "/dev/pts/0" in result.text, result
    assert "33 101" in result.text, result
    assert "typed-42" in result.text, result


def test_exec_tty(podman: Podman) -> None:
    cid = name()
    podman.ok("run", "-d", "--name", cid, IMAGE, "sleep", "1000")
    result = run_in_pty(
        podman.argv("exec", "-it", cid, "sh", "-c", "tty; echo READY; exec sh"),
        [(b"READY", b"echo typed-$((6*7)); exit 6\n")],
        env=podman.env,
    )
    assert result.code == 6, result
    assert "/dev/pts/" in result.text and "typed-42" in result.text, result
    podman.ok("rm", "-f", "-t", "0", cid)


def test_published_port(podman: Podman) -> None:
    """-p 127.0.0.1:PORT:80 on a private CNI bridge (its own name, its config under the temp
    dir): busybox httpd inside answers a request from the test."""
    net = "hct" + uuid.uuid4().hex[:6]
    podman.ok("network", "create", "--subnet", "10.231.77.0/24", net)
    cid = name()
    port = free_port()
    try:
        podman.ok(
            "run",
            "-d",
            "--name",
            cid,
            "--network",
            net,
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
        reply = http_get(port, "/index.html")
        assert "200 OK" in reply and "hello-from-httpd" in reply, reply
    finally:
        podman("rm", "-f", "-t", "0", cid)
        podman("network", "rm", "-f", net)


def test_events_and_inspect_state(podman: Podman) -> None:
    """podman reads the runtime's state output after each step; inspect shows it."""
    cid = name()
    podman.ok("create", "--name", cid, IMAGE, "sleep", "1000")
    assert podman.ok("inspect", "--format", "{{.State.Status}}", cid).strip() == "created"
    podman.ok("start", cid)
    state = json.loads(podman.ok("inspect", cid))[0]["State"]
    assert state["Status"] == "running" and state["Pid"] > 0, state
    podman.ok("rm", "-f", "-t", "0", cid)


def test_host_network_and_uts(podman: Podman) -> None:
    out = podman.ok("run", "--rm", "--network", "host", IMAGE, "ls", "/sys/class/net")
    assert "lo" in out.split()
    host = Path("/proc/sys/kernel/hostname").read_text().strip()
    assert podman.ok("run", "--rm", "--uts", "host", IMAGE, "hostname").strip() == host


def test_stdin_and_exec_detach(podman: Podman) -> None:
    piped = podman("run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo done", input="line1\nline2\n")
    assert (piped.returncode, piped.stdout) == (0, "line1\nline2\ndone\n"), piped
    cid = name()
    podman.ok("run", "-d", "--name", cid, IMAGE, "sleep", "1000")
    podman.ok("exec", "-d", cid, "sh", "-c", "echo detached > /tmp/mark")
    assert wait_for(lambda: podman("exec", cid, "cat", "/tmp/mark").stdout == "detached\n", 20)
    podman.ok("restart", "-t", "0", cid)
    assert podman.ok("inspect", "--format", "{{.State.Status}}", cid).strip() == "running"
    podman.ok("rm", "-f", "-t", "0", cid)


def test_checkpoint_fails_cleanly(podman: Podman) -> None:
    """CRIU 3.17 cannot dump on this kernel (runc fails too): the runtime's error reaches the
    user and the container keeps running."""
    cid = name()
    podman.ok("run", "-d", "--name", cid, IMAGE, "sleep", "1000")
    result = podman("container", "checkpoint", cid, timeout=120)
    if result.returncode == 0:  # a kernel and CRIU that can: restore it too
        podman.ok("container", "restore", cid, timeout=120)
    else:
        assert "checkpoint" in result.stderr, result
    assert podman.ok("inspect", "--format", "{{.State.Status}}", cid).strip() == "running"
    podman.ok("rm", "-f", "-t", "0", cid)


def test_init_then_rm_or_start(podman: Podman) -> None:
    """`podman init` runs the runtime's create only: the created container is deleted without
    --force, or started later and attached to."""
    cid = name()
    podman.ok("create", "--name", cid, IMAGE, "sleep", "1000")
    podman.ok("init", cid)
    status = podman.ok("inspect", "--format", "{{.State.Status}} {{.State.Pid}}", cid).split()
    assert status[0] == "initialized" and int(status[1]) > 0, status
    podman.ok("rm", cid)
    cid = name()
    podman.ok("create", "--name", cid, IMAGE, "echo", "started-after-init")
    podman.ok("init", cid)
    assert podman.ok("start", "-a", cid) == "started-after-init\n"
    podman.ok("rm", cid)


def test_pod_shares_namespaces(podman: Podman) -> None:
    """A pod: the infra container (localhost/pause) creates the namespaces, the members join
    them by path (ipc: /dev/shm is shared; uts: the pod's hostname)."""
    pod = name()
    podman.ok("pod", "create", "--name", pod, "--infra-image", "localhost/pause:latest")
    try:
        podman.ok(
            "run", "-d", "--pod", pod, IMAGE, "sh", "-c", "echo shared > /dev/shm/x; sleep 1000"
        )
        assert wait_for(
            lambda: (
                podman("run", "--rm", "--pod", pod, IMAGE, "cat", "/dev/shm/x").stdout == "shared\n"
            ),
            20,
        )
        assert podman.ok("run", "--rm", "--pod", pod, IMAGE, "hostname").strip() == pod
    finally:
        podman.ok("pod", "rm", "-f", "-t", "0", pod)


def test_preserve_fds(podman: Podman, tmp_path: Path) -> None:
    """--preserve-fds reaches the runtime's create: fd 3 is the caller's file (a shell opens
    it for podman, leaving the test's own fds alone)."""
    (tmp_path / "fd3").write_text("through-fd-3\n")
    argv = podman.argv("run", "--rm", "--preserve-fds", "1", IMAGE, "sh", "-c", "cat <&3")
    run = subprocess.run(
        ["sh", "-c", 'exec "$@" 3<"$0"', str(tmp_path / "fd3"), *argv],
        capture_output=True,
        text=True,
        env=podman.env,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert (run.returncode, run.stdout) == (0, "through-fd-3\n"), run
