"""The process: args, env, cwd, user, umask, rlimits, capabilities, no_new_privs, terminal."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from harness import Runtime, wait_for

CAP_KILL = 1 << 5
CAP_NET_BIND_SERVICE = 1 << 10
CAP_AUDIT_WRITE = 1 << 29
DEFAULT_CAPS = CAP_KILL | CAP_NET_BIND_SERVICE | CAP_AUDIT_WRITE


def _status_field(out: str, name: str) -> str:
    for line in out.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} missing in {out}")


def test_env_cwd_user_umask(hc: Runtime) -> None:
    config = hc.config()
    config["process"]["env"] = ["PATH=/bin", "FOO=bar baz"]
    config["process"]["cwd"] = "/tmp"
    config["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 7], "umask": 0o077}
    result = hc.run(["sh", "-c", "echo $FOO; pwd; id -u; id -g; id -G; umask"], config)
    assert result.rc == 0, result
    assert result.out.split("\n")[:6] == ["bar baz", "/tmp", "1000", "1001", "1001 5 7", "0077"]


def test_capabilities_and_no_new_privs(hc: Runtime) -> None:
    result = hc.run(["cat", "/proc/self/status"])
    assert result.rc == 0, result
    assert int(_status_field(result.out, "CapBnd"), 16) == DEFAULT_CAPS
    assert int(_status_field(result.out, "CapEff"), 16) == DEFAULT_CAPS
    # Ambient capabilities need the inheritable set too, which the default lacks: runc
    # gives the same empty ambient set.
    assert int(_status_field(result.out, "CapAmb"), 16) == 0
    assert _status_field(result.out, "NoNewPrivs") == "1"
    config = hc.config()
    config["process"]["noNewPrivileges"] = False
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    config["process"]["capabilities"] = {
        "bounding": ["CAP_CHOWN", "CAP_KILL"],
        "permitted": ["CAP_KILL"],
        "inheritable": ["CAP_KILL"],
        "effective": ["CAP_KILL"],
        "ambient": ["CAP_KILL"],
    }
    result = hc.run(["cat", "/proc/self/status"], config)
    assert _status_field(result.out, "NoNewPrivs") == "0"
    assert int(_status_field(result.out, "CapBnd"), 16) == 1 | CAP_KILL
    assert int(_status_field(result.out, "CapEff"), 16) == CAP_KILL
    assert int(_status_field(result.out, "CapAmb"), 16) == CAP_KILL


def test_rlimits_and_oom_score(hc: Runtime) -> None:
    config = hc.config()
    config["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]
    config["process"]["oomScoreAdj"] = 500
    result = hc.run(
        ["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c; cat /proc/self/oom_score_adj"], config
    )
    assert result.rc == 0, result
    assert result.out.split() == ["512", "1000", "0", "500"]


def test_rlimit_above_the_hard_limit_is_a_clear_error(hc: Runtime) -> None:
    config = hc.config()
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 2**30, "hard": 2**30}]
    result = hc.run(["true"], config)
    assert result.rc == 1
    assert "process.rlimits[0]: setrlimit RLIMIT_NOFILE" in result.err
    assert "operation not permitted" in result.err
    assert list(hc.root.iterdir()) == []


def test_missing_executable_uses_go_wording(hc: Runtime) -> None:
    result = hc.run(["no-such-binary"])
    assert result.rc == 1
    assert result.msg == (
        'handcar run failed: exec: "no-such-binary": executable file not found in $PATH'
    )
    assert list(hc.root.iterdir()) == []


def test_namespaces_are_new_and_lo_is_up(hc: Runtime) -> None:
    result = hc.run(
        [
            "sh",
            "-c",
            "echo $$; for n in net uts ipc mnt; do readlink /proc/self/ns/$n;"
            " done; cat /sys/class/net/lo/operstate; ls /sys/class/net",
        ]
    )
    assert result.rc == 0, result
    lines = result.out.split()
    assert lines[0] == "1"
    for line, name in zip(lines[1:5], ("net", "uts", "ipc", "mnt"), strict=True):
        assert line != os.readlink(f"/proc/self/ns/{name}")
    assert lines[5] == "unknown" or lines[5] == "up"
    assert lines[6:] == ["lo"]


def test_join_a_namespace_by_path(hc: Runtime) -> None:
    first = hc.create(args=["sleep", "300"])
    pid = hc.state(first)["pid"]
    config = hc.config()
    config["linux"]["namespaces"] = [
        ns if ns["type"] != "network" else {"type": "network", "path": f"/proc/{pid}/ns/net"}
        for ns in config["linux"]["namespaces"]
    ]
    result = hc.run(["readlink", "/proc/self/ns/net"], config)
    assert result.rc == 0, result
    assert result.out.strip() == os.readlink(f"/proc/{pid}/ns/net")


def test_no_host_fd_reaches_the_container(hc: Runtime) -> None:
    leaked = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(leaked, True)  # inheritable on purpose, as a careless caller's would be
    try:
        bundle = hc.bundle(args=["ls", "/proc/self/fd"])
        result = hc("run", "--bundle", str(bundle), hc.new_id(), pass_fds=(leaked,))
        assert result.rc == 0, result
        assert result.out.split() == ["0", "1", "2", "3"]  # 3 is ls's own directory fd
    finally:
        os.close(leaked)


def test_preserve_fds_passes_exactly_n(hc: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "fd3.txt"
    bundle = hc.bundle(args=["sh", "-c", "echo through-fd-3 >&3; ls /proc/self/fd"])
    script = (
        f"exec 3>{out} 4</dev/null; exec {hc.binary} --root {hc.root} run "
        f"--preserve-fds 1 --bundle {bundle} {hc.new_id()}"
    )
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc
    assert out.read_text() == "through-fd-3\n"
    assert proc.stdout.split() == ["0", "1", "2", "3", "4"]  # 4 is ls's; the caller's 4 is gone


def test_leaked_fd_as_cwd_is_refused(hc: Runtime) -> None:
    """CVE-2024-21626: a host directory fd used as cwd through /proc/self/fd."""
    leaked = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(leaked, True)
    try:
        config = hc.config(["ls"])
        config["process"]["cwd"] = f"/proc/self/fd/{leaked}"
        bundle = hc.bundle(config)
        result = hc("run", "--bundle", str(bundle), hc.new_id(), pass_fds=(leaked,))
        assert result.rc != 0
        assert "process.cwd" in result.err
    finally:
        os.close(leaked)


def test_runtime_fds_cannot_serve_as_cwd(hc: Runtime) -> None:
    """No fd of handcar's own may be open when the cwd is entered (CVE-2024-21626)."""
    for fd in range(3, 10):
        config = hc.config(["true"])
        config["process"]["cwd"] = f"/proc/self/fd/{fd}"
        result = hc.run(["true"], config)
        assert result.rc != 0, (fd, result)
        assert "process.cwd" in result.msg


