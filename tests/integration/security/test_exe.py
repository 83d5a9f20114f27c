"""The host interpreter behind /proc/<pid>/exe (the CVE-2019-5736 class).

handcar's container-visible processes are Python: the init from create until `start`, exec's
process until its final exec, and a pod sibling's init while it is being created. A container
process with CAP_SYS_PTRACE opens their /proc/<pid>/exe read-only; once no Python runs, it
reopens that fd for writing and overwrites the interpreter, and with it every Python program
on the host. Each test below performs that attack against a real container. The exe must never
be the host's interpreter file: it must be a file on a read-only mount or a sealed memfd.

The full overwrite is shown on a private copy of the interpreter only (a `venv --copies` with
its own launcher), never on the real one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from handcar.spec.bundle import make_rootfs
from harness import HANDCAR, ROOT, Runtime, wait_for

HOST_INTERPRETER = os.path.realpath(ROOT / ".venv" / "bin" / "python3")

# Lists `PID DEV INO` for every other process's exe, as the attacker sees it. The stat follows
# the /proc magic link to the file itself, so the numbers are those of the host's inode when
# the exe is a host file.
SCAN = (
    'for d in /proc/[0-9]*; do p="${d#/proc/}"; [ "$p" = "$$" ] && continue; '
    'echo "$p $(stat -L -c "%d %i" "$d/exe" 2>/dev/null)"; done'
)


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _exposed(entries: str, interpreter: str = HOST_INTERPRETER) -> list[str]:
    """The lines of a SCAN whose exe is the interpreter's own file."""
    dev, ino = _identity(interpreter)
    return [line for line in entries.splitlines() if line.split()[1:] == [str(dev), str(ino)]]


def _protected(pid: int, interpreter: str = HOST_INTERPRETER) -> str:
    """Why /proc/<pid>/exe cannot be written through, or "" when it can (the host's side)."""
    fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == _identity(interpreter):
            return ""
        if os.fstatvfs(fd).f_flag & os.ST_RDONLY:
            return "read-only mount"
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            return ""
        wanted = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
        return "sealed memfd" if seals & wanted == wanted else ""
    finally:
        os.close(fd)


def _ptrace_config(hc: Runtime, rootfs: Path | None = None, args: list[str] | None = None) -> Any:
    """A container whose processes hold CAP_SYS_PTRACE, a common setting for debugging."""
    config = hc.config(args or ["sleep", "300"])
    caps = config["process"]["capabilities"]
    for key in ("bounding", "effective", "permitted"):
        caps[key] = sorted(set(caps.get(key, [])) | {"CAP_SYS_PTRACE"})
    if rootfs is not None:
        config["root"]["path"] = str(rootfs)
    return config


def _hold_hook(tmp: Path) -> tuple[dict[str, Any], Path, Path]:
    """A createRuntime hook that holds create open until `release` exists (30 s at most)."""
    held, release = tmp / "held", tmp / "release"
    script = (
        f"touch {held}; i=0; while [ ! -e {release} ] && [ $i -lt 600 ]; do "
        "sleep 0.05; i=$((i+1)); done"
    )
    return {"path": "/bin/sh", "args": ["sh", "-c", script]}, held, release


def _pid(hc: Runtime, cid: str) -> int:
    pid: int = hc.state(cid)["pid"]
    return pid


# ---- the waiting init, the runtime, the launcher's spellings of a command --------------------


def test_waiting_init_is_not_the_host_interpreter(hc: Runtime) -> None:
    """pid 1 of a created container, seen from a process exec'd into it with CAP_SYS_PTRACE."""
    cid = hc.create(_ptrace_config(hc))
    script = (
        f"{SCAN}; exec 3</proc/1/exe || exit 9; "
        "if (echo x 1<>/proc/self/fd/3) 2>/dev/null; then echo WROTE; else echo REFUSED; fi"
    )
    result = hc("exec", "--env", "HOME=/", cid, "sh", "-c", script)
    assert result.rc == 0, result
    assert not _exposed(result.out), f"pid 1's exe is {HOST_INTERPRETER}: {result.out}"
    assert "REFUSED" in result.out, result
    assert _protected(_pid(hc, cid)), "the waiting init's exe is a writable host file"


