"""Helpers for the exec, hooks, run and features tests: real containers from a busybox bundle,
driven through the installed CLI with a private --root. Independent of conftest.py."""

from __future__ import annotations

import array
import json
import os
import select
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handcar.spec.bundle import make_rootfs
from handcar.spec.default import default_spec
from harness import HANDCAR, Result


class Containers:
    """A private runtime root; every container it makes is force-deleted by cleanup()."""

    def __init__(self, tmp: Path, rootfs: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "root"
        self.rootfs = rootfs
        self.ids: list[str] = []

    def argv(self, *args: str) -> list[str]:
        return [HANDCAR, "--root", str(self.root), *args]

    def __call__(self, *args: str, timeout: float = 30, **kwargs: Any) -> Result:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, **kwargs
        )
        return Result(proc)

    def detached(self, *args: str, timeout: float = 30, **kwargs: Any) -> Result:
        """Like __call__, with stdio in files: a detached process would hold a pipe open."""
        name = uuid.uuid4().hex[:8]
        out_path, err_path = self.tmp / f"{name}.out", self.tmp / f"{name}.err"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.run(
                self.argv(*args), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                timeout=timeout, **kwargs,
            )  # fmt: skip
        return Result(
            subprocess.CompletedProcess(
                proc.args, proc.returncode, out_path.read_text(), err_path.read_text()
            )
        )

    def new_id(self) -> str:
        cid = "x" + uuid.uuid4().hex[:10]
        self.ids.append(cid)
        return cid

    def config(self, args: list[str] | None = None) -> dict[str, Any]:
        config = default_spec()
        config["process"]["terminal"] = False
        config["process"]["args"] = args or ["sleep", "300"]
        config["root"] = {"path": str(self.rootfs), "readonly": True}
        return config

    def bundle(self, config: dict[str, Any]) -> Path:
        path = self.tmp / ("bundle-" + uuid.uuid4().hex[:8])
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        return path

    def create(self, config: dict[str, Any], *flags: str) -> str:
        """create (stdio to files, so no pipe is held open by the container)."""
        cid = self.new_id()
        bundle = self.bundle(config)
        with open(self.tmp / f"{cid}.out", "w") as out, open(self.tmp / f"{cid}.err", "w") as err:
            proc = subprocess.run(
                self.argv("create", "--bundle", str(bundle), *flags, cid),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=30,
            )
        assert proc.returncode == 0, (self.tmp / f"{cid}.err").read_text()
        return cid

    def start_container(self, config: dict[str, Any] | None = None) -> str:
        cid = self.create(config or self.config())
        result = self("start", cid)
        assert result.rc == 0, result
        return cid

    def state(self, cid: str) -> dict[str, Any]:
        result = self("state", cid)
        assert result.rc == 0, result
        state: dict[str, Any] = json.loads(result.out)
        return state

    def cleanup(self) -> None:
        for cid in self.ids:
            subprocess.run(self.argv("delete", "--force", cid), capture_output=True, timeout=30)


def make_fixture_rootfs(factory: pytest.TempPathFactory) -> Path:
    rootfs = factory.mktemp("xrootfs") / "rootfs"
    make_rootfs(str(rootfs))
    return rootfs


@pytest.fixture(scope="session")
def xrootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exec tests' rootfs: busybox plus what they need."""
    return make_fixture_rootfs(tmp_path_factory)


@pytest.fixture
def hx(tmp_path: Path, xrootfs: Path) -> Iterator[Containers]:
    """Containers for the exec, run and hooks tests, force-deleted at teardown."""
    containers = Containers(tmp_path, xrootfs)
    try:
        yield containers
    finally:
        containers.cleanup()


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


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


def read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out
