"""The test harness: a busybox rootfs, bundles made from it, and `Runtime`, which drives the
installed handcar CLI with a private --root; plus the one `wait_for` and `read_until`.

Every container a test makes lives under a private --root and is force-deleted at teardown;
the teardown then fails the test if a state directory, cgroup, mount or process was left
behind. tests/conftest.py registers the fixtures; tests import the rest by name
(`from harness import Runtime`), since several directories have a conftest.py.
"""

from __future__ import annotations

import array
import copy
import json
import linecache
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANDCAR = os.environ.get("HANDCAR_TEST_RUNTIME", str(ROOT / ".venv" / "bin" / "handcar"))
sys.path.insert(0, str(ROOT / "src"))

from handcar.spec.bundle import make_rootfs  # noqa: E402
from handcar.spec.default import default_spec  # noqa: E402

T = TypeVar("T")

# --- waiting ------------------------------------------------------------------------------


class WaitTimeout(AssertionError):
    """A condition a test waited for never came: one line saying what, and after how long."""


def _describe(predicate: Callable[[], object]) -> str:
    """The source line of the predicate (usually the `wait_for(lambda: ...)` call itself)."""
    code = getattr(predicate, "__code__", None)
    if code is None:
        return repr(predicate)
    return linecache.getline(code.co_filename, code.co_firstlineno).strip() or repr(predicate)


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """Call predicate until it returns something true or timeout seconds pass; return its last
    value either way. For best-effort waits (clean-up); tests use wait_for. A slow predicate
    (one that runs a command) is called at most every other moment, to leave the machine to
    what is being waited for."""
    deadline = time.monotonic() + timeout
    while True:
        began = time.monotonic()
        value = predicate()
        now = time.monotonic()
        if value or now >= deadline:
            return value
        time.sleep(min(max(interval, now - began), max(0.0, deadline - now)))


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str | None = None,
) -> T:
    """Wait until predicate() is true and return its value; fail clearly after timeout."""
    value = poll(predicate, timeout, interval)
    if not value:
        raise WaitTimeout(
            f"timed out after {timeout:g}s waiting for {what or _describe(predicate)}"
        )
    return value


def _read(fd: int, done: Callable[[bytes], bool], timeout: float, what: str) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while not done(seen):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; read {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: a pty whose other side closed
                break
            if not chunk:
                break
            seen += chunk
    return seen


def read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    """Read fd until needle appears (or end of file); everything read. Fails on timeout."""
    return _read(fd, lambda seen: needle in seen, timeout, f"{needle!r}")


def read_to_eof(fd: int, timeout: float = 10.0) -> bytes:
    """Read fd until end of file. Fails on timeout."""
    return _read(fd, lambda seen: False, timeout, "end of file")


# --- processes ----------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def process_gone(pid: int) -> bool:
    """The process no longer exists, or is a zombie (dead, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def start_time(pid: int) -> str:
    """Field 22 of /proc/pid/stat (ticks since boot): tells a recycled pid from the original."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


def signal_handled(pid: int, signum: int) -> bool:
    """The process has installed a handler for signum (its SigCgt mask has the bit)."""
    return bool(int(proc_status(pid)["SigCgt"], 16) & (1 << (signum - 1)))


# --- leaks: what a test's containers may not leave behind -----------------------------------


def mentions(text: str, needle: str) -> bool:
    """needle occurs in text as a whole path or name (so /x/test0 does not match /x/test01)."""
    start = text.find(needle)
    while start >= 0:
        end = start + len(needle)
        if end == len(text) or not (text[end].isalnum() or text[end] in "_.-"):
            return True
        start = text.find(needle, start + 1)
    return False


def leaked_cgroups(ids: Iterable[str]) -> list[str]:
    found = []
    wanted = set(ids)
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        for name in dirnames:
            if name in wanted:
                found.append(os.path.join(dirpath, name))
    return found


def leaked_mounts(needles: Iterable[str]) -> list[str]:
    """Mounts in this (the host's) mount namespace that name one of needles."""
    needles = list(needles)
    with open("/proc/self/mountinfo") as f:
        return [
            f"mount {line.split()[4]}"
            for line in f
            if any(mentions(line.replace("\\040", " "), n) for n in needles)
        ]


def _process_facts(pid: str) -> tuple[int, str] | None:
    """(pid namespace inode, cmdline + cwd + root) of a live process, or None."""
    try:
        cmdline = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
        if not cmdline:  # a zombie or a kernel thread
            return None
        pidns = os.stat(f"/proc/{pid}/ns/pid").st_ino
        places = [os.readlink(f"/proc/{pid}/{link}") for link in ("cwd", "root")]
    except OSError:
        return None
    return pidns, " ".join([cmdline, *places])


def leaked_processes(needles: Iterable[str], pid_namespaces: Iterable[int]) -> list[str]:
    """Processes in one of the containers' pid namespaces, or whose cmdline, cwd or root names
    one of needles (a test's tmp directory, a container id)."""
    needles = list(needles)
    own_ns = os.stat("/proc/self/ns/pid").st_ino
    namespaces = set(pid_namespaces) - {own_ns}
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        facts = _process_facts(pid)
        if facts is None:
            continue
        pidns, text = facts
        if pidns in namespaces or any(mentions(text, n) for n in needles):
            found.append(f"process {pid}: {text[:200]}")
    return found


# --- the runtime under test ---------------------------------------------------------------


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self) -> str:
        return f"Result(rc={self.rc}, out={self.out!r}, err={self.err!r})"

    @property
    def msg(self) -> str:
        """The error message of a logrus text line on stderr (`msg="..."`), unescaped."""
        for line in self.err.splitlines():
            if " msg=" in line:
                raw = line.split(" msg=", 1)[1]
                return str(json.loads(raw)) if raw.startswith('"') else raw
        return self.err