@pytest.mark.parametrize(
    ("global_flags", "command"),
    [
        ([], ["create"]),
        (["--debug", "--log-format", "json"], ["create"]),
        (["--log=/dev/null", "-log-format=text"], ["create"]),
        (["--log", "/dev/null"], ["run", "--detach"]),
    ],
    ids=["create", "global-flags", "inline-values", "run"],
)
def test_every_spelling_of_create_protects_the_exe(
    hc: Runtime, tmp_path: Path, global_flags: list[str], command: list[str]
) -> None:
    """The launcher finds the command behind runc's global flags, as the CLI does: the runtime
    (whose exe the init inherits) and the init, held in the middle of create."""
    hook, held, release = _hold_hook(tmp_path)
    config = _ptrace_config(hc)
    config["hooks"] = {"createRuntime": [hook]}
    bundle = hc.bundle(config)
    cid = hc.new_id()
    argv = [*global_flags, *command, "--bundle", str(bundle), cid]
    shown = " ".join([*global_flags, *command])
    proc = hc.popen(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(held.exists, 30), "the createRuntime hook never ran"
        assert _protected(proc.pid), f"`handcar {shown}` runs the host interpreter"
        assert _protected(_pid(hc, cid)), f"the init of `handcar {shown}` is the host interpreter"
    finally:
        release.touch()
        assert proc.wait(60) == 0


# ---- exec's process before its final exec ----------------------------------------------------


def test_exec_process_is_not_the_host_interpreter(hc: Runtime, tmp_path: Path) -> None:
    """exec's process is Python until its final exec. The container holds it there: with no
    HOME in its environment it reads the container's /etc/passwd, which the attacker made a
    FIFO. Meanwhile a second process exec'd into the container inspects it."""
    rootfs = tmp_path / "rootfs"
    make_rootfs(str(rootfs))
    cid = hc.create(_ptrace_config(hc, rootfs))
    assert hc("start", cid).rc == 0
    passwd = rootfs / "etc" / "passwd"
    passwd.unlink()
    os.mkfifo(passwd)
    held = hc.popen(
        "exec", cid, "true", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )  # its process blocks in open("/etc/passwd")
    try:
        # Poll until a process other than pid 1 (busybox sleep) has an exe that is not busybox.
        dev, ino = _identity(str(rootfs / "bin" / "busybox"))
        watch = (
            f"i=0; while [ $i -lt 400 ]; do out=$({SCAN} | grep -v '^1 ' | grep -v ' {dev} {ino}$'"
            ' | grep \' \'); [ -n "$out" ] && { echo "$out"; exit 0; }; sleep 0.025; '
            "i=$((i+1)); done; exit 3"
        )
        result = hc("exec", "--env", "HOME=/", cid, "sh", "-c", watch)
        assert result.rc == 0, f"exec's process never showed up: {result}"
        assert not _exposed(result.out), f"exec's process exe is {HOST_INTERPRETER}: {result.out}"
    finally:
        _release_fifo(passwd)
        held.wait(60)
    assert held.returncode == 0


def _release_fifo(path: Path) -> None:
    """Open and close the FIFO's write end: the blocked reader gets EOF and goes on."""
    for _ in range(100):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError:  # ENXIO: no reader yet
            time.sleep(0.05)


# ---- a pod: another container shares the pid namespace ---------------------------------------


def test_pod_sibling_init_is_not_the_host_interpreter(hc: Runtime, tmp_path: Path) -> None:
    """A second container joins the first's pid namespace by path, as in a pod; while its
    create is held open (a createRuntime hook), the first container looks at its init."""
    first = hc.create(_ptrace_config(hc))
    assert hc("start", first).rc == 0
    hook, held, release = _hold_hook(tmp_path)
    config = hc.config(["sleep", "300"])
    for ns in config["linux"]["namespaces"]:
        if ns["type"] == "pid":
            ns["path"] = f"/proc/{_pid(hc, first)}/ns/pid"
    config["hooks"] = {"createRuntime": [hook]}
    bundle = hc.bundle(config)
    second = hc.new_id()
    proc = hc.popen(
        "create",
        "--bundle",
        str(bundle),
        second,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(held.exists, 30), "the createRuntime hook never ran"
        result = hc("exec", "--env", "HOME=/", first, "sh", "-c", SCAN)
        assert result.rc == 0, result
        dev, ino = _identity(str(hc.rootfs / "bin" / "busybox"))
        others = [
            line
            for line in result.out.splitlines()
            if not line.startswith("1 ") and line.split()[1:] != [str(dev), str(ino)]
        ]
        assert others, f"the sibling's init is not in sight: {result.out}"
        assert not _exposed(result.out), f"the sibling's init exe is {HOST_INTERPRETER}: {others}"
    finally:
        release.touch()
        assert proc.wait(60) == 0


# ---- crashcart's session keeper -------------------------------------------------------------


def test_crashcart_keeper_is_not_the_host_interpreter(hc: Runtime, tmp_path: Path) -> None:
    """crashcart's keeper is a fork of crashcart that joins the container's pid namespace and
    stays for the whole session, as the parent of the session's command: that command looks
    at its parent's exe."""
    cid = hc.create(_ptrace_config(hc))
    assert hc("start", cid).rc == 0
    crashcart = str(ROOT / ".venv" / "bin" / "crashcart")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    built = subprocess.run(
        [crashcart, "build", "--tools", "busybox", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    look = 'echo "$PPID $(stat -L -c "%d %i" /proc/$PPID/exe)"'
    session = subprocess.run(
        [crashcart, "--image", built.stdout.strip(), "--root", str(hc.root), cid]
        + ["--", "sh", "-c", look],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert session.returncode == 0, session.stderr
    assert len(session.stdout.split()) == 3, session.stdout  # the keeper's exe was readable
    assert not _exposed(session.stdout), f"the keeper's exe is {HOST_INTERPRETER}"


# ---- the whole attack, on a private copy of the interpreter ----------------------------------


def _private_launcher(tmp_path: Path, image: str) -> tuple[str, str]:
    """(launcher, interpreter): a `venv --copies` interpreter that nothing else runs, and a
    handcar launcher that the Makefile builds for it, on the installed handcar. For "memfd"
    the empty layer that overlayfs needs is removed after the build: the launcher must then
    fall back to its sealed copy, as it does where it may not mount (rootless)."""
    venv = tmp_path / "venv"
    subprocess.run(
        [HOST_INTERPRETER, "-m", "venv", "--copies", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    bin_dir, layer = tmp_path / "bin", tmp_path / "layer"
    bin_dir.mkdir()
    make = ["make", "-s", "-C", str(ROOT), "launchers", f"BIN={bin_dir}", f"LAYER={layer}"]
    make += [f"VPY={venv / 'bin' / 'python3'}", f"SITE={_site()}"]
    subprocess.run(make, check=True, timeout=120)
    if image == "memfd" and layer.exists():
        layer.rmdir()
    interpreter = os.path.realpath(venv / "bin" / "python3")
    assert interpreter != HOST_INTERPRETER
    return str(bin_dir / "handcar"), interpreter


def _site() -> str:
    """The site-packages directory that holds the installed handcar."""
    code = "import handcar, os; print(os.path.dirname(os.path.dirname(handcar.__file__)))"
    python = str(ROOT / ".venv" / "bin" / "python3")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("image", ["overlay", "memfd"])
def test_container_cannot_overwrite_the_interpreter(
    hc: Runtime, tmp_path: Path, image: str
) -> None:
    """The attack to the end: open pid 1's exe in the created state, wait until `start` has
    left no Python running, reopen the fd for writing and write."""
    launcher, interpreter = _private_launcher(tmp_path, image)
    before = hashlib.sha256(Path(interpreter).read_bytes()).hexdigest()
    shared = tmp_path / "shared"
    shared.mkdir()
    config = _ptrace_config(hc)
    config["mounts"].append(
        {"destination": "/shared", "type": "bind", "source": str(shared), "options": ["rbind"]}
    )
    attack = (
        "exec 3</proc/1/exe || exit 9; stat -L -c '%d %i' /proc/self/fd/3 > /shared/target; "
        "touch /shared/opened; i=0; while [ ! -e /shared/go ] && [ $i -lt 600 ]; do "
        "sleep 0.05; i=$((i+1)); done; "
        "if (echo PWNED 1<>/proc/self/fd/3) 2>/shared/error; then echo WROTE > /shared/result; "
        "else echo REFUSED > /shared/result; fi"
    )
    hc.binary = launcher
    try:
        bundle = hc.bundle(config)
        cid = hc.new_id()
        created = hc("create", "--bundle", str(bundle), cid)
        assert created.rc == 0, created
        init = _pid(hc, cid)
        busybox = _identity(str(hc.rootfs / "bin" / "busybox"))
        protection = _protected(init, interpreter)
        assert hc("exec", "--detach", "--env", "HOME=/", cid, "sh", "-c", attack).rc == 0
        assert wait_for((shared / "opened").exists, 30)
        assert hc("start", cid).rc == 0
        # The init has exec'd sleep: from here on no process runs the interpreter.
        assert wait_for(lambda: _identity(f"/proc/{init}/exe") == busybox, 30)
        (shared / "go").touch()
        assert wait_for((shared / "result").exists, 30)
        target = (shared / "target").read_text().split()
        outcome = (shared / "result").read_text().strip()
        after = hashlib.sha256(Path(interpreter).read_bytes()).hexdigest()
    finally:
        hc.binary = HANDCAR  # the fixture's clean-up must not depend on the private copy
    assert after == before, "the container overwrote the interpreter"
    assert outcome == "REFUSED", (shared / "error").read_text()
    assert target != [str(n) for n in _identity(interpreter)], "pid 1's exe was the interpreter"
    expected = {"overlay": "read-only mount", "memfd": "sealed memfd"}[image]
    assert protection == expected, f"pid 1's exe is {interpreter}: {protection or 'writable'}"


# ---- the library API, in a process that was not started from a protected image ---------------

_LIBRARY = """
import sys
sys.path.insert(0, sys.argv[1])
from handcar.errors import HandcarError
from handcar.runtime.container import Runtime
from handcar.runtime.exec import ExecOptions, exec_process
from handcar.runtime.lifecycle import CreateOptions

runtime = Runtime(sys.argv[2])
try:
    if sys.argv[3] == "create":
        print("created", runtime.create(sys.argv[4], CreateOptions(sys.argv[5])))
    else:
        process = {"args": ["true"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
        print("exec'd", exec_process(runtime, sys.argv[4], process, ExecOptions()))
except HandcarError as err:
    print("refused", err)
"""


@pytest.mark.parametrize("call", ["create", "exec"])
def test_library_refuses_an_unprotected_interpreter(hc: Runtime, call: str) -> None:
    """`Runtime.create` and `exec_process` called from a program's own interpreter (the host's
    file): the init or exec's process would run that file in the container's sight, so they
    refuse with one line that says why."""
    if call == "create":
        cid = hc.new_id()
        args = [cid, str(hc.bundle(_ptrace_config(hc)))]
    else:
        args = [hc.create(_ptrace_config(hc))]
    out = hc.tmp / f"library-{call}.out"
    with out.open("w") as stdout:  # a file: a created init would hold a pipe open
        subprocess.run(
            [HOST_INTERPRETER, "-I", "-S", "-c", _LIBRARY, str(ROOT / "src"), str(hc.root)]
            + [call, *args],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    text = out.read_text()
    assert text.startswith("refused "), text
    assert "/proc/self/exe" in text and len(text.splitlines()) == 1, text
