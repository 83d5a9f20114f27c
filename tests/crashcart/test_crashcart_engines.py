"""crashcart against a container that an engine (podman) started and names."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .crashcart_fixtures import Crashcart, host_image_mounts, mount_table, pids_in_namespace

PODMAN = shutil.which("podman")


@pytest.fixture
def podman_container(
    busybox_rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, int]]:
    if PODMAN is None or shutil.which("runc") is None:
        pytest.skip("podman and runc are needed")
    conf = tmp_path / "containers.conf"
    conf.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        "[engine]\n"
        'events_logger = "file"\n'
        'runtime = "runc"\n'
    )
    # crashcart asks podman too, so it must see the same configuration.
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    parents_before = _podman_parent_cgroups()
    image = f"localhost/crashcart-test-{uuid.uuid4().hex[:8]}"
    name = f"crashcart-{uuid.uuid4().hex[:8]}"
    tar = subprocess.Popen(["tar", "-C", str(busybox_rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run([PODMAN, "import", "-q", "-", image], stdin=tar.stdout, check=True, timeout=120)
    tar.wait()
    try:
        subprocess.run(
            [PODMAN, "run", "-d", "--name", name, "--network", "none", image, "sleep", "3600"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        pid = subprocess.run(
            [PODMAN, "inspect", "--format", "{{.State.Pid}}", name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        yield name, int(pid)
    finally:
        subprocess.run([PODMAN, "rm", "-f", "-t", "0", name], capture_output=True, timeout=120)
        subprocess.run([PODMAN, "rmi", "-f", image], capture_output=True, timeout=120)
        _remove_new_parent_cgroups(parents_before)


def _podman_parent_cgroups() -> set[str]:
    """podman's libpod_parent on every hierarchy: runc makes it and nobody removes it."""
    return {
        os.path.join(root, "libpod_parent")
        for root in (os.path.join("/sys/fs/cgroup", d) for d in os.listdir("/sys/fs/cgroup"))
        if os.path.isdir(os.path.join(root, "libpod_parent"))
    }


def _remove_new_parent_cgroups(before: set[str]) -> None:
    for parent in _podman_parent_cgroups() - before:
        for dirpath, _, _ in os.walk(parent, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


@pytest.mark.slow
def test_podman_container_by_name(crashcart: Crashcart, podman_container: tuple[str, int]) -> None:
    name, pid = podman_container
    before_host = host_image_mounts()
    before_container = mount_table(pid)
    processes = pids_in_namespace(pid)
    result = subprocess.run(
        crashcart.command(
            name, "--", "sh", "-c", "strace -V | head -1; ps -o pid,comm; ip -o link"
        ),
        env={**os.environ, **_env(crashcart)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "strace -- version" in result.stdout
    assert "sleep" in result.stdout
    assert mount_table(pid) == before_container
    assert host_image_mounts() == before_host
    assert pids_in_namespace(pid) == processes


def _env(crashcart: Crashcart) -> dict[str, str]:
    from .crashcart_fixtures import crashcart_env

    return crashcart_env(crashcart.cache)
