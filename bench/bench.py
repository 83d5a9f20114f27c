"""handcar vs runc vs crun, side by side in one run, on one busybox bundle.

Every iteration runs each case once per runtime, round-robin, with the runtime order rotated
from one iteration to the next, so that machine noise falls on all three alike. Only the
medians' ratios mean anything: absolute times on this VM vary by 30-50 % from run to run.

Usage: .venv/bin/python bench/bench.py [--runs N] [--markdown] [--json FILE]
                                        [--cases a,b,...] [--list-size N] [--no-crun]

crun and this hybrid host: crun refuses to run while cgroup2 holds any controller ("cgroups in
hybrid mode not supported"); here cgroup2 holds hugetlb. `--cgroup-manager=disabled` does not
help (crun checks the layout first, and without cgroups the comparison would be unfair anyway),
so the bench moves hugetlb to a v1 hierarchy at /sys/fs/cgroup/hugetlb for the duration of the
run, for all three runtimes alike, then unmounts it and checks that hugetlb is back on cgroup2.
It says so in its output. See bench/README.md for why this is fair to handcar and runc.

Nothing is left behind, on success, failure or Ctrl-C: containers (delete --force on every
root), their cgroups (swept by this run's unique id prefix), the hugetlb mount and temp dirs.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
HANDCAR = str(VENV_BIN / "handcar")
VENV_PYTHON = str(VENV_BIN / "python3")
RUNC = "/usr/sbin/runc"
CRUN = "/usr/bin/crun"
RUNTIMES = ("handcar", "runc", "crun")
BINARIES = {"handcar": HANDCAR, "runc": RUNC, "crun": CRUN}
FLOOR = "floor"

CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED = CGROUP_ROOT + "/unified"
HUGETLB_MOUNT = CGROUP_ROOT + "/hugetlb"

# A unique prefix for every container id (and so every default cgroup path) of this run.
PREFIX = f"hcbench{os.getpid()}-"

# The spec version all three accept: crun 1.8.1 refuses handcar's default 1.2.0 ("unknown
# version specified"); this is what `runc spec` writes.
OCI_VERSION = "1.0.2-dev"
MEMORY_LIMIT = 256 << 20
PIDS_LIMIT = 128
CALL_TIMEOUT = 60.0
MAX_FAILURES = 3  # errors before a runtime is dropped from a case

try:
    from handcar.spec.bundle import make_bundle
except ImportError:  # run with an interpreter that lacks the installed package
    sys.path.insert(0, str(REPO / "src"))
    from handcar.spec.bundle import make_bundle


class BenchError(Exception):
    pass


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwind through every finally, like Ctrl-C does."""


# ---- cases ----------------------------------------------------------------------------------

# (key, label in the table, unit, compared with the floor)
ROWS: list[tuple[str, str, str, bool]] = [
    ("run", "`run` /bin/true", "ms", False),
    ("cycle", "create → start → wait → delete", "ms", False),
    ("cycle_limits", "same, memory + pids limit", "ms", False),
    ("create", "create (alone)", "ms", False),
    ("start", "start (alone)", "ms", True),
    ("state", "state (alone)", "ms", True),
    ("kill", "kill KILL, running (alone)", "ms", True),
    ("delete", "delete, stopped (alone)", "ms", True),
    ("exec", "exec /bin/true, running", "ms", False),
    ("list", "list, {n} containers", "ms", False),
    ("rss", "waiting init VmRSS", "MiB", False),
    ("pss", "waiting init Pss", "MiB", False),
    ("private", "waiting init private", "MiB", False),
]
# Groups of rows that one measurement produces; `--cases` selects groups.
CASES = ("run", "cycle", "cycle_limits", "lifecycle", "exec", "list", "floor")
# --ab: cases measured a second time, for handcar and runc, in the host's own cgroup layout.
AB_CASES = ("run", "cycle", "cycle_limits", "lifecycle")
HOST = "@host"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class Results:
    def __init__(self) -> None:
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.errors: dict[str, dict[str, str]] = {}
        self.skipped: dict[str, str] = {}

    suffix = ""  # "@host" while --ab measures in the host's own layout

    def add(self, row: str, runner: str, value: float) -> None:
        self.samples.setdefault(row + self.suffix, {}).setdefault(runner, []).append(value)

    def median(self, row: str, runner: str) -> float | None:
        values = self.samples.get(row, {}).get(runner)
        return statistics.median(values) if values else None

    def failed(self, row: str, runner: str) -> bool:
        return runner in self.errors.get(row, {})

    def fail(self, rows: tuple[str, ...], runner: str, message: str) -> None:
        for row in rows:
            self.errors.setdefault(row, {})[runner] = message
            self.samples.get(row, {}).pop(runner, None)


