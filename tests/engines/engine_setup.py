"""The engines the tests drive: containerd, podman and Docker wrappers with private configs.

The runtime under test is HANDCAR_TEST_RUNTIME (see engine_helpers); conftest.py holds the
module-scoped fixtures that start and stop these.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.engine_helpers import (
    background,
    descendants,
    kill_pids,
    processes_mentioning,
    stop_process,
)
from harness import HANDCAR, poll

IMAGES: dict[str, dict[str, Any]] = {
    "localhost/bb:latest": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
    # The CRI's sandbox ("pause") image: a process that sleeps until it is killed.
    "localhost/pause:latest": {"Env": ["PATH=/bin"], "Entrypoint": ["sleep", "2147483647"]},
}


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make test-deps)")


def remove_chains(chains: set[str]) -> None:
    """Delete the rules that jump to these chains, then flush and delete the chains."""
    for table in {c.split(":", 1)[0] for c in chains}:
        names = {c.split(":", 1)[1] for c in chains if c.startswith(table + ":")}
        rules = subprocess.run(
            ["iptables", "-t", table, "-S"], capture_output=True, text=True
        ).stdout.splitlines()
        for rule in rules:
            words = shlex.split(rule)
            if words[:1] == ["-A"] and "-j" in words and words[words.index("-j") + 1] in names:
                subprocess.run(
                    ["iptables", "-t", table, "-D", *words[1:]], capture_output=True, text=True
                )
        for name in names:
            subprocess.run(["iptables", "-t", table, "-F", name], capture_output=True)
        for name in names:
            subprocess.run(["iptables", "-t", table, "-X", name], capture_output=True)


# ---- containerd ------------------------------------------------------------------------------


def unmounted_v1_controllers() -> list[str]:
    """v1 hierarchies this host has (in /proc/self/cgroup) but has not mounted.

    A VM that once mounted, then unmounted, hugetlb keeps its hierarchy: containerd's cgroup
    library then fails every cgroup load with "cannot find cgroup mount destination" (no
    metrics, no OOM events), with runc as with handcar. The fixture mounts such hierarchies
    inside containerd's private mount namespace only.
    """
    mounted: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields = post.split()
            if fields and fields[0] == "cgroup":
                mounted |= set(fields[2].split(","))
    missing = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, names, _ = line.strip().split(":", 2)
            if hid != "0" and names:
                missing += [n for n in names.split(",") if n not in mounted]
    return missing


CRI_BRIDGE = "hctcri0"
CRI_SUBNET = "10.231.88.0/24"


class Containerd:
    def __init__(self, base: Path, cri: bool, runtime: str) -> None:
        self.base = base
        self.sock = str(base / "containerd.sock")
        self.config = base / "config.toml"
        self.runtime = runtime
        self.runtime_root = base / "runtime-root"
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            "version = 2",
            f'root = "{base}/root"',
            f'state = "{base}/state"',
            "[grpc]",
            f'  address = "{self.sock}"',
            "[ttrpc]",
            f'  address = "{self.sock}.ttrpc"',
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{base}/opt"',
        ]
        if not cri:
            lines.insert(3, 'disabled_plugins = ["io.containerd.grpc.v1.cri"]')
        else:
            cri_key = '[plugins."io.containerd.grpc.v1.cri"'
            lines += [
                f"{cri_key}]",
                '  sandbox_image = "localhost/pause:latest"',
                "  restrict_oom_score_adj = true",
                '  stream_server_address = "127.0.0.1"',
                '  stream_server_port = "0"',
                "  disable_apparmor = true",
                f"{cri_key}.cni]",
                '  bin_dir = "/usr/lib/cni"',
                f'  conf_dir = "{base}/cni"',
                f"{cri_key}.containerd]",
                '  default_runtime_name = "runc"',
                f"{cri_key}.containerd.runtimes.runc]",
                '  runtime_type = "io.containerd.runc.v2"',
                f"{cri_key}.containerd.runtimes.runc.options]",
                f'  BinaryName = "{runtime}"',
                f'  Root = "{self.runtime_root}"',
            ]
            # A CNI bridge of its own for pods with a network namespace (IPAM state under base)
            (base / "cni").mkdir(parents=True, exist_ok=True)
            bridge = {
                "type": "bridge",
                "bridge": CRI_BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": CRI_SUBNET}]],
                    "dataDir": f"{base}/cni-ipam",
                },
            }
            conflist = {"cniVersion": "0.4.0", "name": "hct-cri", "plugins": [bridge]}
            (base / "cni" / "10-hct.conflist").write_text(json.dumps(conflist))
        self.config.write_text("\n".join(lines) + "\n")

    def ctr(
        self, *args: str, ns: str = "hct", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "-a", self.sock, "-n", ns, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def leftover_processes(self) -> list[int]:
        """Shims still alive for this containerd, and their containers' processes."""
        shims = processes_mentioning(self.sock)
        return shims + [pid for shim in shims for pid in descendants(shim)]


