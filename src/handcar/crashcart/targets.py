"""Turning what the user typed (a container id or name, or a pid) into a container's init pid."""

from __future__ import annotations

import glob
import json
import os
import shutil

from handcar.crashcart.errors import CrashcartError

# Each OCI runtime's default state root and the file in a container's directory that holds its
# init pid, with the JSON keys of the pid and of its start time (to catch a reused pid).
RUNTIME_STATE_ROOTS = (
    ("handcar", "/run/handcar"),
    ("runc", "/run/runc"),
    ("crun", "/run/crun"),
    ("docker", "/run/docker/runtime-runc/moby"),
)
STATE_FILES = (
    ("state.json", "init_process_pid", "init_process_start"),
    ("state.json", "pid", "init_start_time"),
    ("status", "pid", "process-start-time"),
)
ENGINE_TIMEOUT = 10.0


class Target:
    __slots__ = ("pid", "description")

    def __init__(self, pid: int, description: str) -> None:
        self.pid = pid
        self.description = description


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: the start time in clock ticks, unique for a pid's lifetime."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().decode(errors="replace").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def check_alive(pid: int, what: str) -> None:
    state = process_state(pid)
    if state is None:
        raise CrashcartError(f"{what}: process {pid} does not exist")
    if state in ("Z", "X"):
        raise CrashcartError(f"{what}: process {pid} has exited")


def state_roots(extra_roots: list[str]) -> list[tuple[str, str]]:
    roots = [("state root", root) for root in extra_roots]
    roots.extend(RUNTIME_STATE_ROOTS)
    # containerd's runc shim keeps one runc root per namespace.
    roots.extend(("containerd", r) for r in sorted(glob.glob("/run/containerd/runc/*")))
    return roots


def pid_from_state_dir(directory: str) -> tuple[int, int | None] | None:
    for filename, pid_key, start_key in STATE_FILES:
        try:
            with open(os.path.join(directory, filename)) as f:
                state = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(state, dict) or not isinstance(state.get(pid_key), int):
            continue
        start = state.get(start_key)
        return state[pid_key], start if isinstance(start, int) else None
    return None


def find_in_state_roots(name: str, extra_roots: list[str]) -> Target | None:
    for runtime, root in state_roots(extra_roots):
        try:
            ids = os.listdir(root)
        except OSError:
            continue
        if name in ids:
            matches = [name]
        else:
            matches = [i for i in ids if i.startswith(name)] if len(name) >= 3 else []
        if len(matches) > 1:
            raise CrashcartError(f"{name} is ambiguous in {root}: {', '.join(sorted(matches))}")
        if not matches:
            continue
        found = pid_from_state_dir(os.path.join(root, matches[0]))
        if found is None:
            continue
        pid, start = found
        what = f"{runtime} container {matches[0]}"
        if pid <= 0:
            raise CrashcartError(f"{what} is not running")
        check_alive(pid, what)
        if start is not None and process_start_time(pid) not in (start, None):
            raise CrashcartError(f"{what}: its init (pid {pid}) has exited")
        return Target(pid, what)
    return None


def _ask(command: list[str]) -> str | None:
    import subprocess  # only engines need it: keep it off the common path

    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=ENGINE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def find_with_engine(name: str) -> Target | None:
    """Ask podman, Docker and containerd, each only if it is installed and (for daemons) up."""
    # Only a podman that has containers is asked: a first podman call sets up its storage,
    # which mounts on the host, and crashcart must not change the host's mount table.
    podman_used = os.path.exists("/var/lib/containers/storage/overlay-containers/containers.json")
    if shutil.which("podman") and podman_used:
        pid = _ask(["podman", "inspect", "--type", "container", "--format", "{{.State.Pid}}", name])
        if pid and pid.isdigit():
            return _engine_target(int(pid), f"podman container {name}")
    docker_up = os.environ.get("DOCKER_HOST") or os.path.exists("/run/docker.sock")
    if shutil.which("docker") and docker_up:
        pid = _ask(["docker", "inspect", "--type", "container", "--format", "{{.State.Pid}}", name])
        if pid and pid.isdigit():
            return _engine_target(int(pid), f"docker container {name}")
    containerd_up = os.environ.get("CONTAINERD_ADDRESS") or os.path.exists(
        "/run/containerd/containerd.sock"
    )
    if shutil.which("ctr") and containerd_up:
        return find_containerd_task(name)
    return None


def find_containerd_task(name: str) -> Target | None:
    namespaces_listing = _ask(["ctr", "namespaces", "ls", "-q"]) or ""
    namespace_names = [n for n in namespaces_listing.split() if n]
    namespace, task = name.split("/", 1) if "/" in name else (None, name)
    for ns in [namespace] if namespace else namespace_names:
        listing = _ask(["ctr", "-n", ns, "task", "ls"]) or ""
        for line in listing.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == task and fields[1].isdigit():
                return _engine_target(int(fields[1]), f"containerd task {ns}/{task}")
    return None


def _engine_target(pid: int, what: str) -> Target:
    if pid <= 0:
        raise CrashcartError(f"{what} is not running")
    check_alive(pid, what)
    return Target(pid, what)


def resolve_target(name: str, extra_roots: list[str] | None = None) -> Target:
    if not name:
        raise CrashcartError("no target given")
    found = find_in_state_roots(name, extra_roots or [])
    if found:
        return found
    if name.isdigit():
        pid = int(name)
        check_alive(pid, f"pid {pid}")
        return Target(pid, f"pid {pid}")
    found = find_with_engine(name)
    if found:
        return found
    raise CrashcartError(
        f"{name}: no such container (looked in handcar, runc and crun state, podman, docker and"
        " containerd) and not a pid"
    )
