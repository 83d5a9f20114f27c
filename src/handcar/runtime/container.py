"""handcar's library API: `Runtime`, one state root and the whole container lifecycle.

    from handcar.runtime.container import Runtime
    from handcar.runtime.lifecycle import CreateOptions

    runtime = Runtime(root="/run/handcar")
    runtime.create("web1", CreateOptions(bundle="/srv/bundles/web1"))
    runtime.start("web1")
    runtime.state("web1")["status"]        # "running"
    runtime.exec("web1", {"args": ["/bin/true"], "cwd": "/"})
    runtime.pause("web1"); runtime.resume("web1")
    runtime.update("web1", {"memory": {"limit": 64 << 20}})
    runtime.kill("web1", 15)
    runtime.delete("web1", force=True)

Every method raises HandcarError (handcar.errors) with one line naming the field or argument
at fault. The CLI (handcar.cli) is a thin layer over this class.
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
    import builtins
    from collections.abc import Generator
    from typing import Any

    from handcar.runtime.exec import ExecOptions, ProcessSource
    from handcar.spec.types import Features, LinuxResources, RuncState, Spec

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

    def create(self, container_id: str, options: CreateOptions, config: Spec | None = None) -> int:
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

    def state(self, container_id: str) -> RuncState:
        return describe(self.store.load(container_id, lock=False))

    def list(self) -> list[RuncState]:
        states = []
        for container_id in self.store.ids():
            try:
                states.append(describe(self.store.load(container_id, lock=False)))
            except ContainerNotFound:
                continue  # deleted meanwhile
            except HandcarError as err:
                from handcar import log

                log.warning(str(err))  # shown, not silently dropped
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

    # ---- run and exec --------------------------------------------------------------------

    def run(
        self,
        container_id: str,
        options: CreateOptions,
        detach: bool = False,
        keep: bool = False,
    ) -> int:
        """create + start; in the foreground, wait for the init and delete the container
        (unless `keep`). Returns the init's exit code (128+signal), or 0 when detached."""
        from handcar.runtime.run import run_container

        return run_container(self, container_id, options, detach, keep)

    def exec(
        self,
        container_id: str,
        process: ProcessSource,
        options: ExecOptions | None = None,
    ) -> int:
        """Run a new process in the container: an OCI process object, or a function that
        builds one from the container's own process. Foreground: its exit code (128+signal);
        detached (`options.detach`): 0. Raises ExecSetupError before the process starts."""
        from handcar.runtime.exec import ExecOptions, exec_process

        return exec_process(self, container_id, process, options or ExecOptions())

    # ---- cgroups: pause, resume, update, ps, stats, events -------------------------------

    def pause(self, container_id: str) -> None:
        """Freeze every process of a running (or created) container."""
        from handcar.runtime import resources

        resources.pause(self.store, container_id)

    def resume(self, container_id: str) -> None:
        """Thaw a paused container."""
        from handcar.runtime import resources

        resources.resume(self.store, container_id)

    def update(self, container_id: str, resources: LinuxResources) -> None:
        """Apply a partial `linux.resources` to a created, running or paused container and
        keep it in the container's config. Validates every value before touching anything."""
        from handcar.cgroups.update import validate_resources
        from handcar.runtime import resources as ops

        validate_resources(resources, "resources")
        ops.update(self.store, container_id, resources)

    def ps(self, container_id: str) -> builtins.list[int]:
        """The host pids of the container's processes."""
        from handcar.runtime import resources

        return resources.pids(self.store, container_id)

    def stats(self, container_id: str) -> dict[str, Any]:
        """One snapshot of the container's cgroup statistics (runc's `events --stats` data)."""
        from handcar.runtime import resources

        return resources.stats(self.store, container_id)

    def events(
        self, container_id: str, interval: float = 5.0
    ) -> Generator[dict[str, Any], None, None]:
        """Stats events every `interval` seconds and oom events as they happen, until the
        container stops: each `{"type": "stats"|"oom", "id": ..., "data": ...}`."""
        from handcar.runtime import resources

        return resources.events(self.store, container_id, interval)

    # ---- what the runtime and its configs can do -------------------------------------------

    def features(self) -> Features:
        """What this runtime supports, in the OCI features document's shape."""
        from handcar.runtime.features import features

        return features()

    def default_spec(self, rootless: bool | None = None) -> Spec:
        """The default config.json, as `handcar spec` writes it (rootless: `spec --rootless`;
        by default, this runtime's own rootless setting)."""
        from handcar.spec.default import default_spec

        return default_spec(self.rootless if rootless is None else rootless)
