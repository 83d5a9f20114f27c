"""Fixtures for the cgroup tests: real cgroups named handcar-test-*, real processes.

Every cgroup a test makes is removed in the fixture's finalizer, even when the test fails,
after its processes are killed; a session finalizer sweeps any handcar-test-* left anyway.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from collections.abc import Callable, Iterator

import pytest

from handcar.cgroups.fs import detect_layout
from handcar.cgroups.manager import Manager, open_manager
from harness import poll

PREFIX = "handcar-test-"
CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED = "/sys/fs/cgroup/unified"
_counter = itertools.count()


def unique_name(label: str = "") -> str:
    return f"{PREFIX}{os.getpid()}-{next(_counter)}{'-' + label if label else ''}"


def _kill_and_remove(path: str) -> None:
    """Kill whatever is in a test cgroup and below, then rmdir it bottom-up."""
    if not os.path.isdir(path):
        return
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            _kill_and_remove(entry.path)
    try:
        with open(path + "/cgroup.procs") as f:
            pids = [int(x) for x in f.read().split()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    state = path + "/freezer.state"
    if os.path.exists(state):
        with open(state, "w") as f:
            f.write("THAWED")
    if os.path.exists(path + "/cgroup.freeze"):
        with open(path + "/cgroup.freeze", "w") as f:
            f.write("0")
    poll(lambda: _rmdir(path), 1.0, 0.005)


def _rmdir(path: str) -> bool:
    """rmdir; whether the directory is gone (a cgroup is busy until its tasks have left)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def sweep(name_prefix: str) -> None:
    """Remove every cgroup whose top-level name starts with name_prefix, on all hierarchies."""
    for hierarchy in os.listdir(CGROUP_ROOT):
        base = f"{CGROUP_ROOT}/{hierarchy}"
        if not os.path.isdir(base) or os.path.islink(base):
            continue
        for entry in os.listdir(base):
            if entry.startswith(name_prefix):
                _kill_and_remove(f"{base}/{entry}")


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftovers() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("cgroup tests need root")
    with open(UNIFIED + "/cgroup.subtree_control") as f:
        subtree_before = f.read().split()
    yield
    sweep(f"{PREFIX}{os.getpid()}-")
    # Tests enable hugetlb in the cgroup2 root; hand the host back as it was.
    with open(UNIFIED + "/cgroup.subtree_control") as f:
        now = f.read().split()
    for controller in now:
        if controller not in subtree_before:
            try:
                with open(UNIFIED + "/cgroup.subtree_control", "w") as f:
                    f.write("-" + controller)
            except OSError:
                pass


@pytest.fixture
def cgroup_name() -> Iterator[str]:
    name = unique_name()
    yield name
    sweep(name)


@pytest.fixture
def v1_manager(cgroup_name: str) -> Iterator[Manager]:
    """A created container cgroup on this host's v1 (hybrid) hierarchies."""
    if detect_layout() == "v2":
        pytest.skip("needs cgroup v1 controllers")
    manager = open_manager("/" + cgroup_name, cgroup_name)
    manager.create()
    yield manager


@pytest.fixture
def v2_manager(cgroup_name: str) -> Iterator[Manager]:
    """A created container cgroup on cgroup2, driven as a pure v2 host would be."""
    mount = CGROUP_ROOT if detect_layout() == "v2" else UNIFIED
    manager = open_manager("/" + cgroup_name, cgroup_name, layout="v2", unified_mount=mount)
    manager.create()
    yield manager


class Gate:
    """A shell that waits for one line on stdin before running `script`, so a test can put
    it in a cgroup first. Its stdout is a pipe the test reads."""

    def __init__(self, script: str) -> None:
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", "read _ready; " + script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def open(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def output(self, timeout: float = 10.0) -> str:
        out, _ = self.proc.communicate(timeout=timeout)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def gates() -> Iterator[list[Gate]]:
    """Gates a test made; killed and reaped at the end whatever happens."""
    made: list[Gate] = []
    yield made
    for gate in made:
        gate.close()


@pytest.fixture
def gate(gates: list[Gate]) -> Callable[[str], Gate]:
    def make(script: str) -> Gate:
        g = Gate(script)
        gates.append(g)
        return g

    return make


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()
