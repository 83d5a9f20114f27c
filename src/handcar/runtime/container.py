"""The container lifecycle on the runtime's side: create, start, state, kill, delete.

This is handcar's library API; the CLI is a thin layer over it.
"""

from __future__ import annotations

from handcar.errors import ContainerNotFound, ContainerNotRunning, HandcarError
from handcar.runtime.lifecycle import (
    CreateOptions,
    cgroup_manager,
    describe,
    destroy,
    kill_and_wait,
    release_init,
    run_hooks,
    signal_init,
    signal_leftovers,
)
from handcar.runtime.state import ContainerState, StateStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/handcar"


class Runtime:
    """One runtime root (runc's --root) and its global options."""

    __slots__ = ("store", "systemd_cgroup", "rootless")

    def __init__(
        self, root: str = DEFAULT_ROOT, systemd_cgroup: bool = False, rootless: bool = False
    ) -> None:
        self.store = StateStore(root)
        self.systemd_cgroup = systemd_cgroup
        self.rootless = rootless

    # ---- create --------------------------------------------------------------------------

    def create(
        self, container_id: str, options: CreateOptions, config: dict[str, Any] | None = None
    ) -> int:
        """Create the container; return the init's host pid once it blocks on exec.fifo.

        `config` is the bundle's config.json when the caller has already loaded it.

        The init is a fork of the calling process, and a container process with
        CAP_SYS_PTRACE can reach the caller's interpreter through its /proc/1/exe
        (CVE-2019-5736). So create (and exec_process) refuse with a HandcarError unless this
        process runs from an image that cannot be written: the handcar launcher execs the
        interpreter from a read-only overlayfs file or a sealed memfd. A program that drives
        containers from its own interpreter runs the `handcar` command instead, or is itself
        started the launcher's way.
        """
        from handcar.runtime.create import create_container

        return create_container(self, container_id, options, config)

    # ---- start, state, kill, delete -------------------------------------------------------

    def load(self, container_id: str) -> ContainerState:
        return self.store.load(container_id)

    def start(self, container_id: str) -> None:
        state = self.store.load(container_id)
        try:
            status = state.status()
            if status == "stopped":
                raise HandcarError("cannot start a container that has stopped")
            if status != "created":
                raise HandcarError("cannot start an already running container")
            release_init(state)
        finally:
            state.unlock()
        if state.config.get("hooks"):
            run_hooks(state, "poststart", "running", fatal=False)

    def state(self, container_id: str) -> dict[str, Any]:
        return describe(self.store.load(container_id, lock=False))

    def list(self) -> list[dict[str, Any]]:
        states = []
        for container_id in self.store.ids():
            try:
                states.append(describe(self.store.load(container_id, lock=False)))
            except (ContainerNotFound, HandcarError):
                continue
        return states

    def kill(self, container_id: str, signum: int, all_processes: bool = False) -> None:
        state = self.store.load(container_id, lock=False)
        status = state.status()
        if status == "stopped":
            if all_processes:
                # runc signals what is left in the cgroup even after the init died: a container
                # sharing a pid namespace (a CRI pod's pid=POD) keeps its other processes, and
                # containerd's shim reaps them with `kill --all ID 9` once the init exits.
                signal_leftovers(state, signum)
                return
            raise ContainerNotRunning()
        if all_processes and state.data.get("cgroup_paths"):
            cgroup_manager(state).kill_all(signum)
            return
        signal_init(state, signum)

    def delete(self, container_id: str, force: bool = False) -> None:
        try:
            state = self.store.load(container_id)
        except ContainerNotFound:
            if force:
                return
            raise
        try:
            if "id" in state.data and "config" not in state.data:
                state.data["config"] = {}
            status = state.status()
            if status in ("running", "paused") and not force:
                raise HandcarError(
                    f"cannot delete container {container_id} that is not stopped: {status}"
                )
            if status != "stopped":
                kill_and_wait(state)
            destroy(state)
        finally:
            state.unlock()
