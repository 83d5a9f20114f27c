"""Kubernetes' CRI: containerd's CRI plugin with the runtime under test as the runc v2 shim's
BinaryName, driven over its gRPC API (grpcio and the generated stubs of the PyPI package
container-runtime-interface-api). A host-network pod sandbox (its pause container is
localhost/pause, busybox sleeping) plus one container: start, exec, log, stop, remove."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.engine_setup import CRI_SUBNET, Containerd, start_containerd
from harness import wait_for

pytestmark = pytest.mark.slow

grpc = pytest.importorskip("grpc")
api = pytest.importorskip("cri_api.v1.api_pb2")
api_grpc = pytest.importorskip("cri_api.v1.api_pb2_grpc")


def processes_with_cmdline(cmdline: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if entry.isdigit() and f.read() == cmdline:
                    found.append(int(entry))
        except OSError:
            continue
    return found


class Cri:
    def __init__(self, ctd: Containerd, logs: Path) -> None:
        self.ctd = ctd
        self.logs = logs
        self.channel = grpc.insecure_channel("unix://" + ctd.sock)
        self.runtime = api_grpc.RuntimeServiceStub(self.channel)
        self.images = api_grpc.ImageServiceStub(self.channel)


@pytest.fixture(scope="module")
def cri(engine_dir: Path, image_archive: Path, network_guard: None) -> Iterator[Cri]:
    with start_containerd(engine_dir / "containerd", cri=True) as ctd:
        result = ctd.ctr("image", "import", str(image_archive), ns="k8s.io", timeout=120)
        assert result.returncode == 0, result
        client = Cri(ctd, engine_dir / "pod-logs")
        try:
            yield client
        finally:
            rt = client.runtime
            for c in rt.ListContainers(api.ListContainersRequest()).containers:
                rt.RemoveContainer(api.RemoveContainerRequest(container_id=c.id))
            for p in rt.ListPodSandbox(api.ListPodSandboxRequest()).items:
                rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=p.id))
                rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=p.id))
            client.channel.close()


def test_version_and_images(cri: Cri) -> None:
    version = cri.runtime.Version(api.VersionRequest())
    assert version.runtime_name == "containerd" and version.runtime_api_version == "v1"
    tags = {t for i in cri.images.ListImages(api.ListImagesRequest()).images for t in i.repo_tags}
    assert {"localhost/bb:latest", "localhost/pause:latest"} <= tags


def test_pod_and_container(cri: Cri) -> None:
    rt: Any = cri.runtime
    uid = uuid.uuid4().hex[:8]
    pod_config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="pod-" + uid, uid=uid, namespace="hct", attempt=0),
        # no hostname: a host-network pod shares the host's UTS namespace (kubelet sends none)
        log_directory=str(cri.logs / uid),
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent="/hct-pods",
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=api.NODE)
            ),
        ),
    )
    pod = rt.RunPodSandbox(api.RunPodSandboxRequest(config=pod_config)).pod_sandbox_id
    status = rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
    assert status.state == api.SANDBOX_READY
    # the sandbox's pause container runs on the runtime under test
    assert (cri.ctd.runtime_root / "k8s.io" / pod).is_dir()

    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="main", attempt=0),
        image=api.ImageSpec(image="localhost/bb:latest"),
        command=["sh", "-c", 'echo hello-log; trap "exit 0" TERM; while :; do sleep 0.1; done'],
        log_path="main.log",
        linux=api.LinuxContainerConfig(
            resources=api.LinuxContainerResources(memory_limit_in_bytes=64 << 20)
        ),
    )
    request = api.CreateContainerRequest(
        pod_sandbox_id=pod, config=config, sandbox_config=pod_config
    )
    cid = rt.CreateContainer(request).container_id
    rt.StartContainer(api.StartContainerRequest(container_id=cid))

    def state() -> int:
        response = rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid))
        return int(response.status.state)

    assert wait_for(lambda: state() == api.CONTAINER_RUNNING, 20)
    assert (cri.ctd.runtime_root / "k8s.io" / cid).is_dir()

    sync = rt.ExecSync(
        api.ExecSyncRequest(
            container_id=cid, cmd=["sh", "-c", "echo in-exec; echo err >&2; exit 3"], timeout=20
        )
    )
    assert (sync.exit_code, sync.stdout, sync.stderr) == (3, b"in-exec\n", b"err\n")

    # UpdateContainerResources goes through the runtime's `update`; the cgroup shows it
    resources = api.LinuxContainerResources(memory_limit_in_bytes=128 << 20)
    rt.UpdateContainerResources(
        api.UpdateContainerResourcesRequest(container_id=cid, linux=resources)
    )
    limit = rt.ExecSync(
        api.ExecSyncRequest(
            container_id=cid,
            cmd=[
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
                " || cat /sys/fs/cgroup/memory.max",
            ],
            timeout=20,
        )
    )
    assert limit.stdout.decode().strip() == str(128 << 20), limit
    stats = rt.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    assert stats.memory.working_set_bytes.value > 0, stats

    log = cri.logs / uid / "main.log"
    assert wait_for(lambda: log.exists() and "hello-log" in log.read_text(), 20)
    assert log.read_text().splitlines()[0].endswith(" stdout F hello-log")

    started = time.monotonic()
    rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=10))
    assert time.monotonic() - started < 10  # the TERM trap ran: no SIGKILL fallback
    final = rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status
    assert final.state == api.CONTAINER_EXITED and final.exit_code == 0, final
    rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
    rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert not rt.ListContainers(api.ListContainersRequest()).containers
    assert not rt.ListPodSandbox(api.ListPodSandboxRequest()).items
    assert not (cri.ctd.runtime_root / "k8s.io" / cid).exists()
    assert not (cri.ctd.runtime_root / "k8s.io" / pod).exists()


def test_host_network_pod_with_hostname_is_refused(cri: Cri) -> None:
    """runc refuses a hostname without a private UTS namespace; so does the runtime under test
    (it must neither rename the host nor drop the field silently)."""
    rt: Any = cri.runtime
    uid = uuid.uuid4().hex[:8]
    pod_config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="bad-" + uid, uid=uid, namespace="hct", attempt=0),
        hostname="renamed-" + uid,
        log_directory=str(cri.logs / uid),
        linux=api.LinuxPodSandboxConfig(
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=api.NODE)
            ),
        ),
    )
    hostname = Path("/proc/sys/kernel/hostname").read_text()
    with pytest.raises(grpc.RpcError) as failure:
        rt.RunPodSandbox(api.RunPodSandboxRequest(config=pod_config))
    assert "unable to set hostname without a private UTS namespace" in str(failure.value)
    assert Path("/proc/sys/kernel/hostname").read_text() == hostname
    assert not rt.ListPodSandbox(api.ListPodSandboxRequest()).items


def test_pod_network(cri: Cri) -> None:
    """A pod with its own network namespace on the CNI bridge (containerd makes the netns and
    the runtime joins it by path, for the sandbox and then for the container)."""
    rt: Any = cri.runtime
    uid = uuid.uuid4().hex[:8]
    pod_config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="net-" + uid, uid=uid, namespace="hct", attempt=0),
        hostname="net-" + uid,
        log_directory=str(cri.logs / uid),
        linux=api.LinuxPodSandboxConfig(),
    )
    pod = rt.RunPodSandbox(api.RunPodSandboxRequest(config=pod_config)).pod_sandbox_id
    status = rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
    ip = status.network.ip
    assert ip.startswith(CRI_SUBNET.rsplit(".", 1)[0] + "."), status
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="main", attempt=0),
        image=api.ImageSpec(image="localhost/bb:latest"),
        command=["sh", "-c", "sleep 1237 & exec sleep 1237"],
        log_path="main.log",
        # the pod's pid namespace: joined by path; on exit the shim runs `kill --all`
        linux=api.LinuxContainerConfig(
            security_context=api.LinuxContainerSecurityContext(
                namespace_options=api.NamespaceOption(pid=api.POD)
            )
        ),
    )
    request = api.CreateContainerRequest(
        pod_sandbox_id=pod, config=config, sandbox_config=pod_config
    )
    cid = rt.CreateContainer(request).container_id
    rt.StartContainer(api.StartContainerRequest(container_id=cid))
    sync = rt.ExecSync(
        api.ExecSyncRequest(
            container_id=cid, cmd=["sh", "-c", "ip -4 addr; hostname; ps"], timeout=20
        )
    )
    assert sync.exit_code == 0, sync
    out = sync.stdout.decode()
    assert f"inet {ip}/" in out and f"net-{uid}" in out, out
    assert "sleep 2147483647" in out, out  # the sandbox's pause process, in the shared pid ns
    rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0))
    final = rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status
    assert final.state == api.CONTAINER_EXITED, final
    # the background sleep was no child of the init: `kill --all` ended it too
    assert wait_for(lambda: not processes_with_cmdline(b"sleep\x001237\x00"), 10)
    rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
    rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert not rt.ListPodSandbox(api.ListPodSandboxRequest()).items