class Runtime:
    """Drives the handcar CLI with a private --root; remembers what to clean up."""

    def __init__(self, root: Path, tmp: Path, rootfs: Path) -> None:
        self.root = root
        self.tmp = tmp
        self.rootfs = rootfs
        self.binary = HANDCAR
        self.ids: list[str] = []

    def new_id(self) -> str:
        cid = "hct-" + uuid.uuid4().hex[:10]
        self.ids.append(cid)
        return cid

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 60, **kw: Any
    ) -> Result:
        """Run the CLI; output goes through files, not pipes, because a created container's
        init (or a detached exec) inherits the caller's stdio and would hold a pipe open for
        its whole life. stdin is /dev/null unless `input` or `stdin` says otherwise."""
        if input is None:
            kw.setdefault("stdin", subprocess.DEVNULL)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(
                self.argv(*args), input=input, stdout=out, stderr=err, text=True,
                timeout=timeout, **kw,
            )  # fmt: skip
            out.seek(0)
            err.seek(0)
            proc.stdout, proc.stderr = out.read(), err.read()
        return Result(proc)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start the CLI without waiting (for calls that block, or that a test interrupts)."""
        return subprocess.Popen(self.argv(*args), **kw)

    def config(self, args: list[str] | None = None) -> dict[str, Any]:
        """runc's default spec (`sh` as the process unless args), rooted in the rootfs."""
        config: dict[str, Any] = copy.deepcopy(dict(default_spec()))
        config["process"]["terminal"] = False
        config["root"]["path"] = str(self.rootfs)
        if args is not None:
            config["process"]["args"] = args
        return copy.deepcopy(config)

    def bundle(self, config: dict[str, Any] | None = None, args: list[str] | None = None) -> Path:
        bundle = self.tmp / ("bundle-" + uuid.uuid4().hex[:8])
        bundle.mkdir()
        config = config if config is not None else self.config(args)
        if args is not None:
            config["process"]["args"] = args
        (bundle / "config.json").write_text(json.dumps(config, indent=1))
        return bundle

    def run(
        self, args: list[str], config: dict[str, Any] | None = None, timeout: float = 60
    ) -> Result:
        """`handcar run` a container to completion."""
        bundle = self.bundle(config, args)
        return self("run", "--bundle", str(bundle), self.new_id(), timeout=timeout)

    def create(
        self, config: dict[str, Any] | None = None, *flags: str, args: list[str] | None = None
    ) -> str:
        """`handcar create [flags]` a container (`sleep 300` unless config or args say)."""
        if config is None and args is None:
            args = ["sleep", "300"]
        bundle = self.bundle(config, args)
        cid = self.new_id()
        result = self("create", "--bundle", str(bundle), *flags, cid)
        assert result.rc == 0, result
        return cid

    def start_container(self, config: dict[str, Any] | None = None) -> str:
        """create and start (`sleep 300` unless config says)."""
        cid = self.create(config if config is not None else self.config(["sleep", "300"]))
        result = self("start", cid)
        assert result.rc == 0, result
        return cid

    def state(self, cid: str) -> dict[str, Any]:
        result = self("state", cid)
        assert result.rc == 0, result
        state: dict[str, Any] = json.loads(result.out)
        return state

    def _pid_namespaces(self) -> list[int]:
        """The pid namespace of each container's init that is still the process handcar
        started (read from state.json, so a recycled pid is never taken for it)."""
        found = []
        for cid in self.ids:
            try:
                data = json.loads((self.root / cid / "state.json").read_text())
                pid = int(data.get("pid") or 0)
                if pid > 0 and start_time(pid) == str(data.get("init_start_time")):
                    found.append(os.stat(f"/proc/{pid}/ns/pid").st_ino)
            except (OSError, ValueError):
                continue
        return found

    def leaks(self, pid_namespaces: list[int]) -> list[str]:
        needles = [str(self.tmp), *self.ids]
        return (
            [f"cgroup {p}" for p in leaked_cgroups(self.ids)]
            + leaked_mounts(needles)
            + leaked_processes(needles, pid_namespaces)
        )

    def cleanup(self) -> list[str]:
        """Force-delete everything; return what was left behind."""
        namespaces = self._pid_namespaces()
        leftovers = []
        for cid in list(self.ids):
            result = self("delete", "--force", cid)
            if result.rc != 0:
                leftovers.append(f"delete --force {cid} failed: {result.err.strip()}")
        if self.root.exists():
            leftovers += [f"state dir {p}" for p in self.root.iterdir() if p.is_dir()]
        # A killed process takes a moment to exit and leave its cgroup.
        poll(lambda: not self.leaks(namespaces), 10)
        leftovers += self.leaks(namespaces)
        return leftovers


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.exit("the tests create real containers and need root", returncode=2)
    if not Path(HANDCAR).exists():
        pytest.exit(f"{HANDCAR} is missing: run `make install`", returncode=2)


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One busybox-static rootfs for the session; configs mount it read-only."""
    path = tmp_path_factory.mktemp("rootfs") / "rootfs"
    make_rootfs(str(path))
    return path


@pytest.fixture
def hc(tmp_path: Path, rootfs: Path) -> Iterator[Runtime]:
    """A Runtime with a private root; teardown fails the test on anything left behind."""
    runtime = Runtime(tmp_path / "root", tmp_path, rootfs)
    yield runtime
    leftovers = runtime.cleanup()
    assert not leftovers, f"left behind: {leftovers}"


@pytest.fixture
def hx(hc: Runtime) -> Runtime:
    """The former exec-tests fixture: the same Runtime as hc."""
    return hc


@pytest.fixture
def make_config(hc: Runtime) -> Callable[..., dict[str, Any]]:
    return hc.config


@pytest.fixture(scope="module")
def open_rootfs() -> Iterator[Path]:
    """A busybox rootfs under a 0755 directory: pytest's tmp is 0700, closed to mapped uids."""
    top = Path(tempfile.mkdtemp(prefix="handcar-sec-", dir="/tmp"))
    try:
        top.chmod(0o755)
        make_rootfs(str(top / "rootfs"))
        yield top / "rootfs"
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- config and I/O helpers ---------------------------------------------------------------


def add_userns(config: dict[str, Any], host_id: int = 100000, size: int = 65536) -> None:
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": host_id, "size": size}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": host_id, "size": size}]


class ConsoleSocket:
    """A console socket driven by the test: receives the pty master."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.server.settimeout(20)

    def receive(self) -> tuple[int, str]:
        conn, _ = self.server.accept()
        with conn:
            fds = array.array("i")
            msg, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(4))
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[:4])
        assert fds, "no fd received"
        return fds[0], msg.decode()

    def close(self) -> None:
        self.server.close()


RUNC = "/usr/sbin/runc"


@pytest.fixture
def runc(hc: Runtime) -> Iterator[Runtime]:
    """runc on the same tmp, rootfs and bundles as `hc`, with its own --root."""
    if not Path(RUNC).exists():
        pytest.skip(f"{RUNC} (the oracle) is not installed")
    oracle = Runtime(hc.tmp / "runc-root", hc.tmp, hc.rootfs)
    oracle.binary = RUNC
    yield oracle
    hc.cleanup()  # hc's own containers first: its teardown, after this one, checks them
    leftovers = oracle.cleanup()
    assert not leftovers, f"runc left behind: {leftovers}"


def has_tool(name: str) -> bool:
    return shutil.which(name) is not None