@contextlib.contextmanager
def start_containerd(base: Path, cri: bool = False) -> Iterator[Containerd]:
    """containerd in a private mount namespace (its overlay mounts stay out of the host's),
    with any unmounted v1 cgroup hierarchy mounted there for its cgroup library."""
    need("containerd", "ctr", "unshare")
    base.mkdir(parents=True, exist_ok=True)
    ctd = Containerd(base, cri, HANDCAR)
    script = ""
    for controller in unmounted_v1_controllers():
        target = base / ("cgroup-" + controller)
        target.mkdir()
        script += f"mount -t cgroup -o {controller} cgroup {target} && "
    script += f'exec containerd --config "{ctd.config}"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    with background(argv, base / "containerd.log") as proc:
        ctd.proc = proc
        try:
            up = poll(lambda: ctd.ctr("version").returncode == 0, 30, 0.2)
            assert up, (base / "containerd.log").read_text()[-3000:]
            yield ctd
        finally:
            stop_process(proc.pid)
            # Shims outlive containerd by design: after the engine removed every container
            # they exit by themselves; whatever is still there now is stopped by pid.
            poll(lambda: not ctd.leftover_processes(), 5, 0.1)
            kill_pids(ctd.leftover_processes())
            poll(lambda: not ctd.leftover_processes(), 10, 0.1)


# ---- podman ----------------------------------------------------------------------------------


class Podman:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.conf = base / "containers.conf"
        self.runtime = HANDCAR
        runtimes = ["crun", "runc", "kata", "runsc", "youki", "krun", "handcar"]
        if os.path.basename(HANDCAR) not in runtimes:
            runtimes.append(os.path.basename(HANDCAR))
        (base / "net").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            "[containers]\n"
            'netns = "none"\n'
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            "[engine]\n"
            'events_logger = "file"\n'
            f'events_logfile_path = "{base}/events.log"\n'
            f"runtime_supports_json = {runtimes!r}\n".replace("'", '"')
            + f'tmp_dir = "{base}/tmp"\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f'network_config_dir = "{base}/net"\n'
            'cni_plugin_dirs = ["/usr/lib/cni"]\n'
        )
        self.env = dict(os.environ, CONTAINERS_CONF=str(self.conf))
        self.env.pop("CONTAINERS_STORAGE_CONF", None)

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.base / "root"),
            "--runroot",
            str(self.base / "runroot"),
            "--storage-driver",
            "overlay",
            "--runtime",
            self.runtime,
            "--cgroup-manager",
            "cgroupfs",
            *args,
        ]

    def __call__(
        self, *args: str, timeout: float = 90, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def ok(self, *args: str, timeout: float = 90) -> str:
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        return result.stdout


class Docker:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.sock = str(base / "docker.sock")

    def __call__(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", "unix://" + self.sock, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, DOCKER_CONFIG=str(self.base / "client")),
        )

    def ok(self, *args: str, timeout: float = 90) -> str:
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        return result.stdout


def record_timing(label: str, seconds: float) -> None:
    """Print a timing (seen with -s); with HANDCAR_ENGINE_TIMINGS=FILE, append it there too."""
    line = f"{time.strftime('%H:%M:%S')} {os.path.basename(HANDCAR)} {label}: {seconds:.2f}s\n"
    path = os.environ.get("HANDCAR_ENGINE_TIMINGS")
    if path:
        with open(path, "a") as f:
            f.write(line)
    print(line, end="")
