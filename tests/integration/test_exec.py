"""`handcar exec` on real containers: namespaces, cgroups, process settings, terminals, errors."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

from harness import ConsoleSocket, Runtime, poll, process_gone, read_until, wait_for


def _ns(pid: int) -> dict[str, str]:
    return {n: os.readlink(f"/proc/{pid}/ns/{n}") for n in ("mnt", "pid", "net", "ipc", "uts")}


def test_exec_returns_exit_code_and_output(hc: Runtime) -> None:
    cid = hc.start_container()
    result = hc("exec", cid, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (result.rc, result.out) == (7, "out\n")
    assert "err" in result.err


def test_exec_killed_by_signal_is_128_plus_signal(hc: Runtime) -> None:
    cid = hc.start_container()
    assert hc("exec", cid, "sh", "-c", "kill -TERM $$").rc == 128 + signal.SIGTERM


def test_exec_defaults_come_from_the_container_process(hc: Runtime) -> None:
    config = hc.config(["sleep", "300"])
    config["process"]["env"].append("FROM_CONFIG=yes")
    config["process"]["cwd"] = "/tmp"
    cid = hc.start_container(config)
    script = (
        "echo $FROM_CONFIG $EXTRA $HOME; pwd; id; grep -E 'CapEff|NoNewPrivs' /proc/self/status"
    )
    result = hc("exec", "-e", "EXTRA=1", cid, "sh", "-c", script)
    assert result.rc == 0, result
    lines = result.out.splitlines()
    assert lines[0] == "yes 1 /root"
    assert lines[1] == "/tmp"
    assert lines[2].startswith("uid=0(root) gid=0(root)")
    # runc spec's default process: AUDIT_WRITE, KILL, NET_BIND_SERVICE; noNewPrivileges.
    assert lines[3].split() == ["CapEff:", "0000000020000420"]
    assert lines[4].split() == ["NoNewPrivs:", "1"]


def test_exec_user_cwd_gids_and_caps_from_flags(hc: Runtime) -> None:
    cid = hc.start_container()
    result = hc(
        "exec", "--user", "1000:1000", "-g", "5", "--cwd", "/dev", "--cap", "CAP_SYS_ADMIN",
        cid, "sh", "-c", "id; pwd; echo $HOME; grep CapBnd /proc/self/status",
    )  # fmt: skip
    assert result.rc == 0, result
    lines = result.out.splitlines()
    assert lines[0] == "uid=1000 gid=1000 groups=5(tty)"
    assert lines[1] == "/dev"
    assert lines[2] == "/"  # no passwd entry for 1000: runc's fallback
    assert int(lines[3].split()[1], 16) & (1 << 21), "CAP_SYS_ADMIN added to the bounding set"


def test_exec_joins_every_namespace_and_the_cgroup(hc: Runtime, tmp_path: Path) -> None:
    cid = hc.start_container()
    init = hc.state(cid)["pid"]
    pid_file = tmp_path / "exec.pid"
    result = hc("exec", "--detach", "--pid-file", str(pid_file), cid, "sleep", "300")
    assert result.rc == 0, result
    text = pid_file.read_text()
    assert text.isdigit(), "decimal pid, no newline"
    pid = int(text)
    assert _ns(pid) == _ns(init)
    with open(f"/proc/{pid}/cgroup") as a, open(f"/proc/{init}/cgroup") as b:
        assert a.read() == b.read()
    with open(f"/proc/{pid}/status") as f:
        nspid = [line.split()[1:] for line in f if line.startswith("NSpid:")][0]
    assert len(nspid) == 2 and nspid[1] != "1", "a process of the container's pid namespace"
    with open(f"/proc/{pid}/status") as f:
        assert "\nPPid:\t" in f.read()
    fds = os.listdir(f"/proc/{pid}/fd")
    assert sorted(fds) == ["0", "1", "2"], "no fd leaks into the exec'd process"


def test_exec_into_a_sub_cgroup(hc: Runtime, tmp_path: Path) -> None:
    cid = hc.start_container()
    paths: dict[str, str] = json.loads((hc.root / cid / "state.json").read_text())["cgroup_paths"]
    made = []
    try:
        for path in set(paths.values()):
            os.mkdir(path + "/sub")
            made.append(path + "/sub")
            for name in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset starts empty
                if os.path.exists(f"{path}/{name}"):
                    with open(f"{path}/{name}") as src, open(f"{path}/sub/{name}", "w") as dst:
                        dst.write(src.read())
        pid_file = tmp_path / "p"
        result = hc(
            "exec", "-d", "--pid-file", str(pid_file), "--cgroup", "sub", cid, "sleep", "60"
        )
        assert result.rc == 0, result
        pid = int(pid_file.read_text())
        with open(f"/proc/{pid}/cgroup") as f:
            # Only the hierarchies the container has; a hierarchy mounted since (another
            # session may mount hugetlb as v1) holds the process at its root.
            lines = [line.rstrip() for line in f if cid in line]
        assert lines and all(line.endswith(f"{cid}/sub") for line in lines), lines
        os.kill(pid, 9)
        assert wait_for(lambda: process_gone(pid))
        missing = hc("exec", "--cgroup", "nope", cid, "true")
        assert missing.rc == 255 and "does not exist" in missing.err
    finally:
        for path in made:
            poll(functools.partial(_rmdir, path), 5)


def _rmdir(path: str) -> bool:
    """rmdir; whether it worked (a cgroup stays busy until its killed tasks have left)."""
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True


def test_exec_process_json(hc: Runtime, tmp_path: Path) -> None:
    cid = hc.start_container()
    process = {
        "args": ["sh", "-c", "echo $A; id -u; pwd"],
        "env": ["A=from-json", "PATH=/bin"],
        "cwd": "/proc",
        "user": {"uid": 65534, "gid": 65534},
    }
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    result = hc("exec", "--process", str(path), cid)
    assert (result.rc, result.out) == (0, "from-json\n65534\n/proc\n"), result
    path.write_text(json.dumps({"args": [], "cwd": "/"}))
    bad = hc("exec", "-p", str(path), cid)
    assert bad.rc == 255 and "process.json: process.args" in bad.err, bad


def test_exec_setup_failures_exit_255_with_one_line(hc: Runtime) -> None:
    cid = hc.start_container()
    missing = hc("exec", cid, "no-such-binary")
    assert missing.rc == 255
    assert "no-such-binary" in missing.err
    assert "executable file not found in $PATH" in missing.err
    assert len(missing.err.strip().splitlines()) == 1
    cwd = hc("exec", "--cwd", "/nonexistent", cid, "true")
    assert cwd.rc == 255 and "/nonexistent" in cwd.err
    unknown = hc("exec", "no-such-container", "true")
    assert unknown.rc == 255 and "container does not exist" in unknown.err


def test_exec_into_stopped_and_paused_containers(hc: Runtime) -> None:
    from handcar.cgroups.manager import from_paths

    cid = hc.start_container()
    paths = json.loads((hc.root / cid / "state.json").read_text())["cgroup_paths"]
    manager = from_paths(paths)
    manager.freeze()
    try:
        paused = hc("exec", cid, "true")
        assert paused.rc == 255
        assert "cannot exec in a paused container (use --ignore-paused to override)" in paused.err
    finally:
        manager.thaw()
    assert hc("exec", cid, "true").rc == 0
    pid = hc.state(cid)["pid"]
    assert hc("kill", cid, "9").rc == 0
    assert wait_for(lambda: process_gone(pid))
    stopped = hc("exec", cid, "true")
    assert stopped.rc == 255 and "cannot exec in a stopped container" in stopped.err


def test_exec_forwards_signals(hc: Runtime) -> None:
    cid = hc.start_container()
    script = "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done"
    proc = subprocess.Popen(
        hc.argv("exec", cid, "sh", "-c", script), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 42
    finally:
        proc.kill()
        proc.wait()


def test_preserve_fds_and_listen_pid(hc: Runtime) -> None:
    cid = hc.start_container()
    read_end, write_end = os.pipe()
    try:
        result = hc(
            "exec", "--preserve-fds", "1", "-e", "LISTEN_FDS=1", cid,
            "sh", "-c", "echo $LISTEN_PID $$ >&3; ls /proc/$$/fd; true",
            pass_fds=(3,),
            preexec_fn=lambda: os.dup2(write_end, 3),  # fd 3 of pytest itself stays untouched
        )  # fmt: skip
        assert result.rc == 0, result
        assert result.out.split() == ["0", "1", "2", "3"]
        listen_pid, shell_pid = os.read(read_end, 100).split()
        assert listen_pid == shell_pid, "LISTEN_PID is the process's pid in the container"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_pidfd_socket(hc: Runtime, tmp_path: Path) -> None:
    cid = hc.start_container()
    sock_path = tmp_path / "pidfd.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    pid_file = tmp_path / "pid"
    try:
        result = hc(
            "exec", "-d", "--pid-file", str(pid_file), "--pidfd-socket", str(sock_path),
            cid, "sleep", "60",
        )  # fmt: skip
        assert result.rc == 0, result
        conn, _ = server.accept()
        _, fds, _, _ = socket.recv_fds(conn, 100, 1)
        conn.close()
        assert os.readlink(f"/proc/self/fd/{fds[0]}") == "anon_inode:[pidfd]"
        with open(f"/proc/self/fdinfo/{fds[0]}") as f:
            pids = [line.split()[1] for line in f if line.startswith("Pid:")]
        assert pids == [pid_file.read_text()]
        signal.pidfd_send_signal(fds[0], signal.SIGKILL)
        os.close(fds[0])
    finally:
        server.close()


def test_exec_tty_through_a_console_socket(hc: Runtime, tmp_path: Path) -> None:
    cid = hc.start_container()
    console = ConsoleSocket(tmp_path / "console.sock")
    pid_file = tmp_path / "pid"
    try:
        result = hc(
            "exec", "-t", "-d", "--console-socket", str(console.path), "--pid-file", str(pid_file),
            cid, "sh",
        )  # fmt: skip
        assert result.rc == 0, result
        master, name = console.receive()
        try:
            assert name.startswith("/dev/pts/")
            os.write(master, b"tty; echo DONE-$((1+1)); exit 3\n")
            out = read_until(master, b"DONE-2")
            assert b"/dev/pts/" in out, out
            pid = int(pid_file.read_text())
            assert wait_for(lambda: process_gone(pid))
        finally:
            os.close(master)
    finally:
        console.close()
    # terminal without a socket while detaching, and a socket without a terminal: runc's errors
    detached = hc("exec", "-t", "-d", cid, "true")
    assert detached.rc == 255 and "cannot allocate tty" in detached.err
    stray = hc("exec", "--console-socket", str(tmp_path / "x"), cid, "true")
    assert stray.rc == 255 and "cannot use console socket" in stray.err


def test_exec_tty_in_the_foreground_attaches_our_terminal(hc: Runtime) -> None:
    cid = hc.start_container()
    master, slave = os.openpty()
    proc = subprocess.Popen(
        hc.argv("exec", "-t", cid, "sh"), stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        os.write(master, b"echo hi-$((6*7)); tty; exit 4\n")
        out = read_until(master, b"/dev/pts/")
        assert b"hi-42" in out and b"/dev/pts/" in out, out
        assert proc.wait(10) == 4
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def test_exec_with_user_namespace_and_seccomp(hc: Runtime, open_rootfs: Path) -> None:
    config = hc.config(["sleep", "300"])
    config["root"]["path"] = str(open_rootfs)
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    cid = hc.start_container(config)
    init = hc.state(cid)["pid"]
    script = "id -u; cat /proc/self/uid_map; grep Seccomp: /proc/self/status; mkdir /tmp/d"
    result = hc("exec", cid, "sh", "-c", script)
    lines = result.out.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "100000", "65536"]
    assert lines[2].split() == ["Seccomp:", "2"]
    assert "Operation not permitted" in result.err
    assert result.rc == 1
    pid_file = hc.tmp / "userns.pid"
    assert hc("exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "60").rc == 0
    pid = int(pid_file.read_text())
    assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink(f"/proc/{init}/ns/user")
    with open(f"/proc/{pid}/status") as f:
        uids = [line.split()[1] for line in f if line.startswith("Uid:")]
    assert uids == ["100000"], "container root is host uid 100000"