# ---- process plumbing ---------------------------------------------------------------------


def run_cmd(argv: list[str], timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """For calls that start no container: their output is captured through pipes."""
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
    )


def describe(argv: list[str]) -> str:
    """`runc create` for a runtime call (its long temp paths are of no help), else argv."""
    if argv[0] in BINARIES.values() and len(argv) > 3:
        return f"{os.path.basename(argv[0])} {argv[3]}"
    return " ".join(argv)


class Caller:
    """Timed calls. Stdout goes to /dev/null and stderr to a file, never to pipes: a created
    container's init inherits them and holds them open, and a reader would wait for its EOF."""

    def __init__(self) -> None:
        self.err = tempfile.TemporaryFile()  # unlinked already: nothing to leave behind

    def close(self) -> None:
        self.err.close()

    def __call__(self, argv: list[str]) -> int:
        """Run argv; return its wall time in ns. A non-zero exit is an error.

        The exit is awaited on a pidfd: Popen.wait(timeout) polls with growing sleeps, which
        would round every sample up to its next sleep step.
        """
        self.err.seek(0)
        self.err.truncate()
        t0 = time.perf_counter_ns()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err
        )
        pidfd = os.pidfd_open(proc.pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            exited = poller.poll(int(CALL_TIMEOUT * 1000))
            elapsed = time.perf_counter_ns() - t0
        finally:
            os.close(pidfd)
        if not exited:
            proc.kill()
            proc.wait()
            raise BenchError(f"{describe(argv)}: timed out after {CALL_TIMEOUT:.0f} s")
        rc = proc.wait()
        if rc != 0:
            self.err.seek(0)
            lines = self.err.read().decode(errors="replace").strip().splitlines()
            raise BenchError(f"{describe(argv)}: exit {rc}: {lines[-1] if lines else ''}")
        return elapsed


def set_child_subreaper() -> None:
    """Orphaned container inits are re-parented to us, so we can reap them (no zombies left
    for this VM's slow pid 1) and wait for their exit exactly, as an engine's shim does."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_exit(pid: int, timeout: float = 10.0) -> None:
    """Wait until pid has exited (through a pidfd, so it need not be our child); reap it."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(int(timeout * 1000)):
            raise BenchError(f"pid {pid} did not exit within {timeout:.0f} s")
    finally:
        os.close(pidfd)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def read_pid(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def memory_kib(pid: int) -> tuple[int, int, int]:
    """(VmRSS, Pss, Private_Clean + Private_Dirty) of pid, in KiB."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1])
    return (
        rss,
        fields.get("Pss", 0),
        fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    )


def first_line(argv: list[str]) -> str:
    try:
        out = run_cmd(argv, timeout=10).stdout.decode(errors="replace").strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unavailable ({err})"
    return out.splitlines()[0] if out else "unknown"


# ---- the crun workaround ------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _hugetlb_cgroup_count() -> int | None:
    """num_cgroups of the hugetlb hierarchy, or None if hugetlb is on the default hierarchy."""
    for line in _read("/proc/cgroups").splitlines():
        parts = line.split()
        if parts and parts[0] == "hugetlb":
            return int(parts[2]) if parts[1] != "0" else None
    return None


_LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SLAVE = 0x80000
MNT_DETACH = 2


def _check(ret: int, what: str) -> None:
    if ret != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _LIBC.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


class HugetlbWorkaround:
    """Move hugetlb from cgroup2 to a v1 hierarchy while the bench runs, and back afterwards.

    Nothing of it is visible outside the bench: in a private mount namespace (mounts propagate
    in, not out) /sys/fs/cgroup is replaced by a private tmpfs that holds bind mounts of every
    host hierarchy plus the new hugetlb one, and every runtime is started from there. No other
    process sees the v1 hierarchy, so none makes cgroups in it, and nothing is created in the
    host's /sys/fs/cgroup (crun, for one, would take an empty hugetlb directory there for a
    hierarchy). When the bench is done the hierarchy is down to its root, and unmounting it
    really gives hugetlb back to cgroup2. What the host does see, for the duration, is cgroup2
    without hugetlb.
    """

    def __init__(self) -> None:
        self.mounted = False
        self.host_ns = -1  # the original mount namespace, for --ab and for the final check
        self.own_ns = -1
        self.log: list[str] = []

    @staticmethod
    def needed() -> bool:
        return bool(_read(UNIFIED + "/cgroup.controllers").split())

    def apply(self, staging: str) -> str | None:
        """Set up the private layout; return None on success, or why crun cannot be run."""
        controllers = _read(UNIFIED + "/cgroup.controllers").split()
        if controllers != ["hugetlb"]:
            return f"cgroup2 holds {controllers}; only a lone hugetlb can be moved to v1"
        if os.path.lexists(HUGETLB_MOUNT):
            return f"{HUGETLB_MOUNT} exists, yet cgroup2 still holds hugetlb"
        self.host_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        _check(_LIBC.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _mount("none", "/", None, MS_REC | MS_SLAVE, None)
        os.mkdir(staging)
        _mount("tmpfs", staging, "tmpfs", 0, "mode=755")
        try:
            for entry in os.scandir(CGROUP_ROOT):
                target = f"{staging}/{entry.name}"
                if entry.is_symlink():
                    os.symlink(os.readlink(entry.path), target)
                elif entry.is_dir():
                    os.mkdir(target)
                    if os.path.ismount(entry.path):
                        _mount(entry.path, target, None, MS_BIND, None)
            os.mkdir(f"{staging}/hugetlb")
            try:
                _mount("cgroup", f"{staging}/hugetlb", "cgroup", 0, "hugetlb")
            except OSError as err:
                # EBUSY: something has hugetlb enabled in a cgroup2 subtree_control.
                return f"mount -t cgroup -o hugetlb: {err.strerror} (is hugetlb in use on cgroup2?)"
            _mount(staging, CGROUP_ROOT, None, MS_MOVE, None)
            self.mounted = True
        finally:
            if os.path.ismount(staging):  # everything below it goes too (our namespace only)
                _LIBC.umount2(staging.encode(), MNT_DETACH)
            os.rmdir(staging)
        self.log.append(
            "crun workaround: hugetlb moved from cgroup2 to a v1 hierarchy at "
            f"{HUGETLB_MOUNT}, visible only in the bench's private mount namespace; all "
            "three runtimes run with it"
        )
        return None

    def enter_host(self, host: bool) -> None:
        """Switch this process (and so the runtimes it starts) between the two layouts."""
        if self.host_ns < 0:
            return
        if host:
            if self.own_ns < 0:
                self.own_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            _check(_LIBC.setns(self.host_ns, CLONE_NEWNS), "setns(host)")
        elif self.own_ns >= 0:
            _check(_LIBC.setns(self.own_ns, CLONE_NEWNS), "setns(bench)")

    def undo(self) -> None:
        """Unmount only once the hierarchy is down to its root cgroup: a v1 hierarchy that is
        unmounted while a child (even a dying one) exists lives on unmounted, and keeps hugetlb
        off cgroup2 until it is mounted and unmounted again."""
        if not self.mounted:
            return
        self.enter_host(False)
        deadline = time.monotonic() + 10
        while (_hugetlb_cgroup_count() or 1) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        if (_hugetlb_cgroup_count() or 1) > 1:
            left = [e.name for e in os.scandir(HUGETLB_MOUNT) if e.is_dir()]
            self.log.append(
                f"WARNING: the hugetlb hierarchy still has cgroups {left}; hugetlb stays off "
                f"cgroup2 until they are removed (rmdir them under {HUGETLB_MOUNT} from this "
                "bench's namespace) and it is unmounted"
            )
            return
        try:
            _check(_LIBC.umount2(HUGETLB_MOUNT.encode(), 0), f"umount {HUGETLB_MOUNT}")
        except OSError as err:
            self.log.append(f"WARNING: {err.strerror}")
            return
        self.mounted = False
        deadline = time.monotonic() + 5
        while _hugetlb_cgroup_count() is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        if "hugetlb" in _read(UNIFIED + "/cgroup.controllers").split():
            self.log.append("crun workaround undone: hugetlb is back on cgroup2")
        else:
            self.log.append(
                "WARNING: hugetlb did not return to cgroup2: another mount of the hugetlb "
                "hierarchy (in some other mount namespace) keeps it alive; see /proc/cgroups"
            )
        self.enter_host(True)
        if os.path.lexists(HUGETLB_MOUNT):
            self.log.append(f"WARNING: {HUGETLB_MOUNT} exists on the host")
        self.enter_host(False)


# ---- the bench ----------------------------------------------------------------------------


class Bench:
    def __init__(
        self, runs: int, list_size: int, cases: list[str], use_crun: bool, ab: bool
    ) -> None:
        self.runs = runs
        self.ab = ab
        self.list_size = list_size
        self.cases = cases
        self.use_crun = use_crun
        self.results = Results()
        self.notes: list[str] = []
        self.tmp = ""
        self.runtimes: list[str] = []
        self.workaround = HugetlbWorkaround()
        # (runtime, root, id) of every container that may exist; removed on delete.
        self.live: set[tuple[str, str, str]] = set()
        self.counter = 0
        self.has_exec: dict[str, bool] = {}
        self.exec_ids: dict[str, str] = {}
        self.call = Caller()
        self.failures: dict[tuple[str, str], int] = {}

    # -- helpers --

    def root(self, runtime: str, kind: str = "main") -> str:
        return f"{self.tmp}/roots/{runtime}-{kind}"

    def bundle(self, name: str) -> str:
        return f"{self.tmp}/{name}"

    def argv(self, runtime: str, *args: str, kind: str = "main") -> list[str]:
        return [BINARIES[runtime], "--root", self.root(runtime, kind), *args]

    def new_id(self, runtime: str, case: str) -> str:
        self.counter += 1
        return f"{PREFIX}{runtime}-{case}-{self.counter}"

    def create(self, runtime: str, cid: str, bundle: str, kind: str = "main") -> tuple[int, int]:
        """Create; return (elapsed ns, init pid)."""
        pid_file = f"{self.tmp}/pids/{cid}"
        self.live.add((runtime, self.root(runtime, kind), cid))
        args = ("create", "--bundle", bundle, "--pid-file", pid_file, cid)
        elapsed = self.call(self.argv(runtime, *args, kind=kind))
        pid = read_pid(pid_file)
        os.unlink(pid_file)
        return elapsed, pid

    def delete(self, runtime: str, cid: str, kind: str = "main", force: bool = False) -> int:
        args = ["delete", "--force", cid] if force else ["delete", cid]
        elapsed = self.call(self.argv(runtime, *args, kind=kind))
        self.live.discard((runtime, self.root(runtime, kind), cid))
        return elapsed

    # -- setup --

    def setup(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="handcar-bench-")
        os.makedirs(f"{self.tmp}/pids")
        os.makedirs(f"{self.tmp}/roots")
        for name, path in BINARIES.items():
            if not os.access(path, os.X_OK):
                raise BenchError(f"{name} not found at {path} (run `make install test-deps`)")
        if not os.access(VENV_PYTHON, os.X_OK):
            raise BenchError(f"{VENV_PYTHON} not found (run `make install`)")
        self.runtimes = ["handcar", "runc"]
        if self.use_crun:
            needed = HugetlbWorkaround.needed()
            reason = self.workaround.apply(f"{self.tmp}/cgroupfs") if needed else None
            if reason is None:
                self.runtimes.append("crun")
            else:
                self.notes.append(f"crun skipped: {reason}")
        else:
            self.notes.append("crun skipped: --no-crun")
        for runtime in self.runtimes:
            for kind in ("main", "list"):
                os.makedirs(self.root(runtime, kind))
        self._make_bundles()
        self.has_exec = {rt: rt != "handcar" for rt in self.runtimes}
        if "handcar" in self.runtimes:
            self.has_exec["handcar"] = run_cmd([HANDCAR, "exec", "--help"]).returncode == 0
            if not self.has_exec["handcar"]:
                self.results.skipped["exec"] = "handcar exec does not exist yet"

    def _make_bundles(self) -> None:
        """One busybox rootfs; the variants share it through an absolute root.path."""
        true_dir = self.bundle("true")
        config: dict[str, Any] = dict(make_bundle(true_dir, ["/bin/true"]))
        config["ociVersion"] = OCI_VERSION
        config["root"]["path"] = f"{true_dir}/rootfs"
        self._write(true_dir, config)
        sleep = json.loads(json.dumps(config))
        sleep["process"]["args"] = ["sleep", "3600"]
        self._write(self.bundle("sleep"), sleep)
        limits = json.loads(json.dumps(config))
        resources = limits["linux"].setdefault("resources", {})
        resources["memory"] = {"limit": MEMORY_LIMIT}
        resources["pids"] = {"limit": PIDS_LIMIT}
        self._write(self.bundle("limits"), limits)

    @staticmethod
    def _write(bundle: str, config: dict[str, Any]) -> None:
        os.makedirs(bundle, exist_ok=True)
        with open(f"{bundle}/config.json", "w") as f:
            json.dump(config, f, indent="\t")

    # -- measurements: each does one sample for one runtime --

    def m_run(self, rt: str) -> None:
        cid = self.new_id(rt, "run")
        self.live.add((rt, self.root(rt), cid))
        self.results.add(
            "run", rt, self.call(self.argv(rt, "run", "--bundle", self.bundle("true"), cid))
        )
        self.live.discard((rt, self.root(rt), cid))

    def _cycle(self, rt: str, bundle: str) -> tuple[int, int, int, int]:
        """create, start, wait for exit, delete: (total, create, start, delete) in ns."""
        cid = self.new_id(rt, "cycle")
        t0 = time.perf_counter_ns()
        t_create, pid = self.create(rt, cid, bundle)
        t_start = self.call(self.argv(rt, "start", cid))
        wait_exit(pid)
        t_delete = self.delete(rt, cid)
        total = time.perf_counter_ns() - t0
        return total, t_create, t_start, t_delete

    def m_cycle(self, rt: str) -> None:
        total, t_create, t_start, t_delete = self._cycle(rt, self.bundle("true"))
        self.results.add("cycle", rt, total)
        self.results.add("create", rt, t_create)
        self.results.add("start", rt, t_start)
        self.results.add("delete", rt, t_delete)

    def m_cycle_limits(self, rt: str) -> None:
        self.results.add("cycle_limits", rt, self._cycle(rt, self.bundle("limits"))[0])

    def m_lifecycle(self, rt: str) -> None:
        """A sleeping container: RSS of its waiting init, state while created, kill running."""
        cid = self.new_id(rt, "life")
        _, pid = self.create(rt, cid, self.bundle("sleep"))
        rss, pss, private = memory_kib(pid)
        self.results.add("rss", rt, rss / 1024)
        self.results.add("pss", rt, pss / 1024)
        self.results.add("private", rt, private / 1024)
        self.results.add("state", rt, self.call(self.argv(rt, "state", cid)))
        self.call(self.argv(rt, "start", cid))
        self.results.add("kill", rt, self.call(self.argv(rt, "kill", cid, "9")))
        wait_exit(pid)
        self.delete(rt, cid)

    def m_exec(self, rt: str) -> None:
        if not self.has_exec[rt]:
            return
        if rt not in self.exec_ids:
            cid = self.new_id(rt, "exec")
            self.create(rt, cid, self.bundle("sleep"))
            self.call(self.argv(rt, "start", cid))
            self.exec_ids[rt] = cid
        self.results.add(
            "exec", rt, self.call(self.argv(rt, "exec", self.exec_ids[rt], "/bin/true"))
        )

    def m_list(self, rt: str) -> None:
        self.results.add("list", rt, self.call(self.argv(rt, "list", kind="list")))

    def m_floor(self) -> None:
        self.results.add("floor", FLOOR, self.call([VENV_PYTHON, "-I", "-S", "-c", "pass"]))

    # -- the loop --

    def measure(self, case: str, rows: tuple[str, ...], fn: Callable[[str], None], i: int) -> None:
        order = self.runtimes[i % len(self.runtimes) :] + self.runtimes[: i % len(self.runtimes)]
        for rt in order:
            self._measure_one(case, rows, fn, rt, i)
            if self.ab and rt != "crun" and case in AB_CASES and self.workaround.mounted:
                # The same sample again in the host's own layout (hugetlb on cgroup2).
                self.workaround.enter_host(True)
                self.results.suffix = HOST
                try:
                    self._measure_one(case, tuple(r + HOST for r in rows), fn, rt, i)
                finally:
                    self.results.suffix = ""
                    self.workaround.enter_host(False)

    def _measure_one(
        self, case: str, rows: tuple[str, ...], fn: Callable[[str], None], rt: str, i: int
    ) -> None:
        if self.results.failed(rows[0], rt):
            return
        try:
            fn(rt)
        except (BenchError, OSError) as err:
            # A runtime that keeps failing a case is dropped from it; one failure is noted.
            key = (rows[0], rt)
            self.failures[key] = self.failures.get(key, 0) + 1
            if self.failures[key] == 1:
                self.notes.append(f"{rt} {rows[0]}, iteration {i + 1}: {err}")
            if self.failures[key] >= MAX_FAILURES:
                self.results.fail(rows, rt, str(err))
                self.notes.append(f"{rt} {rows[0]}: dropped after {MAX_FAILURES} failures")
        reap_all()

    def loop(
        self, cases: list[tuple[str, tuple[str, ...], Callable[[str], None]]], what: str
    ) -> None:
        for i in range(self.runs):
            for case, rows, fn in cases:
                self.measure(case, rows, fn, i)
            if "floor" in self.cases:
                self.m_floor()
            progress(f"{what}: {i + 1}/{self.runs}")

    def run(self) -> None:
        table: list[tuple[str, tuple[str, ...], Callable[[str], None]]] = [
            ("run", ("run",), self.m_run),
            ("cycle", ("cycle", "create", "start", "delete"), self.m_cycle),
            ("cycle_limits", ("cycle_limits",), self.m_cycle_limits),
            ("lifecycle", ("state", "kill", "rss", "pss", "private"), self.m_lifecycle),
            ("exec", ("exec",), self.m_exec),
        ]
        chosen = [c for c in table if c[0] in self.cases]
        if chosen or "floor" in self.cases:
            self.loop(chosen, "cases")
        for rt in list(self.exec_ids):
            self.delete(rt, self.exec_ids.pop(rt), force=True)
        reap_all()
        if "list" in self.cases:
            # A phase of its own: 3 x N waiting inits and their cgroups would skew the others.
            self._fill_list_roots()
            self.loop([("list", ("list",), self.m_list)], "list")

    def _fill_list_roots(self) -> None:
        for n in range(self.list_size):
            for rt in self.runtimes:
                if self.results.failed("list", rt):
                    continue
                try:
                    self.create(rt, self.new_id(rt, "list"), self.bundle("true"), kind="list")
                except (BenchError, OSError) as err:
                    self.results.fail(("list",), rt, str(err))
                    self.notes.append(f"{rt} list: dropped, a create failed: {err}")
                reap_all()
            if n % 20 == 19:
                progress(f"list: created {n + 1}/{self.list_size} per runtime")

    # -- teardown --

    def cleanup(self) -> None:
        """delete --force everything, sweep cgroups, undo the mount, remove temp dirs."""
        for runtime, root, cid in sorted(self.live):
            run_cmd([BINARIES[runtime], "--root", root, "delete", "--force", cid])
        if self.tmp:
            for runtime in self.runtimes:
                for kind in ("main", "list"):
                    root = self.root(runtime, kind)
                    if not os.path.isdir(root):
                        continue
                    out = run_cmd([BINARIES[runtime], "--root", root, "list", "-q"]).stdout
                    for cid in out.decode(errors="replace").split():
                        run_cmd([BINARIES[runtime], "--root", root, "delete", "--force", cid])
        self.live.clear()
        reap_all()
        leftovers = sweep_cgroups()
        if leftovers:
            self.notes.append(f"removed leftover cgroups: {leftovers}")
        reap_all()
        self.workaround.undo()
        self.call.close()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if os.path.exists(self.tmp):
                self.notes.append(f"WARNING: could not remove {self.tmp}")
        stray = find_cgroups()
        if stray:
            self.notes.append(f"WARNING: cgroups left behind: {stray}")


def find_cgroups(max_depth: int = 4) -> list[str]:
    """Every cgroup directory of this run (named with PREFIX), deepest first."""
    found: list[str] = []

    def walk(path: str, depth: int) -> None:
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.startswith(PREFIX):
                walk(entry.path, max_depth)  # anything under ours is ours too
                found.append(entry.path)
            elif depth < max_depth:
                walk(entry.path, depth + 1)

    walk(CGROUP_ROOT, 0)
    return sorted(found, key=lambda p: -p.count("/"))


def sweep_cgroups() -> list[str]:
    """Kill what is still inside this run's cgroups and remove them."""
    leftovers = find_cgroups()
    for path in leftovers:
        for line in _read(f"{path}/cgroup.procs").split():
            try:
                os.kill(int(line), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for path in leftovers:
        for _ in range(200):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                reap_all()
                time.sleep(0.01)
    return leftovers


# ---- output -------------------------------------------------------------------------------

QUIET = False


def progress(message: str) -> None:
    if not QUIET and sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{message}")
        sys.stderr.flush()


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value / 1e6:.1f}"
    return f"{value:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def markdown_table(bench: Bench) -> str:
    res = bench.results
    floor = res.median("floor", FLOOR)
    lines = [
        "| case | handcar | runc | crun | handcar/runc | handcar/crun | handcar/floor |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for key, label, unit, vs_floor in ROWS:
        if key not in res.samples and key not in res.errors and key not in res.skipped:
            continue
        label = label.format(n=bench.list_size) + f" ({unit})"
        med = {rt: res.median(key, rt) for rt in RUNTIMES}
        cells = []
        for rt in RUNTIMES:
            if rt in res.errors.get(key, {}):
                cells.append("error")
            elif rt == "handcar" and key in res.skipped:
                cells.append("n/a")
            else:
                cells.append(fmt(med[rt], unit))
        h = med["handcar"]
        lines.append(
            f"| {label} | {' | '.join(cells)} | {ratio(h, med['runc'])} | "
            f"{ratio(h, med['crun'])} | {ratio(h, floor) if vs_floor else ''} |"
        )
    if floor is not None:
        lines.append(f"| floor: `python3 -I -S -c pass` (ms) | {fmt(floor, 'ms')} | | | | | 1.00 |")
    return "\n".join(lines)


def ab_table(bench: Bench) -> str:
    """handcar and runc with crun's workaround (the main table) and in the host's own layout."""
    res = bench.results
    lines = [
        "| case (ms) | handcar, host layout | handcar, workaround | runc, host layout | "
        "runc, workaround | handcar/runc, host | handcar/runc, workaround |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for key, label, unit, _ in ROWS:
        if unit != "ms" or key + HOST not in res.samples:
            continue
        h_host, h_ws = res.median(key + HOST, "handcar"), res.median(key, "handcar")
        r_host, r_ws = res.median(key + HOST, "runc"), res.median(key, "runc")
        lines.append(
            f"| {label} | {fmt(h_host, unit)} | {fmt(h_ws, unit)} | {fmt(r_host, unit)} | "
            f"{fmt(r_ws, unit)} | {ratio(h_host, r_host)} | {ratio(h_ws, r_ws)} |"
        )
    return "\n".join(lines)


def target_lines(bench: Bench) -> list[str]:
    res = bench.results
    out: list[str] = []

    def check(name: str, value: float | None, bound: float, base: float | None) -> None:
        if value is None or base is None:
            return
        r = value / base
        out.append(f"{'PASS' if r <= bound else 'MISS'}  {name}: {r:.2f} (target ≤ {bound})")

    check("run, handcar/runc", res.median("run", "handcar"), 1.0, res.median("run", "runc"))
    for key in ("cycle", "cycle_limits"):
        check(f"{key}, handcar/runc", res.median(key, "handcar"), 1.0, res.median(key, "runc"))
    floor = res.median("floor", FLOOR)
    for key in ("state", "start", "kill", "delete"):
        check(f"{key}, handcar/floor", res.median(key, "handcar"), 1.3, floor)
    check("exec, handcar/runc", res.median("exec", "handcar"), 1.0, res.median("exec", "runc"))
    check("init VmRSS, handcar/runc", res.median("rss", "handcar"), 1.0, res.median("rss", "runc"))
    return out


def to_json(bench: Bench, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    res = bench.results
    summary: dict[str, Any] = {}
    for row, per_runner in res.samples.items():
        summary[row] = {
            runner: {
                "median": statistics.median(v),
                "p25": percentile(v, 0.25),
                "p75": percentile(v, 0.75),
                "n": len(v),
            }
            for runner, v in per_runner.items()
        }
    return {
        "units": {"ms rows": "nanoseconds", "rss/pss/private": "MiB"},
        "runs": args.runs,
        "list_size": bench.list_size,
        "seconds": round(seconds, 1),
        "versions": versions(),
        "summary": summary,
        "samples": res.samples,
        "errors": res.errors,
        "skipped": res.skipped,
        "notes": bench.notes + bench.workaround.log,
        "targets": target_lines(bench),
    }


def versions() -> dict[str, str]:
    return {
        "handcar": first_line([HANDCAR, "--version"]),
        "runc": first_line([RUNC, "--version"]),
        "crun": first_line([CRUN, "--version"]),
        "python": first_line([VENV_PYTHON, "-I", "-S", "-c", "import sys; print(sys.version)"]),
        "kernel": platform.release(),
    }


# ---- main ---------------------------------------------------------------------------------


def _raise_interrupted(signum: int, _frame: object) -> NoReturn:
    raise Interrupted(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="iterations (default 40: < 3 min)")
    parser.add_argument("--markdown", action="store_true", help="print only the Markdown table")
    parser.add_argument("--json", metavar="FILE", help="also write every sample to FILE")
    parser.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    parser.add_argument("--list-size", type=int, default=100, help="containers for `list`")
    parser.add_argument("--no-crun", action="store_true", help="skip crun (and its workaround)")
    parser.add_argument(
        "--ab",
        action="store_true",
        help="also time handcar and runc in the host's own cgroup layout (crun's workaround off)",
    )
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown or args.runs < 1:
        parser.error(f"unknown cases {sorted(unknown)}" if unknown else "--runs must be >= 1")
    if os.geteuid() != 0:
        parser.error("the bench creates real containers: run it as root")
    global QUIET
    QUIET = args.markdown

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGHUP, _raise_interrupted)
    set_child_subreaper()
    bench = Bench(args.runs, args.list_size, cases, not args.no_crun, args.ab)
    started = time.monotonic()
    interrupted: BaseException | None = None
    try:
        bench.setup()
        bench.run()
    except (KeyboardInterrupt, Interrupted, BenchError) as err:
        interrupted = err
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
        progress("cleaning up")
        bench.cleanup()
        progress("")
    seconds = time.monotonic() - started

    if interrupted is not None:
        for line in bench.notes + bench.workaround.log:
            print(line, file=sys.stderr)
        what = type(interrupted).__name__ if not str(interrupted) else str(interrupted)
        print(f"bench stopped: {what}; everything was cleaned up", file=sys.stderr)
        return 130 if isinstance(interrupted, (KeyboardInterrupt, Interrupted)) else 1

    table = markdown_table(bench)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(bench, args, seconds), f, indent=1)
    if args.markdown:
        print(table)
        for line in bench.workaround.log + bench.notes:
            print(line, file=sys.stderr)
        return 0
    v = versions()
    print(f"handcar bench: {args.runs} runs, interleaved, medians; {seconds:.0f} s")
    print(f"{v['handcar']} · {v['runc']} · {v['crun']} · Python {v['python'].split()[0]}")
    print()
    print(table)
    if bench.ab and any(k.endswith(HOST) for k in bench.results.samples):
        print()
        print("Workaround A/B (same run, interleaved):")
        print()
        print(ab_table(bench))
    print()
    for line in target_lines(bench):
        print(line)
    for line in bench.workaround.log + bench.notes:
        print(f"note: {line}")
    for case, why in bench.results.skipped.items():
        print(f"note: {case} for handcar skipped: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
