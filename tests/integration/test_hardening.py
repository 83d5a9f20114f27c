"""Attacks runc learned about the hard way, each tried against handcar on real containers.

CVE-2019-5736 (/proc/<pid>/exe of the runtime), CVE-2024-21626 (leaked fds, fd as cwd),
CVE-2021-30465 (mount targets swapped during setup), CVE-2025-31133 (the /dev/null used to mask
replaced by a symlink), CVE-2025-52565 (/dev/console as a symlink), and masking undone from
inside.
"""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from harness import Runtime, wait_for

PYTHON = os.path.realpath("/proc/self/exe")


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _copy_rootfs(hc: Runtime, tmp_path: Path, name: str = "rootfs-copy") -> Path:
    target = tmp_path / name
    subprocess.run(["cp", "-a", str(hc.rootfs), str(target)], check=True)
    return target


def _join_pid_ns(hc: Runtime, pid: int) -> dict[str, Any]:
    config = hc.config()
    for ns in config["linux"]["namespaces"]:
        if ns["type"] == "pid":
            ns["path"] = f"/proc/{pid}/ns/pid"
    return config


# ---- CVE-2019-5736: the runtime's own executable ---------------------------------------------


def test_created_init_exe_is_unreachable_from_the_container(hc: Runtime) -> None:
    """Between create and start the init is handcar's Python code, already holding only the
    container's capabilities. A second container in its pid namespace, with the same
    capabilities and uid, must not reach its /proc/1/exe (the interpreter)."""
    before = _digest(PYTHON)
    first = hc.create(args=["true"])
    pid = hc.state(first)["pid"]
    # It runs host code, from the launcher's read-only image of the interpreter, not from its
    # file (tests/integration/security/test_exe.py attacks that with CAP_SYS_PTRACE).
    assert os.stat(f"/proc/{pid}/exe").st_dev != os.stat(PYTHON).st_dev
    config = _join_pid_ns(hc, pid)
    probe = (
        "readlink /proc/1/exe || echo readlink-denied; "
        "cat /proc/1/exe > /dev/null && echo read-ok || echo read-denied; "
        "(echo x >> /proc/1/exe) 2>/dev/null && echo write-ok || echo write-denied; "
        "ls -l /proc/1/fd/ 2>/dev/null | grep -c . || true"
    )
    result = hc.run(["sh", "-c", probe], config)
    assert result.rc == 0, result
    assert "readlink-denied" in result.out, result.out
    assert "read-denied" in result.out and "write-denied" in result.out, result.out
    assert "python" not in result.out
    assert _digest(PYTHON) == before


def test_exec_helper_exe_is_unreachable_while_it_runs(hc: Runtime) -> None:
    """Race a watcher inside the container against `handcar exec`: the exec helper (host Python
    in the container's pid namespace) must never show its exe to the container."""
    before = _digest(PYTHON)
    watcher = (
        "end=$(($(date +%s) + 8)); while [ $(date +%s) -lt $end ]; do "
        "for p in /proc/[0-9]*; do l=$(readlink $p/exe 2>/dev/null) || continue; "
        'case "$l" in *python*) echo "SEEN $p $l"; '
        'cat $p/exe > /dev/null 2>&1 && echo "READ $p";; esac; done; done; echo watch-done'
    )
    config = hc.config(["sh", "-c", watcher])
    config["process"]["capabilities"] = {
        key: [*caps, "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN"]
        for key, caps in config["process"]["capabilities"].items()
    }
    bundle = hc.bundle(config)
    cid = hc.new_id()
    log = hc.tmp / "watch.out"
    with open(log, "w") as out:
        proc = hc.popen("run", "--bundle", str(bundle), cid, stdout=out, stderr=subprocess.STDOUT)
        try:
            assert wait_for(
                lambda: hc("state", cid).rc == 0 and hc.state(cid)["status"] == "running"
            )
            for _ in range(15):
                hc("exec", cid, "true")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert "watch-done" in text
    assert "SEEN" not in text and "READ" not in text, text
    assert _digest(PYTHON) == before


# ---- CVE-2024-21626: fds ---------------------------------------------------------------------


