"""Engine fixtures: each engine runs with private configs and state under a temp dir.

The runtime under test is HANDCAR_TEST_RUNTIME (default: the venv's handcar launcher), so the
same tests also run against runc (`HANDCAR_TEST_RUNTIME=/usr/sbin/runc`) to show they are fair.
Every fixture is module-scoped (an engine starts once per module) and leaves nothing behind:
its processes are stopped by pid, its mounts unmounted, and the links and iptables chains it
made removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.engine_helpers import (
    background,
    descendants,
    iptables_chains,
    kill_pids,
    link_names,
    processes_mentioning,
    unmount_under,
    write_image_archive,
)
from engines.engine_setup import IMAGES, Docker, Podman, need, remove_chains, start_containerd
from harness import HANDCAR, poll

# The parent cgroups the engines ask for (docker's /docker, ctr's /<namespace>, the CRI's
# k8s.io and the tests' pod parent, podman's libpod_parent): runc creates and never removes them.
ENGINE_CGROUPS = ("docker", "hct", "hct-pods", "k8s.io", "libpod_parent")


def engine_cgroups() -> set[str]:
    found = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[:1] in (["cgroup"], ["cgroup2"]):
                mountpoint = pre.split()[4]
                found |= {
                    f"{mountpoint}/{name}"
                    for name in ENGINE_CGROUPS
                    if os.path.isdir(f"{mountpoint}/{name}")
                }
    return found


def remove_cgroup_tree(path: str) -> None:
    for dirpath, _, _ in os.walk(path, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


@pytest.fixture(scope="module")
def engine_dir() -> Iterator[Path]:
    """A short private dir (unix socket paths are limited to 108 bytes). Torn down after the
    engine: what is still mounted there is unmounted, and the parent cgroups and the
    /run/netns dir the engine made are removed."""
    path = Path(tempfile.mkdtemp(prefix="hce-", dir="/tmp"))
    cgroups = engine_cgroups()
    had_netns_dir = os.path.isdir("/run/netns")
    # containerd 1.6 keeps its shims' sockets and fifos under /run/containerd whatever its
    # config says, and dockerd its plugin dir under /run/docker
    new_run_dirs = [d for d in ("/run/containerd", "/run/docker") if not os.path.exists(d)]
    yield path
    for run_dir in new_run_dirs:
        shutil.rmtree(run_dir, ignore_errors=True)
    left = unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)
    for cgroup in engine_cgroups() - cgroups:
        remove_cgroup_tree(cgroup)
    if not had_netns_dir and os.path.isdir("/run/netns") and not os.listdir("/run/netns"):
        # `ip netns` (CNI) makes /run/netns a bind mount of itself
        subprocess.run(["umount", "/run/netns"], capture_output=True)
        with contextlib.suppress(OSError):
            os.rmdir("/run/netns")
    assert not left, f"still mounted: {left}"
    assert not engine_cgroups() - cgroups, f"cgroups left: {engine_cgroups() - cgroups}"


@pytest.fixture(scope="session")
def image_archive(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image archive (OCI layout plus docker manifest.json) of the busybox rootfs."""
    return write_image_archive(rootfs, tmp_path_factory.mktemp("image") / "bb.tar", IMAGES)


# What the engines make on the host: podman's CNI bridge (cni-podman0, 1, ...), dockerd's
# docker0, and their iptables chains. Only these are removed: other tests running at the same
# time may own other links.
ENGINE_LINKS = ("cni-podman", "docker0", "podman", "hctcri")
ENGINE_CHAINS = ("CNI-", "DOCKER", "NETAVARK")


def engine_links() -> set[str]:
    return {name for name in link_names() if name.startswith(ENGINE_LINKS)}


def engine_chains() -> set[str]:
    return {c for c in iptables_chains() if c.split(":", 1)[1].startswith(ENGINE_CHAINS)}


@pytest.fixture(scope="module")
def network_guard() -> Iterator[None]:
    """Remove the bridges and iptables chains an engine made."""
    links = engine_links()
    chains = engine_chains()
    cni_state = Path("/var/lib/cni")
    had_cni_state = cni_state.exists()
    yield
    for link in engine_links() - links:
        subprocess.run(["ip", "link", "del", link], capture_output=True)
    remove_chains(engine_chains() - chains)
    if not had_cni_state:
        shutil.rmtree(cni_state, ignore_errors=True)
    assert engine_links() <= links, f"links left behind: {engine_links() - links}"
    assert engine_chains() <= chains, f"chains left behind: {engine_chains() - chains}"


@pytest.fixture(scope="module")
def podman(
    engine_dir: Path, image_archive: Path, rootfs: Path, network_guard: None
) -> Iterator[Podman]:
    need("podman", "conmon")
    engine = Podman(engine_dir / "podman")
    try:
        engine.ok("load", "-q", "-i", str(image_archive), timeout=120)
        yield engine
    finally:
        engine("rm", "-a", "-f", "-t", "0", timeout=120)
        engine("pod", "rm", "-a", "-f", timeout=60)
        engine("rmi", "-a", "-f", timeout=60)
        # a conmon still there (podman rm failed): it and its container, by pid
        conmons = processes_mentioning(str(engine.base))
        kill_pids(conmons + [pid for conmon in conmons for pid in descendants(conmon)])
        engine("system", "reset", "-f", timeout=60)
        left = unmount_under(engine.base)
        assert not left, f"podman left mounts: {left}"


# ---- Docker ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker(engine_dir: Path, image_archive: Path, network_guard: None) -> Iterator[Docker]:
    """A private dockerd on a private containerd, inside containerd's mount namespace (the
    shim must see the rootfs dockerd mounts). No iptables; -p goes through docker-proxy."""
    need("dockerd", "docker", "nsenter")
    base = engine_dir / "docker"
    base.mkdir()
    with start_containerd(engine_dir / "containerd") as ctd:
        assert ctd.proc is not None
        argv = [
            "nsenter",
            "-t",
            str(ctd.proc.pid),
            "-m",
            "dockerd",
            "--data-root",
            f"{base}/root",
            "--exec-root",
            f"{base}/exec",
            "--pidfile",
            f"{base}/pid",
            "-H",
            f"unix://{base}/docker.sock",
            "--containerd",
            ctd.sock,
            "--add-runtime",
            f"handcar={HANDCAR}",
            "--default-runtime",
            "handcar",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--userland-proxy=true",
            "--bip",
            "172.29.177.1/24",
            "--storage-driver",
            "overlay2",
            "--log-level",
            "warn",
        ]
        engine = Docker(base)
        with background(argv, base / "dockerd.log") as proc:
            try:
                up = poll(lambda: engine("version").returncode == 0, 60, 0.3)
                assert up, (base / "dockerd.log").read_text()[-3000:]
                engine.ok("load", "-q", "-i", str(image_archive), timeout=120)
                yield engine
            finally:
                engine("rm", "-f", *engine("ps", "-aq").stdout.split(), timeout=120)
                del proc
        # dockerd's own mounts live in containerd's namespace and go with it.


# ---- timing report ----------------------------------------------------------------------------
