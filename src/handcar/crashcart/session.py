"""Running a shell or a command inside a container, with the toolbox on PATH.

Process tree:
    crashcart (host)                 stays in the host's namespaces, relays the pty, forwards
    └── session keeper (container)   signals, and removes the mount when the last session ends;
        └── command                  joined the container's cgroups and namespaces, is a child
                                     subreaper: it forwards signals to the command and reaps
                                     every orphan, then kills what the command left behind.

Everything the keeper runs after entering the container is imported up front: once it has
joined the container's mount namespace, the host's Python library is out of reach.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import sys
import termios
import tty
import warnings  # noqa: F401 - os.execvpe imports it: out of reach once in the container
from collections.abc import Iterator
from contextlib import contextmanager

from handcar import linux
from handcar.crashcart.errors import CrashcartError
from handcar.crashcart.inject import private_toolbox

# Namespaces in the order the keeper joins them: cgroup after the cgroup move so its root is
# the container's cgroup, mnt before the chroot, user last so the others are joined with the
# host's privileges.
NAMESPACE_ORDER = ("cgroup", "ipc", "uts", "net", "mnt", "user")
TIOCGPTPEER = 0x5441
FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCONT,
)
DEFAULT_CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXIT_CRASHCART_ERROR = 125


class SessionOptions:
    # Plain classes rather than dataclasses on this path: importing dataclasses costs 18 ms,
    # a sixth of the time to run a command in a container.
    def __init__(
        self,
        prefix: str,
        command: list[str],
        target_name: str,
        use_tty: bool,
        user: tuple[int, int] | None = None,
        keep_caps: bool = False,
        pid_namespace: bool = True,
    ) -> None:
        self.prefix = prefix
        self.command = command
        self.target_name = target_name
        self.use_tty = use_tty
        self.user = user
        self.keep_caps = keep_caps
        self.pid_namespace = pid_namespace
        self.extra_env: dict[str, str] = {}
        # A detached toolbox mount for a private view (when the container has no place for it).
        self.private_mount_fd: int | None = None


class Handles:
    """Everything the keeper needs from the host, opened before any namespace is joined."""

    def __init__(
        self,
        namespaces: dict[str, int],
        cgroup_procs: list[int],
        root_fd: int,
        cwd_fd: int | None,
        own_pid_ns: int,
        target_pid_ns: int | None,
    ) -> None:
        self.namespaces = namespaces
        self.cgroup_procs = cgroup_procs
        self.root_fd = root_fd
        self.cwd_fd = cwd_fd
        self.own_pid_ns = own_pid_ns
        self.target_pid_ns = target_pid_ns


def open_handles(pid: int, pid_namespace: bool) -> Handles:
    namespaces: dict[str, int] = {}
    for name in (*NAMESPACE_ORDER, "pid"):
        path = f"/proc/{pid}/ns/{name}"
        try:
            if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue  # joining one's own namespace is pointless, and EINVAL for user
            namespaces[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
    target_pid_ns = namespaces.pop("pid", None)
    if not pid_namespace and target_pid_ns is not None:
        os.close(target_pid_ns)
        target_pid_ns = None
    root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        cwd_fd: int | None = os.open(f"/proc/{pid}/cwd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        cwd_fd = None
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    return Handles(namespaces, open_cgroup_procs(pid), root_fd, cwd_fd, own_pid_ns, target_pid_ns)


def cgroup_mounts() -> list[tuple[str, str, set[str]]]:
    """The host's cgroup mounts: (mount point, root within the hierarchy, controller names);
    cgroup2 is the hierarchy with the empty controller set."""
    mounts: list[tuple[str, str, set[str]]] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            separator = fields.index("-")
            fs_type = fields[separator + 1]
            if fs_type == "cgroup2":
                mounts.append((fields[4], fields[3], set()))
            elif fs_type == "cgroup":
                options = set(fields[separator + 3].split(","))
                mounts.append((fields[4], fields[3], options))
    return mounts


def open_cgroup_procs(pid: int) -> list[int]:
    """cgroup.procs of each cgroup the target is in, on every hierarchy (v1, hybrid or v2)."""
    mounts = cgroup_mounts()
    fds: list[int] = []
    seen: set[str] = set()
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        wanted = set(controllers.split(",")) if controllers else set()
        for mount_point, mount_root, options in mounts:
            if hierarchy == "0":
                if options:
                    continue
            elif not wanted or not wanted <= options:
                continue
            if not path.startswith(mount_root):
                continue
            relative = path[len(mount_root) :].lstrip("/")
            procs = os.path.join(mount_point, relative, "cgroup.procs")
            if procs in seen:
                continue
            try:
                fds.append(os.open(procs, os.O_WRONLY | os.O_CLOEXEC))
                seen.add(procs)
            except OSError:
                continue
            break
    return fds


def container_environment(pid: int, options: SessionOptions) -> dict[str, str]:
    """The target init's environment with the toolbox first on PATH. The loader variables are
    dropped: a container's LD_LIBRARY_PATH would beat the toolbox's RUNPATH."""
    env: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
        for item in raw.split(b"\0"):
            key, sep, value = item.decode(errors="replace").partition("=")
            if sep and not key.startswith("LD_"):
                env[key] = value
    except OSError:
        pass
    prefix = options.prefix
    container_path = env.get("PATH") or DEFAULT_CONTAINER_PATH
    env["PATH"] = f"{prefix}/bin:{container_path}"
    env["TERM"] = os.environ.get("TERM", "xterm") if options.use_tty else env.get("TERM", "dumb")
    env["TERMINFO"] = f"{prefix}/share/terminfo"
    env["SSL_CERT_FILE"] = f"{prefix}/etc/ssl/certs/ca-certificates.crt"
    env["CURL_CA_BUNDLE"] = env["SSL_CERT_FILE"]
    env["CRASHCART_TARGET"] = options.target_name
    env.setdefault("HOME", "/root" if options.user is None or options.user[0] == 0 else "/")
    env.update(options.extra_env)
    return env


def shell_command(prefix: str, interactive: bool) -> list[str]:
    shell = [f"{prefix}/bin/bash", "--rcfile", f"{prefix}/etc/crashcartrc"]
    return [*shell, "-i"] if interactive else shell


class Pty:
    """A pty pair, preferably from the container's own devpts so ttyname works inside."""

    def __init__(self, root_fd: int) -> None:
        try:
            ptmx = linux.openat2(
                root_fd, "dev/ptmx", os.O_RDWR | os.O_NOCTTY, linux.RESOLVE_IN_ROOT
            )
            fcntl.ioctl(ptmx, linux.TIOCSPTLCK, struct.pack("i", 0))
            self.slave = fcntl.ioctl(ptmx, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
            self.master = ptmx
        except OSError:
            self.master, self.slave = os.openpty()
        os.set_inheritable(self.slave, False)
        os.set_blocking(self.master, False)

    def copy_window_size(self, from_fd: int) -> None:
        try:
            size = fcntl.ioctl(from_fd, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass


@contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        data = data[written:]


def run_session(pid: int, options: SessionOptions) -> int:
    """Start the keeper in the container and relay until it ends; returns the exit code."""
    handles = open_handles(pid, options.pid_namespace)
    env = container_environment(pid, options)
    command = options.command or shell_command(options.prefix, options.use_tty)
    pty = Pty(handles.root_fd) if options.use_tty else None
    error_read, error_write = os.pipe2(os.O_CLOEXEC)
    if handles.target_pid_ns is not None:
        linux.setns(handles.target_pid_ns, linux.CLONE_NEWPID)
    keeper = os.fork()
    if keeper == 0:
        os.close(error_read)
        _keeper_main(handles, options, command, env, pty, error_write)
    # Our own later children (the unmount helper) belong in the host's pid namespace.
    if handles.target_pid_ns is not None:
        linux.setns(handles.own_pid_ns, linux.CLONE_NEWPID)
    os.close(error_write)
    for fd in [*handles.namespaces.values(), *handles.cgroup_procs]:
        os.close(fd)
    if pty is not None:
        os.close(pty.slave)
    status = _supervise(keeper, pty)
    with os.fdopen(error_read, "rb") as pipe:
        message = pipe.read().decode(errors="replace").strip()
    if message:
        print(f"crashcart: {message}", file=sys.stderr)
    return status


def _supervise(keeper: int, pty: Pty | None) -> int:
    """Forward signals to the keeper and (with a pty) relay the terminal until it exits."""
    wake_read, wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    previous_wakeup = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    forwarded = [*FORWARDED_SIGNALS, signal.SIGWINCH]
    previous = {s: signal.signal(s, lambda *_: None) for s in forwarded}
    keeper_fd = os.pidfd_open(keeper)
    stdin_fd = sys.stdin.fileno() if pty is not None else -1
    try:
        with raw_terminal(stdin_fd) if pty is not None and os.isatty(stdin_fd) else _nothing():
            if pty is not None and os.isatty(stdin_fd):
                pty.copy_window_size(stdin_fd)
            _relay_loop(keeper, keeper_fd, pty, wake_read, stdin_fd)
        _, status = os.waitpid(keeper, 0)
        return (
            os.waitstatus_to_exitcode(status)
            if os.WIFEXITED(status)
            else 128 + (os.WTERMSIG(status))
        )
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for fd in (wake_read, wake_write, keeper_fd):
            os.close(fd)
        if pty is not None:
            os.close(pty.master)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _relay_loop(keeper: int, keeper_fd: int, pty: Pty | None, wake_fd: int, stdin_fd: int) -> None:
    stdout_fd = sys.stdout.fileno()
    stdin_open = pty is not None
    while True:
        readable = [keeper_fd, wake_fd]
        if pty is not None:
            readable.append(pty.master)
            if stdin_open:
                readable.append(stdin_fd)
        try:
            ready, _, _ = select.select(readable, [], [])
        except InterruptedError:
            continue
        if wake_fd in ready:
            for signum in os.read(wake_fd, 64):
                if signum == signal.SIGWINCH:
                    if pty is not None and os.isatty(stdin_fd):
                        pty.copy_window_size(stdin_fd)
                else:
                    _signal_quietly(keeper, signum)
        if pty is not None and pty.master in ready:
            try:
                data = os.read(pty.master, 65536)
            except (BlockingIOError, InterruptedError):
                data = b"-"
            except OSError:
                data = b""
            if data and data != b"-":
                _write_all(stdout_fd, data)
        if pty is not None and stdin_open and stdin_fd in ready:
            data = os.read(stdin_fd, 65536)
            if data:
                _write_all(pty.master, data)
            else:
                stdin_open = False
                # End of input: send the terminal's EOF character, as typing ^D would.
                _write_all(pty.master, b"\x04")
        if keeper_fd in ready:
            if pty is not None:
                _drain(pty.master, stdout_fd)
            return


def _drain(master: int, stdout_fd: int) -> None:
    while True:
        try:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                return
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        _write_all(stdout_fd, data)


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


# Everything below runs in the keeper, a fork of crashcart that joins the container.


def _keeper_main(
    handles: Handles,
    options: SessionOptions,
    command: list[str],
    env: dict[str, str],
    pty: Pty | None,
    error_fd: int,
) -> None:
    try:
        if pty is not None:
            os.close(pty.master)
        _join_container(handles, options)
        code = _run_and_reap(command, env, pty, error_fd)
    except BaseException as error:  # noqa: BLE001 - the parent must hear of any failure
        os.write(error_fd, str(error).encode(errors="replace")[:4000])
        code = EXIT_CRASHCART_ERROR
    os._exit(code)


def _join_container(handles: Handles, options: SessionOptions) -> None:
    linux.set_parent_death_signal(signal.SIGHUP)
    for fd in handles.cgroup_procs:
        try:
            os.write(fd, b"0")
        except OSError as error:
            raise CrashcartError(f"cannot join the container's cgroup: {error.strerror}") from None
        os.close(fd)
    for name in NAMESPACE_ORDER:
        if name not in handles.namespaces:
            continue
        fd = handles.namespaces[name]
        try:
            linux.setns(fd, 0)
        except OSError as error:
            raise CrashcartError(f"cannot join the container's {name} namespace: {error}") from None
        if name == "mnt":
            os.fchdir(handles.root_fd)
            os.chroot(".")
            os.chdir("/")
            if options.private_mount_fd is not None:
                private_toolbox(options.private_mount_fd, options.prefix)
            if handles.cwd_fd is not None:
                try:
                    os.fchdir(handles.cwd_fd)
                except OSError:
                    pass
        os.close(fd)
    _become_user(options, "user" in handles.namespaces)
    linux.set_child_subreaper()


def _become_user(options: SessionOptions, joined_user_ns: bool) -> None:
    if options.user is None:
        if joined_user_ns:
            # Become the container's root: our host uid 0 has no mapping in its namespace.
            os.setgroups([])
            os.setgid(0)
            os.setuid(0)
        return
    uid, gid = options.user
    if options.keep_caps and uid != 0:
        linux.keep_capabilities(True)
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)
    if options.keep_caps and uid != 0:
        # setuid kept the permitted set; make it effective and ambient so it survives exec.
        _, permitted, _ = linux.capget()
        linux.capset(permitted, permitted, permitted)
        for cap in range(linux.last_cap() + 1):
            if permitted >> cap & 1:
                linux.ambient_raise(cap)


def _run_and_reap(command: list[str], env: dict[str, str], pty: Pty | None, error_fd: int) -> int:
    # Signals are held from before the fork until the forwarding handlers are in place, so
    # none arriving in between can kill the keeper instead of reaching the command.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    child = os.fork()
    if child == 0:
        _exec_command(command, env, pty, error_fd)
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, lambda received, _frame: _signal_quietly(child, received))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    os.close(error_fd)
    if pty is not None:
        os.close(pty.slave)
    result: int | None = None
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            break
        if pid == child:
            result = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
            _kill_leftovers(child)
    return EXIT_CRASHCART_ERROR if result is None else result


def _kill_leftovers(child: int) -> None:
    """Kill what the command left running (background jobs, daemons): nothing is left behind.
    They are our children, as a subreaper; the process group covers the no-/proc case."""
    try:
        os.killpg(child, signal.SIGKILL)
    except OSError:
        pass
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            leftovers = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        leftovers = []
    for pid in leftovers:
        _signal_quietly(pid, signal.SIGKILL)


def _exec_command(command: list[str], env: dict[str, str], pty: Pty | None, error_fd: int) -> None:
    try:
        for signum in (*FORWARDED_SIGNALS, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.setsid()
        if pty is not None:
            fcntl.ioctl(pty.slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(pty.slave, fd)
            os.close(pty.slave)
        os.execvpe(command[0], command, env)
    except OSError as error:
        code = 127 if error.errno == errno.ENOENT else 126
        os.write(error_fd, f"cannot run {command[0]}: {error.strerror}".encode())
        os._exit(code)
    except BaseException as error:  # noqa: BLE001
        os.write(error_fd, str(error).encode(errors="replace")[:4000])
        os._exit(EXIT_CRASHCART_ERROR)
