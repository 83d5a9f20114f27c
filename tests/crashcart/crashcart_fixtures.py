"""Fixtures for crashcart: one toolbox image per session, busybox-static runc containers, and
snapshots of mount tables, loop devices and processes to prove nothing was left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import poll

# The installed launcher: sessions refuse to run from a writable interpreter file (CVE-2019-5736).
CRASHCART = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "crashcart")
RUNC = shutil.which("runc")


def crashcart_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(cache)
    return env


@dataclass
class Crashcart:
    """Runs the crashcart launcher with the session's image cache."""

    cache: Path
    image: str

    def command(self, *args: str) -> list[str]:
        return [CRASHCART, *args]

    def run(
        self, *args: str, timeout: float = 60, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            env=crashcart_env(self.cache),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(
            self.command(*args), env=crashcart_env(self.cache), text=True, **kwargs
        )


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crashcart-cache")


@pytest.fixture(scope="session")
def crashcart(image_cache: Path) -> Crashcart:
    """The default toolbox, built once for the whole test session."""
    if os.geteuid() != 0:
        pytest.skip("crashcart needs root")
    result = subprocess.run(
        [CRASHCART, "build", "--quiet"],
        env=crashcart_env(image_cache),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return Crashcart(image_cache, result.stdout.strip())


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root filesystem with nothing but a static busybox: no libc, no loader."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed")
    rootfs = tmp_path_factory.mktemp("busybox") / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    for directory in ("etc", "proc", "sys", "dev", "tmp", "root"):
        (rootfs / directory).mkdir(exist_ok=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    return rootfs


@dataclass
class RuncContainer:
    id: str
    root: Path
    bundle: Path
    pid: int

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert RUNC is not None
        return subprocess.run(
            [RUNC, "--root", str(self.root), "exec", self.id, *args],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )

    def mountinfo(self) -> list[str]:
        return mount_table(self.pid)

    def processes(self) -> list[int]:
        """Host pids of every process in the container's pid namespace."""
        return pids_in_namespace(self.pid)


def mount_table(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return sorted(f.read().splitlines())


def pids_in_namespace(pid: int) -> list[int]:
    target = os.stat(f"/proc/{pid}/ns/pid").st_ino
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino == target:
                found.append(int(entry))
        except OSError:
            continue
    return sorted(found)


def host_image_mounts() -> list[str]:
    """The host's mounts that crashcart could have leaked: erofs, squashfs, or its mount point.
    (Other engineers' tests mount other things concurrently, so the whole table can't be
    compared.)"""
    return [
        line
        for line in mount_table("self")
        if " - erofs " in line or " - squashfs " in line or "crashcart" in line
    ]


def loop_devices_for(image: str) -> list[str]:
    result = subprocess.run(["losetup", "-j", image], capture_output=True, text=True)
    return result.stdout.splitlines()


def make_config(
    bundle: Path,
    rootfs: Path,
    args: list[str],
    readonly_root: bool = False,
    readonly_dev: bool = False,
    user_namespace: bool = False,
) -> None:
    assert RUNC is not None
    subprocess.run([RUNC, "spec", "--bundle", str(bundle)], check=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["root"] = {"path": str(rootfs), "readonly": readonly_root}
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    if readonly_dev:
        for mount in config["mounts"]:
            if mount["destination"] == "/dev":
                mount["options"].append("ro")
    if user_namespace:
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        # sysfs can't be mounted from a user namespace without a network namespace of its
        # own mapping; a bind of the host's is what rootless runtimes do.
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/sys"]
        config["mounts"] = [m for m in config["mounts"] if m["type"] != "cgroup"]
    config_path.write_text(json.dumps(config, indent=1))


@pytest.fixture
def runc_container(busybox_rootfs: Path, tmp_path: Path) -> Iterator[Callable[..., RuncContainer]]:
    """Start busybox runc containers (`sleep` as init); each is killed and deleted afterwards,
    even when the test fails."""
    if RUNC is None:
        pytest.skip("runc is not installed")
    state_root = tmp_path / "runc-state"
    state_root.mkdir()
    userns_dirs: list[Path] = []

    def start(
        args: list[str] | None = None,
        readonly_root: bool = False,
        readonly_dev: bool = False,
        user_namespace: bool = False,
    ) -> RuncContainer:
        assert RUNC is not None
        container_id = f"cc-{uuid.uuid4().hex[:10]}"
        bundle = tmp_path / container_id
        bundle.mkdir()
        rootfs = busybox_rootfs
        if user_namespace:
            # The mapped root must reach its root: a private copy it owns, under a directory
            # anyone may traverse (pytest's tmp_path is under a root-only 0700 directory).
            outside = Path(tempfile.mkdtemp(prefix="crashcart-userns-"))
            outside.chmod(0o755)
            userns_dirs.append(outside)
            rootfs = outside / "rootfs"
            shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
            subprocess.run(["chown", "-R", "-h", "200000:200000", str(rootfs)], check=True)
        make_config(
            bundle,
            rootfs,
            args or ["sleep", "3600"],
            readonly_root=readonly_root,
            readonly_dev=readonly_dev,
            user_namespace=user_namespace,
        )
        # The container keeps runc's stdio: a pipe would never reach end of file.
        log = bundle / "runc.log"
        with open(log, "w") as log_file:
            result = subprocess.run(
                [RUNC, "--root", str(state_root), "run", "-d", "--bundle", str(bundle)]
                + [container_id],
                stdout=log_file,
                stderr=log_file,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        assert result.returncode == 0, log.read_text()
        state = json.loads(
            subprocess.run(
                [RUNC, "--root", str(state_root), "state", container_id],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        container = RuncContainer(container_id, state_root, bundle, int(state["pid"]))
        return container

    yield start
    assert RUNC is not None
    # Everything in the state root, including a container whose start half failed.
    for container_id in os.listdir(state_root):
        subprocess.run(
            [RUNC, "--root", str(state_root), "delete", "-f", container_id],
            capture_output=True,
            timeout=60,
        )
    for directory in userns_dirs:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def container(runc_container: Callable[..., RuncContainer]) -> RuncContainer:
    return runc_container()


@dataclass
class Snapshot:
    host_mounts: list[str]
    container_mounts: list[str]
    processes: list[int]


@pytest.fixture
def unchanged(container: RuncContainer, crashcart: Crashcart) -> Iterator[Callable[[], None]]:
    """Call the returned function to assert the host and container look as they did before."""
    before = Snapshot(host_image_mounts(), container.mountinfo(), container.processes())

    def check() -> None:
        # The keeper may still be finishing its exit when crashcart returns: allow a moment.
        poll(lambda: container.processes() == before.processes, 5, 0.05)
        assert container.processes() == before.processes
        assert container.mountinfo() == before.container_mounts
        assert host_image_mounts() == before.host_mounts
        assert loop_devices_for(crashcart.image) == []
        assert not os.path.exists(f"/proc/{container.pid}/root/dev/crashcart")

    yield check


def kill_quietly(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