def test_exec_leaks_no_host_fd_and_refuses_fd_cwds(hc: Runtime) -> None:
    cid = hc.create(args=["sleep", "300"])
    assert hc("start", cid).rc == 0
    leaked = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(leaked, True)
    try:
        result = hc("exec", cid, "ls", "/proc/self/fd", pass_fds=(leaked,))
        assert result.rc == 0, result
        assert result.out.split() == ["0", "1", "2", "3"]
        for fd in [leaked, *range(3, 10)]:
            result = hc("exec", "--cwd", f"/proc/self/fd/{fd}", cid, "pwd", pass_fds=(leaked,))
            assert result.rc != 0, (fd, result)
            assert "cwd" in result.err, result
    finally:
        os.close(leaked)


# ---- mounts: symlinks and races --------------------------------------------------------------


def _host_mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def test_swapped_mount_target_never_lands_on_the_host(hc: Runtime, tmp_path: Path) -> None:
    """CVE-2021-30465: a process flips a mount target between a directory and symlinks that lead
    to a host directory while containers are created on that rootfs."""
    rootfs = _copy_rootfs(hc, tmp_path)
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (rootfs / "race").mkdir()
    config = hc.config(["true"])
    config["root"]["path"] = str(rootfs)
    config["mounts"] += [
        {"destination": "/race/sub", "type": "tmpfs", "source": "tmpfs"},
        {
            "destination": "/race/bind",
            "type": "bind",
            "source": str(tmp_path / "src"),
            "options": ["rbind"],
        },
    ]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "marker").write_text("bind source\n")
    stop = threading.Event()
    links = [str(host_dir), "../../../../../../../../" + str(host_dir)]

    def flip() -> None:
        race = rootfs / "race"
        spare = rootfs / "race.dir"
        i = 0
        while not stop.is_set():
            try:
                race.rename(spare)
                race.symlink_to(links[i % 2])
                race.unlink()
                spare.rename(race)
            except OSError:
                pass
            i += 1

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        for _ in range(25):
            hc.run(["true"], config)
    finally:
        stop.set()
        flipper.join()
    assert list(host_dir.iterdir()) == []
    assert str(host_dir) not in _host_mounts()
    assert str(rootfs) not in _host_mounts()