def test_terminal_through_console_socket(hc: Runtime, tmp_path: Path) -> None:
    sock_path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    config = hc.config(["sh", "-c", "tty; stty size; echo done"])
    config["process"]["terminal"] = True
    config["process"]["consoleSize"] = {"height": 33, "width": 101}
    bundle = hc.bundle(config)
    cid = hc.new_id()
    creator = hc.popen("create", "--bundle", str(bundle), "--console-socket", sock_path, cid)
    conn, _ = server.accept()
    msg, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    assert creator.wait(timeout=30) == 0
    assert msg.startswith(b"/dev/pts/")
    master = fds[0]
    try:
        assert hc("start", cid).rc == 0
        output = b""
        while b"done" not in output:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        text = output.decode()
        assert "/dev/pts/0" in text
        assert "33 101" in text
        assert wait_for(lambda: hc.state(cid)["status"] == "stopped")
    finally:
        os.close(master)
        conn.close()
        server.close()


def test_terminal_without_console_socket_is_refused_on_create(hc: Runtime) -> None:
    config = hc.config(["true"])
    config["process"]["terminal"] = True
    bundle = hc.bundle(config)
    result = hc("create", "--bundle", str(bundle), hc.new_id())
    assert result.rc == 1
    assert "cannot allocate tty if handcar will detach without setting console socket" in result.err
