"""Shared fixtures: a busybox rootfs, bundles made from it, and a runtime with a private root.

Every container a test makes lives under a private --root and is force-deleted at teardown;
the teardown then fails the test if a state directory, cgroup or process was left behind.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANDCAR = os.environ.get("HANDCAR_TEST_RUNTIME", str(ROOT / ".venv" / "bin" / "handcar"))
sys.path.insert(0, str(ROOT / "src"))

from handcar.spec.bundle import make_rootfs  # noqa: E402
from handcar.spec.default import default_spec  # noqa: E402


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One busybox-static rootfs for the session; configs mount it read-only."""
    path = tmp_path_factory.mktemp("rootfs") / "rootfs"
    make_rootfs(str(path))
    return path


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

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 60, **kw: Any
    ) -> Result:
        """Run the CLI; output goes through files, not pipes, because a created container's
        init inherits the caller's stdio and would hold a pipe open for its whole life."""
        import tempfile

        cmd = [self.binary, "--root", str(self.root), *args]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(
                cmd, input=input, stdout=out, stderr=err, text=True, timeout=timeout, **kw
            )
            out.seek(0)
            err.seek(0)
            proc.stdout, proc.stderr = out.read(), err.read()
        return Result(proc)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start the CLI without waiting (for calls that block, or that a test interrupts)."""
        return subprocess.Popen([self.binary, "--root", str(self.root), *args], **kw)

    def config(self, args: list[str] | None = None) -> dict[str, Any]:
        config = default_spec()
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

    def create(self, config: dict[str, Any] | None = None, args: list[str] | None = None) -> str:
        if config is None and args is None:
            args = ["sleep", "300"]
        bundle = self.bundle(config, args)
        cid = self.new_id()
        result = self("create", "--bundle", str(bundle), cid)
        assert result.rc == 0, result
        return cid

    def state(self, cid: str) -> dict[str, Any]:
        result = self("state", cid)
        assert result.rc == 0, result
        state: dict[str, Any] = json.loads(result.out)
        return state

    def cleanup(self) -> list[str]:
        """Force-delete everything; return what was left behind."""
        leftovers = []
        for cid in list(self.ids):
            result = self("delete", "--force", cid)
            if result.rc != 0:
                leftovers.append(f"delete --force {cid} failed: {result.err.strip()}")
        if self.root.exists():
            leftovers += [f"state dir {p}" for p in self.root.iterdir() if p.is_dir()]
        leftovers += [f"cgroup {p}" for p in leaked_cgroups(self.ids)]
        return leftovers


def leaked_cgroups(ids: list[str]) -> list[str]:
    found = []
    wanted = set(ids)
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        for name in dirnames:
            if name in wanted:
                found.append(os.path.join(dirpath, name))
    return found


@pytest.fixture
def hc(tmp_path: Path, rootfs: Path) -> Iterator[Runtime]:
    runtime = Runtime(tmp_path / "root", tmp_path, rootfs)
    yield runtime
    leftovers = runtime.cleanup()
    assert not leftovers, f"left behind: {leftovers}"


@pytest.fixture
def make_config(hc: Runtime) -> Callable[..., dict[str, Any]]:
    return hc.config


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


@pytest.fixture(scope="session", autouse=True)
def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.exit("the tests create real containers and need root", returncode=2)
    if not Path(HANDCAR).exists():
        pytest.exit(f"{HANDCAR} is missing: run `make install`", returncode=2)


def has_tool(name: str) -> bool:
    return shutil.which(name) is not None