def test_dev_null_symlink_is_never_used_to_mask(hc: Runtime, tmp_path: Path) -> None:
    """CVE-2025-31133: /dev/null replaced by a symlink to a procfs file must not turn a masked
    path into a window on that file."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "null").symlink_to("/proc/sys/kernel/core_pattern")
    config = hc.config(["sh", "-c", "wc -c < /proc/keys; wc -c < /proc/timer_list"])
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/dev"]
    config["mounts"].append(
        {"destination": "/dev", "type": "bind", "source": str(dev), "options": ["rbind"]}
    )
    result = hc.run(config["process"]["args"], config)
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    if result.rc == 0:
        assert result.out.split()[:2] == ["0", "0"], result
    else:
        assert "maskedPaths" in result.err or "/dev/null" in result.err, result
    assert core_pattern.strip() not in result.out or not core_pattern.strip()
    assert (dev / "null").is_symlink()


def test_masked_path_symlink_stays_inside_the_rootfs(hc: Runtime, tmp_path: Path) -> None:
    """A masked path that is a symlink, absolute or full of `..`, masks what it names inside the
    container and never a host path."""
    rootfs = _copy_rootfs(hc, tmp_path)
    host_file = tmp_path / "host-secret"
    host_file.write_text("host secret\n")
    (rootfs / "m1").symlink_to(str(host_file))
    (rootfs / "m2").symlink_to("../../../../../../../" + str(host_file))
    inner = rootfs / str(host_file).lstrip("/")
    inner.parent.mkdir(parents=True)
    inner.write_text("inner copy\n")
    config = hc.config(["sh", "-c", f"cat {host_file}; echo end"])
    config["root"]["path"] = str(rootfs)
    config["linux"]["maskedPaths"] = ["/m1", "/m2"]
    result = hc.run(config["process"]["args"], config)
    assert result.rc == 0, result
    assert result.out.split() == ["end"]  # the inner copy is masked
    assert host_file.read_text() == "host secret\n"
    assert str(host_file) not in _host_mounts()


def test_dev_console_symlink_is_refused(hc: Runtime, tmp_path: Path) -> None:
    """CVE-2025-52565: the pty is bound on /dev/console only if that is a plain file in /dev."""
    import socket

    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "console").symlink_to("/proc/sys/kernel/core_pattern")
    for name in ("null", "zero", "tty"):
        subprocess.run(["cp", "-a", f"/dev/{name}", str(dev / name)], check=True)
    (dev / "pts").mkdir()
    config = hc.config(["sh", "-c", "grep -c core_pattern /proc/self/mountinfo; true"])
    config["process"]["terminal"] = True
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/dev"]
    config["mounts"].insert(
        1, {"destination": "/dev", "type": "bind", "source": str(dev), "options": ["rbind"]}
    )
    sock_path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    server.settimeout(20)
    bundle = hc.bundle(config)
    cid = hc.new_id()
    creator = hc.popen(
        "create",
        "--bundle",
        str(bundle),
        "--console-socket",
        sock_path,
        cid,
        stderr=subprocess.PIPE,
        text=True,
    )
    master = -1
    try:
        try:
            conn, _ = server.accept()
            _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
            master = fds[0] if fds else -1
            conn.close()
        except (TimeoutError, OSError):
            pass
        _, err = creator.communicate(timeout=30)
        if creator.returncode == 0:
            assert hc("start", cid).rc == 0
            output = b""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not select.select([master], [], [], 0.5)[0]:
                    continue
                try:
                    chunk = os.read(master, 1024)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            assert output.split()[0] == b"0", output
        else:
            assert "/dev/console" in err, err
    finally:
        if master >= 0:
            os.close(master)
        server.close()
    assert (dev / "console").is_symlink()


# ---- masking cannot be undone ------------------------------------------------------------------


def test_masks_cannot_be_undone_with_default_caps(hc: Runtime) -> None:
    script = (
        "umount /proc/timer_list 2>/dev/null && echo umount-timer-list; "
        "umount -l /sys/firmware 2>/dev/null && echo umount-firmware; "
        "mount -t proc proc /tmp 2>/dev/null && echo new-proc; "
        "mount -o remount,rw /proc/sys 2>/dev/null && echo rw-sys; "
        "mount --bind /proc/sys /tmp 2>/dev/null && echo bind-sys; "
        "echo x > /proc/sys/kernel/hostname 2>/dev/null && echo wrote-sys; "
        "wc -c < /proc/timer_list; ls /sys/firmware | wc -l"
    )
    result = hc.run(["sh", "-c", script])
    assert result.rc == 0, result
    assert result.out.split() == ["0", "0"], result.out


def test_shebang_to_proc_self_exe_cannot_reach_the_host_interpreter(
    hc: Runtime, tmp_path: Path
) -> None:
    """CVE-2019-5736's other door: the program's interpreter is /proc/self/exe, resolved while
    the exec'ing process still runs host code. The container (given the host's loader and
    stdlib, as an image could carry them) then runs the host interpreter and holds its inode."""
    rootfs = _copy_rootfs(hc, tmp_path)
    evil = rootfs / "evil"
    evil.write_text(
        "#!/proc/self/exe\nimport os\n"
        "fd = os.open('/proc/self/exe', os.O_RDONLY)\n"
        "print('INODE', os.fstat(fd).st_ino, os.fstat(fd).st_dev)\n"
    )
    evil.chmod(0o755)
    config = hc.config(["/evil"])
    config["root"]["path"] = str(rootfs)
    for path in (
        "/lib64",
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        os.path.dirname(os.__file__),
    ):
        if os.path.isdir(path):
            config["mounts"].append(
                {"destination": path, "type": "bind", "source": path, "options": ["rbind", "ro"]}
            )
    result = hc.run(["/evil"], config)
    st = os.stat(PYTHON)
    assert f"INODE {st.st_ino} {st.st_dev}" not in result.out, result
    # The interpreter resolved is handcar's sealed trampoline, which refuses to serve as one.
    assert result.rc == 127, result
