"""seccomp: compile in this process, load in a real forked child, watch what the kernel does
(compiling alone: tests/unit/test_seccomp_compile.py).

Every child first enters private mount and UTS namespaces, so a probe that is wrongly allowed
(mount, hostname) cannot touch the host.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handcar import linux
from handcar.linux import libseccomp as scmp
from handcar.seccomp import compile as seccomp
from handcar.seccomp.load import load_filter
from handcar.seccomp.notify import send_listener_fd
from harness import HANDCAR, read_to_eof, wait_for

PODMAN_PROFILE = Path("/usr/share/containers/seccomp.json")
BUSYBOX = "/bin/busybox"
# podman's default capabilities (containers.conf), which its profile's includes/excludes key on.
PODMAN_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
]
CAP_NUMBERS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_SYS_CHROOT": 18,
    "CAP_SETFCAP": 31,
}

SYS_GETPPID = 110
SYS_MOUNT = 165
SYS_SWAPON = 167
SYS_UNSHARE = 272
EPERM, EXDEV, ENOSYS = 1, 18, 38

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

needs_podman_profile = pytest.mark.skipif(
    not PODMAN_PROFILE.exists(),
    reason="podman's profile comes with Debian's golang-github-containers-common",
)


def podman_section(profile: dict[str, object], caps: list[str] = PODMAN_CAPS) -> dict[str, object]:
    """The OCI section podman generates from its profile on amd64 (containers/common's rules:
    archMap gives the architectures; includes/excludes select entries by arch and caps)."""
    arches: list[str] = []
    for entry in profile["archMap"]:  # type: ignore[attr-defined]
        if entry["architecture"] == "SCMP_ARCH_X86_64":
            arches = [entry["architecture"], *entry["subArchitectures"]]
    syscalls = []
    for call in profile["syscalls"]:  # type: ignore[attr-defined]
        includes, excludes = call.get("includes") or {}, call.get("excludes") or {}
        if includes.get("arches") and "amd64" not in includes["arches"]:
            continue
        if not set(includes.get("caps") or []) <= set(caps):
            continue
        if "amd64" in (excludes.get("arches") or []) or set(excludes.get("caps") or []) & set(caps):
            continue
        rule = {"names": call["names"], "action": call["action"]}
        for key in ("errnoRet", "args"):
            if call.get(key):
                rule[key] = call[key]
        syscalls.append(rule)
    return {
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "architectures": arches,
        "syscalls": syscalls,
    }


@pytest.fixture(scope="module")
def podman() -> dict[str, object]:
    if not PODMAN_PROFILE.exists():
        pytest.skip("podman's profile is not installed")
    return podman_section(json.loads(PODMAN_PROFILE.read_text()))


def call(nr: int, *args: int) -> tuple[int, int]:
    """A raw syscall: (return value, errno)."""
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args))
    return int(result), ctypes.get_errno()


def mount_tmpfs() -> int:
    """Try to mount a tmpfs on /mnt (the child is in its own mount namespace); the errno."""
    ctypes.set_errno(0)
    libc.mount(b"x", b"/mnt", b"tmpfs", ctypes.c_ulong(0), None)
    return ctypes.get_errno()


def drop_to(caps: list[str]) -> None:
    """Keep only `caps` in every set, the bounding set included, as a container's init would."""
    keep = 0
    for name in caps:
        keep |= 1 << CAP_NUMBERS[name]
    for cap in range(linux.last_cap() + 1):
        if not keep & (1 << cap):
            linux.bounding_drop(cap)
    linux.capset(keep, keep, 0)


