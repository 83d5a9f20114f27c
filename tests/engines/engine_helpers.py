"""Helpers for the engine tests: image archives, a pty driver, process and mount cleanup.

Nothing here starts an engine; conftest.py does that with module-scoped fixtures.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import tarfile
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness import poll

# ---- images ----------------------------------------------------------------------------------


def layer_tar(rootfs: Path) -> bytes:
    """An uncompressed layer of the rootfs (so its digest is also its diff_id)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, name)
                info = tar.gettarinfo(full, os.path.relpath(full, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def write_image_archive(
    rootfs: Path, out: Path, images: dict[str, dict[str, Any]], www: str = "hello-from-httpd\n"
) -> Path:
    """One archive that `ctr image import`, `docker load` and `podman load` all read: an OCI
    layout (index.json, blobs) with a docker manifest.json beside it. `images` maps a reference
    (localhost/bb:latest) to its image config's "config" section (Env, Cmd, ...)."""
    tree = out.parent / (out.name + ".rootfs")
    subprocess.run(["cp", "-a", str(rootfs), str(tree)], check=True)
    (tree / "www").mkdir(exist_ok=True)
    (tree / "www" / "index.html").write_text(www)
    layer = layer_tar(tree)
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    layer_digest = blob(layer)
    index: list[dict[str, Any]] = []
    docker: list[dict[str, Any]] = []
    for ref, cfg in images.items():
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": "2024-01-01T00:00:00Z",
                "config": cfg,
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
                "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "engine tests"}],
            }
        ).encode()
        config_digest = blob(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        manifest_digest = blob(manifest)
        index.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                },
            }
        )
        docker.append(
            {
                "Config": "blobs/sha256/" + config_digest[7:],
                "RepoTags": [ref],
                "Layers": ["blobs/sha256/" + layer_digest[7:]],
            }
        )
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps({"schemaVersion": 2, "manifests": index}).encode(),
        "manifest.json": json.dumps(docker).encode(),
    }
    with tarfile.open(out, "w") as tar:
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for digest, data in blobs.items():
            files["blobs/sha256/" + digest[7:]] = data
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out


# ---- a real pty for -t -------------------------------------------------------------------------


class PtyResult:
    def __init__(self, output: bytes, code: int) -> None:
        self.output = output
        self.code = code

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def __repr__(self) -> str:
        return f"PtyResult(code={self.code}, output={self.output!r})"


def run_in_pty(
    argv: Sequence[str],
    script: Sequence[tuple[bytes, bytes]] = (),
    env: dict[str, str] | None = None,
    timeout: float = 60,
    size: tuple[int, int] = (33, 101),
) -> PtyResult:
    """Run argv with a fresh pty as its controlling terminal (CI has none). `script` is a list
    of (wait-for, then-type) pairs. Returns everything the terminal showed and the exit code."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))

    def child_setup() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        list(argv),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        preexec_fn=child_setup,
        close_fds=True,
    )
    os.close(slave)
    output = b""
    steps = list(script)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if steps and steps[0][0] in output:
                os.write(master, steps.pop(0)[1])
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave fd is closed
                    break
                if not data:
                    break
                output += data
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return PtyResult(output, code)


# ---- processes, mounts, waiting -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str = "/", timeout: float = 20.0) -> str:
    """GET from 127.0.0.1:port, retrying until the server inside the container answers."""
    errors: list[OSError] = []

    def attempt() -> str:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            return data.decode(errors="replace")
        except OSError as err:
            errors.append(err)
            return ""

    answer = poll(attempt, timeout, 0.2)
    if not answer:
        raise AssertionError(f"no answer on 127.0.0.1:{port}: {errors[-1:]}")
    return answer


def descendants(pid: int) -> list[int]:
    """Every process whose parent chain leads to pid (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                found.append(child)
                frontier.append(child)
    return found


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains text (used to find shims, conmons and containers that
    outlived their engine: they are re-parented to pid 1, so descendants() misses them)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry))
    return found


def stop_process(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after timeout; reaps it when it is our child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    if not poll(gone, timeout, 0.1):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        poll(gone, 10, 0.1)


def kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def mounts_under(prefix: Path) -> list[str]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == str(prefix) or target.startswith(str(prefix) + "/"):
                found.append(target)
    return found


def unmount_under(prefix: Path) -> list[str]:
    """Lazily unmount everything below prefix, deepest first; return what stays mounted."""
    for _ in range(3):
        targets = mounts_under(prefix)
        if not targets:
            return []
        for target in sorted(targets, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
    return mounts_under(prefix)


@contextlib.contextmanager
def background(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a daemon with its output in log; stop it (and only it) at the end."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    try:
        yield proc
    finally:
        stop_process(proc.pid)


def link_names() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def iptables_chains() -> set[str]:
    chains: set[str] = set()
    for table in ("filter", "nat"):
        out = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        chains |= {
            f"{table}:{line.split()[1]}" for line in out.splitlines() if line.startswith("-N")
        }
    return chains