def in_child(
    compiled: seccomp.CompiledFilter,
    probe: Callable[[int | None], object],
    caps: list[str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, str]:
    """Fork; the child isolates itself, loads the filter and runs probe(listener fd).
    Returns the child's wait status and repr(probe's result)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_end)
            linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWUTS)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            if caps is not None:
                drop_to(caps)
            linux.set_no_new_privs()
            fd = load_filter(compiled)
            os.write(write_end, repr(probe(fd)).encode())
        except BaseException as err:  # report anything to the parent, never return into pytest
            os.write(write_end, f"error {err!r}".encode())
            code = 99
        os._exit(code)
    os.close(write_end)
    try:
        output = read_to_eof(read_end, timeout).decode()
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(read_end)
        _reap(pid)
    return status, output


def _reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def allow_all_but(rules: list[dict[str, object]], **extra: object) -> seccomp.CompiledFilter:
    return seccomp.compile_filter(
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules, **extra}, cache_dir=False
    )


# ---------------------------------------------------------------------------------------------
# podman's default profile


@needs_podman_profile
def test_podman_profile_refuses_mount_and_swapon_allows_userns(podman: dict[str, object]) -> None:
    compiled = seccomp.compile_filter(podman, cache_dir=False)

    def probe(_fd: int | None) -> object:
        return {
            "mount": mount_tmpfs(),
            "swapon": call(SYS_SWAPON, 0, 0),
            "unshare_user": call(SYS_UNSHARE, linux.CLONE_NEWUSER),
            "listdir": len(os.listdir("/")) > 0,
            "getppid": call(SYS_GETPPID)[0] > 0,
            "beyond_profile": call(1000),
        }

    status, out = in_child(compiled, probe, caps=PODMAN_CAPS)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
    result = eval(out)
    assert result["mount"] == EPERM  # capability refusal: podman's profile allows mount itself
    assert result["swapon"] == (-1, EPERM)  # the profile's own ERRNO(EPERM)
    assert result["unshare_user"] == (0, 0)
    assert result["listdir"] and result["getppid"]
    assert result["beyond_profile"] == (-1, ENOSYS)


@needs_podman_profile
def test_podman_profile_itself_denies_swapon_but_not_mount(podman: dict[str, object]) -> None:
    """With every capability kept, only the filter can refuse: swapon is denied by the profile,
    mount is left to capabilities (here it succeeds, in the child's own mount namespace)."""
    compiled = seccomp.compile_filter(podman, cache_dir=False)
    status, out = in_child(compiled, lambda _fd: (call(SYS_SWAPON, 0, 0), mount_tmpfs()))
    assert eval(out) == ((-1, EPERM), 0)


@needs_podman_profile
def test_podman_profile_blocks_audit_socket_and_personality(podman: dict[str, object]) -> None:
    compiled = seccomp.compile_filter(podman, cache_dir=False)
    af_netlink, netlink_audit, sys_socket, sys_personality = 16, 9, 41, 135

    def probe(_fd: int | None) -> object:
        audit = call(sys_socket, af_netlink, socket.SOCK_RAW, netlink_audit)
        route = call(sys_socket, af_netlink, socket.SOCK_RAW, 0)
        if route[0] >= 0:
            os.close(route[0])
        return audit, route[0] >= 0, call(sys_personality, 0xFFFFFFFF)[1], call(sys_personality, 4)

    status, out = in_child(compiled, probe, caps=PODMAN_CAPS)
    audit, route_ok, query, other = eval(out)
    assert audit == (-1, 22) and route_ok  # EINVAL for NETLINK_AUDIT without CAP_AUDIT_WRITE
    assert query == 0
    assert other == (-1, ENOSYS)  # not among the allowed personalities: the default action


# ---------------------------------------------------------------------------------------------
# runc side by side

PROBES = [
    ("mount", f"{BUSYBOX} mount -t tmpfs x /mnt"),
    ("swapon", f"{BUSYBOX} swapon {BUSYBOX}"),
    ("unshare_user", f"{BUSYBOX} unshare -U {BUSYBOX} true"),
    ("unshare_user_mount", f"{BUSYBOX} unshare -U -m {BUSYBOX} true"),
    ("unshare_mount", f"{BUSYBOX} unshare -m {BUSYBOX} true"),
    ("unshare_net", f"{BUSYBOX} unshare -n {BUSYBOX} true"),
    ("ls", f"{BUSYBOX} ls /"),
    ("chroot", f"{BUSYBOX} chroot / {BUSYBOX} true"),
    ("hostname", f"{BUSYBOX} hostname probe"),
    ("renice", f"{BUSYBOX} renice -n -5 -p $$"),
    ("ionice", f"{BUSYBOX} ionice -c 1 -n 0 {BUSYBOX} true"),
    ("uname", f"{BUSYBOX} uname -a"),
]
PROBE_SCRIPT = "".join(
    f'err=$({command} 2>&1 >/dev/null); echo "{name} rc=$? $err"\n' for name, command in PROBES
)
PROBE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"}


def _runc_bundle(root: Path, section: dict[str, object]) -> Path:
    rootfs = root / "rootfs"
    for name in ("bin", "mnt", "proc", "dev", "sys", "tmp"):
        (rootfs / name).mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    subprocess.run(["runc", "spec", "--bundle", str(root)], check=True)
    config = json.loads((root / "config.json").read_text())
    process = config["process"]
    process.update(terminal=False, args=[BUSYBOX, "sh", "-c", PROBE_SCRIPT], noNewPrivileges=True)
    process["env"] = [f"{k}={v}" for k, v in PROBE_ENV.items()]
    process["capabilities"] = {kind: PODMAN_CAPS for kind in ("bounding", "effective", "permitted")}
    config["root"]["readonly"] = False
    config["linux"]["seccomp"] = section
    (root / "config.json").write_text(json.dumps(config))
    return root


def _under_runc(bundle: Path) -> str:
    container = f"handcar-seccomp-test-{os.getpid()}"
    try:
        done = subprocess.run(
            ["runc", "run", "--bundle", str(bundle), container],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    finally:
        subprocess.run(["runc", "delete", "--force", container], capture_output=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _under_handcar_filter(section: dict[str, object]) -> str:
    compiled = seccomp.compile_filter(section, cache_dir=False)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.dup2(write_end, 1)
            linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWUTS)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            drop_to(PODMAN_CAPS)
            linux.set_no_new_privs()
            load_filter(compiled)
            os.execve(BUSYBOX, [BUSYBOX, "sh", "-c", PROBE_SCRIPT], PROBE_ENV)
        finally:
            os._exit(127)
    os.close(write_end)
    try:
        return read_to_eof(read_end, 30).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)


@needs_podman_profile
@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static is not installed")
def test_same_refusals_as_runc(podman: dict[str, object], tmp_path: Path) -> None:
    under_runc = _under_runc(_runc_bundle(tmp_path, podman))
    under_handcar = _under_handcar_filter(podman)
    assert under_handcar.splitlines() == under_runc.splitlines()
    outcome = dict(line.split(" ", 1) for line in under_runc.splitlines())
    assert outcome["mount"].startswith("rc=1 mount: permission denied")
    assert outcome["swapon"].startswith(f"rc=1 swapon: {BUSYBOX}: Operation not permitted")
    assert outcome["unshare_user"] == "rc=0 "
    assert outcome["ls"] == "rc=0 "


def _under_handcar_runtime(bundle: Path, root: Path) -> str:
    # The installed launcher: create refuses to run from a writable interpreter file.
    handcar = [HANDCAR, "--root", str(root)]
    container = f"handcar-seccomp-test-{os.getpid()}"
    try:
        done = subprocess.run(
            [*handcar, "run", "--bundle", str(bundle), container],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    finally:
        subprocess.run([*handcar, "delete", "--force", container], capture_output=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_podman_profile
@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static is not installed")
def test_handcar_runtime_matches_runc(podman: dict[str, object], tmp_path: Path) -> None:
    """The whole path: the runtime compiles the section, its init loads it, the probes run."""
    bundle = _runc_bundle(tmp_path / "bundle", podman)
    under_runc = _under_runc(bundle)
    assert (
        _under_handcar_runtime(bundle, tmp_path / "state").splitlines() == under_runc.splitlines()
    )


# ---------------------------------------------------------------------------------------------
# actions


def test_errno_with_errno_ret_and_default_eperm() -> None:
    compiled = allow_all_but(
        [
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": EXDEV},
            {"names": ["swapon"], "action": "SCMP_ACT_ERRNO"},
        ]
    )
    status, out = in_child(compiled, lambda _fd: (call(SYS_GETPPID), call(SYS_SWAPON, 0, 0)))
    assert eval(out) == ((-1, EXDEV), (-1, EPERM))


def test_allow_and_log_let_the_call_through() -> None:
    section = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EXDEV,
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"],
        "syscalls": [
            {"names": ["getppid"], "action": "SCMP_ACT_LOG"},
            # What the child needs to report back and exit.
            {"names": ["write", "exit_group", "exit"], "action": "SCMP_ACT_ALLOW"},
        ],
    }
    compiled = seccomp.compile_filter(section, cache_dir=False)
    assert compiled.flags == scmp.SECCOMP_FILTER_FLAG_LOG
    parent = os.getpid()
    status, out = in_child(compiled, lambda _fd: (call(SYS_GETPPID)[0] == parent, call(39)))
    assert eval(out) == (True, (-1, EXDEV))  # getpid(39) falls to the default with its errno


def test_trap_delivers_sigsys_to_a_handler() -> None:
    compiled = allow_all_but([{"names": ["getppid"], "action": "SCMP_ACT_TRAP"}])

    def probe(_fd: int | None) -> object:
        trapped = []
        signal.signal(signal.SIGSYS, lambda signum, frame: trapped.append(signum))
        call(SYS_GETPPID)
        return trapped

    status, out = in_child(compiled, probe)
    assert eval(out) == [signal.SIGSYS]


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL"])
def test_kill_ends_the_process_even_with_a_handler(action: str) -> None:
    compiled = allow_all_but([{"names": ["getppid"], "action": action}])

    def probe(_fd: int | None) -> object:
        signal.signal(signal.SIGSYS, lambda signum, frame: None)
        return call(SYS_GETPPID)

    status, out = in_child(compiled, probe)
    assert out == "" and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_kill_thread_spares_the_other_threads() -> None:
    compiled = allow_all_but([{"names": ["getppid"], "action": "SCMP_ACT_KILL_THREAD"}])

    def probe(_fd: int | None) -> object:
        reached = []
        worker = threading.Thread(target=lambda: reached.append(call(SYS_GETPPID)), daemon=True)
        worker.start()
        # The worker dies inside the syscall, so it can never be joined: its task goes.
        wait_for(lambda: not os.path.exists(f"/proc/self/task/{worker.native_id}"))
        return "main alive", reached

    status, out = in_child(compiled, probe)
    assert eval(out) == ("main alive", [])


def test_trace_without_a_tracer_fails_with_enosys() -> None:
    compiled = allow_all_but([{"names": ["getppid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7}])
    status, out = in_child(compiled, lambda _fd: call(SYS_GETPPID))
    assert eval(out) == (-1, ENOSYS)


def test_notify_sends_the_listener_and_answers_a_syscall(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")
    compiled = allow_all_but(
        [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}],
        listenerPath=path,
        flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
    )
    assert compiled.needs_listener
    assert compiled.flags & scmp.SECCOMP_FILTER_FLAG_NEW_LISTENER
    state = b'{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":%d,"bundle":"/b"}'
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(path)
    agent.listen(1)
    agent.settimeout(10)

    def probe(fd: int | None) -> object:
        assert fd is not None
        send_listener_fd(path, fd, state % os.getpid(), 'meta "data"')
        os.close(fd)
        return call(SYS_GETPPID)

    result: dict[str, Any] = {}
    thread = threading.Thread(target=_serve_one_notification, args=(agent, result), daemon=True)
    thread.start()
    try:
        status, out = in_child(through_bytes(compiled), probe)
    finally:
        thread.join(10)
        agent.close()
    message = json.loads(result["message"])
    assert message["fds"] == ["seccompFd"] and message["metadata"] == 'meta "data"'
    assert message["pid"] == message["state"]["pid"] and message["state"]["id"] == "c1"
    assert message["ociVersion"]
    assert result["nr"] == SYS_GETPPID and result["pid"] == message["pid"]
    assert eval(out) == (4242, 0)


def through_bytes(compiled: seccomp.CompiledFilter) -> seccomp.CompiledFilter:
    """Round-trip through bytes, as the runtime may hand the filter to the init."""
    return seccomp.CompiledFilter.from_bytes(compiled.to_bytes())


def _serve_one_notification(agent: socket.socket, result: dict[str, object]) -> None:
    conn, _ = agent.accept()
    with conn:
        message, fds, _, _ = socket.recv_fds(conn, 65536, 1)
        while chunk := conn.recv(65536):
            message += chunk
    result["message"] = message.decode()
    listener = fds[0]
    try:
        notification = scmp.notif_recv(listener)
        result["nr"], result["pid"] = notification.nr, notification.pid
        scmp.notif_send(listener, notification.id, val=4242)
    finally:
        os.close(listener)


# ---------------------------------------------------------------------------------------------
# operators and arguments

OPERATOR_CASES = [
    # (op, value, valueTwo, arg0 values that match, arg0 values that do not)
    ("SCMP_CMP_EQ", 5, 0, [5], [4, 6]),
    ("SCMP_CMP_NE", 5, 0, [4, 6], [5]),
    ("SCMP_CMP_LT", 5, 0, [0, 4], [5, 6]),
    ("SCMP_CMP_LE", 5, 0, [4, 5], [6]),
    ("SCMP_CMP_GE", 5, 0, [5, 1 << 40], [4]),
    ("SCMP_CMP_GT", 5, 0, [6, 1 << 63], [5]),
    ("SCMP_CMP_MASKED_EQ", 0xF0, 0x30, [0x30, 0x3F, 0x135], [0x20, 0xF0]),
    ("SCMP_CMP_EQ", 1 << 40, 0, [1 << 40], [0, 1 << 41]),  # 64-bit values compare whole
]


@pytest.mark.parametrize(("op", "value", "value_two", "hits", "misses"), OPERATOR_CASES)
def test_operator(op: str, value: int, value_two: int, hits: list[int], misses: list[int]) -> None:
    arg = {"index": 0, "value": value, "valueTwo": value_two, "op": op}
    rule = {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": EXDEV, "args": [arg]}
    compiled = allow_all_but([rule])
    status, out = in_child(compiled, lambda _fd: [call(SYS_GETPPID, a)[1] for a in hits + misses])
    assert eval(out) == [EXDEV] * len(hits) + [0] * len(misses)


def test_conditions_on_different_args_are_anded() -> None:
    args = [
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
        {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"},
    ]
    compiled = allow_all_but([{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "args": args}])
    status, out = in_child(
        compiled, lambda _fd: [call(SYS_GETPPID, *a)[1] for a in ((1, 2), (1, 3), (0, 2))]
    )
    assert eval(out) == [EPERM, 0, 0]


def test_conditions_on_one_arg_become_separate_rules_like_runc() -> None:
    args = [
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
        {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
    ]
    compiled = allow_all_but([{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "args": args}])
    status, out = in_child(compiled, lambda _fd: [call(SYS_GETPPID, a)[1] for a in (1, 2, 3)])
    assert eval(out) == [EPERM, EPERM, 0]


# ---------------------------------------------------------------------------------------------
# names, defaults, the ENOSYS stub


def test_unknown_names_are_skipped_and_known_ones_kept() -> None:
    compiled = allow_all_but(
        [{"names": ["no_such_syscall_at_all", "getppid"], "action": "SCMP_ACT_ERRNO"}]
    )
    status, out = in_child(compiled, lambda _fd: call(SYS_GETPPID))
    assert eval(out) == (-1, EPERM)


def test_default_errno_ret_and_enosys_for_newer_syscalls() -> None:
    allowed = ["write", "exit_group", "getppid", "mount"]
    section = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EXDEV,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}],
    }
    compiled = seccomp.compile_filter(section, cache_dir=False)
    # Up to exit_group (231), the highest named syscall: the default errno; above it: ENOSYS.
    status, out = in_child(compiled, lambda _fd: (call(39), call(200), call(232), call(400)))
    assert eval(out) == ((-1, EXDEV), (-1, EXDEV), (-1, ENOSYS), (-1, ENOSYS))
