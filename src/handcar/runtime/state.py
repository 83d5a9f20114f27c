"""The state store: one directory per container under the runtime root.

<root>/<id>/state.json  the container's record, replaced atomically (write, rename; no fsync)
<root>/<id>/exec.fifo   present from create until start; the init blocks on it
The directory itself is the per-container lock (flock), so concurrent calls on one id queue.
Status is never stored: it is derived from the live process, guarded by its start time.
"""

from __future__ import annotations

import os

from handcar import jsonio
from handcar.errors import ContainerNotFound, HandcarError
from handcar.procfs import process_is_alive

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Required, TypedDict

    from handcar.spec.types import Spec, Status

    class ContainerRecord(TypedDict, total=False):
        """state.json: what create records about a container (runc's state.json differs)."""

        id: Required[str]
        pid: int  # the init's host pid; 0 until the bootstrap reports it
        init_start_time: str  # its start time in /proc/PID/stat: never a recycled pid
        bundle: str
        rootfs: str
        created: str  # RFC 3339
        annotations: dict[str, str]
        config: Spec  # the validated config.json; `update` rewrites linux.resources
        rootless: bool
        cgroup_paths: dict[str, str]  # CgroupManager.paths(), saved before the first mkdir
        cgroup_created: list[str]  # CgroupManager.created(): what destroy may remove
        creating: bool  # set until create commits: `state` says "creating", never "stopped"
        damaged: str  # set on load only: why state.json was unusable (read from recovery.json)


STATE_FILE = "state.json"
# A second copy of the record, written when create commits: a running container whose
# state.json was lost or damaged is still found, reported and killed by `delete --force`.
RECOVERY_FILE = "recovery.json"
EXEC_FIFO = "exec.fifo"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def validate_id(container_id: str) -> None:
    if (
        not container_id
        or container_id in (".", "..")
        or not all(c in _ID_CHARS for c in container_id)
    ):
        raise HandcarError("invalid container ID format")


def _lock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)


class ContainerState:
    """The stored record of one container, plus the locked directory that holds it."""

    __slots__ = ("dir", "data", "_lock_fd")

    def __init__(self, directory: str, data: ContainerRecord) -> None:
        self.dir = directory
        self.data = data
        self._lock_fd = -1

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def pid(self) -> int:
        return int(self.data.get("pid", 0))

    @property
    def bundle(self) -> str:
        return str(self.data.get("bundle", ""))

    @property
    def config(self) -> Spec:
        """The validated config.json saved at create ({} in a record saved before it)."""
        return self.data.get("config") or {}

    @property
    def fifo_path(self) -> str:
        return self.dir + "/" + EXEC_FIFO

    def is_alive(self) -> bool:
        return process_is_alive(self.pid, str(self.data.get("init_start_time", "")))

    def status(self) -> Status:
        """creating, created, running, paused or stopped, from the process and exec.fifo."""
        if self.data.get("creating") and self._locked_by_another():
            return "creating"  # a create that died leaves the flag, but not its lock
        if not self.is_alive():
            return "stopped"
        if os.path.exists(self.fifo_path):
            return "created"
        if self._is_frozen():
            return "paused"
        return "running"

    def _locked_by_another(self) -> bool:
        if self._lock_fd >= 0:
            return False  # we hold the lock: whoever was creating has let go of it
        import fcntl

        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _is_frozen(self) -> bool:
        paths: dict[str, str] = self.data.get("cgroup_paths") or {}
        if not paths:
            return False
        from handcar.cgroups.manager import paths_frozen

        return paths_frozen(paths)

    def save(self, name: str = STATE_FILE) -> None:
        """Replace state.json atomically: a crash of handcar leaves the old or the new record,
        never half. No fsync: the root lives on tmpfs (/run) and a reboot ends every container
        anyway; runc does not sync either. A full disk is one clean line, naming the file."""
        tmp = self.dir + "/" + name + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                data = jsonio.dumps(self.data).encode()
                if os.write(fd, data) != len(data):
                    raise OSError(28, os.strerror(28))  # a short write: the disk is full
            finally:
                os.close(fd)
            os.rename(tmp, self.dir + "/" + name)
        except OSError as err:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            reason = (err.strerror or str(err)).lower()
            raise HandcarError(f"save state {self.dir}/{name}: {reason}") from None

    def commit(self) -> None:
        """The end of create: no longer creating, and the recovery copy written."""
        self.data.pop("creating", None)
        self.save()
        self.save(RECOVERY_FILE)

    def lock(self) -> None:
        if self._lock_fd < 0:
            self._lock_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            _lock(self._lock_fd)

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def remove(self) -> None:
        """Delete the state directory; the last step of delete."""
        for name in os.listdir(self.dir):
            os.unlink(self.dir + "/" + name)
        os.rmdir(self.dir)
        self.unlock()


class StateStore:
    """The runtime root (--root): where every container's state directory lives."""

    __slots__ = ("root",)

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, container_id: str) -> str:
        validate_id(container_id)
        return self.root + "/" + container_id

    def new(self, container_id: str, data: ContainerRecord) -> ContainerState:
        """Claim the id: the mkdir is the atomic test, so two creates cannot both win."""
        directory = self.path(container_id)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            os.mkdir(directory, 0o711)
        except FileExistsError:
            raise HandcarError(f"container with id exists: {container_id}") from None
        except OSError as err:
            raise HandcarError(f"mkdir {directory}: {(err.strerror or '').lower()}") from None
        state = ContainerState(directory, data)
        state.lock()
        try:
            state.save()
        except HandcarError:
            state.remove()  # no phantom entry for a create that never began
            raise
        return state

    def load(self, container_id: str, lock: bool = True) -> ContainerState:
        directory = self.path(container_id)
        state = ContainerState(directory, {"id": container_id})
        try:
            if lock:
                state.lock()
            with open(directory + "/" + STATE_FILE, "rb") as f:
                raw = f.read()
        except (FileNotFoundError, NotADirectoryError):
            if os.path.isdir(directory):
                # Lost, or a create killed before its first save: only delete --force fits.
                return _recover(state, f"state of {container_id} is missing")
            state.unlock()
            raise ContainerNotFound() from None
        try:
            data = jsonio.loads(raw, f"state of {container_id}")
            if not isinstance(data, dict) or "id" not in data:
                raise HandcarError(f"state of {container_id} is corrupt")
        except HandcarError as err:
            return _recover(state, str(err))
        record: Any = data  # written by save(): a ContainerRecord
        state.data = record
        return state

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.isdir(self.root + "/" + n))


def _recover(state: ContainerState, why: str) -> ContainerState:
    """state.json is gone or damaged: use the recovery copy that create committed, with a
    warning, so a running container is still reported as running and can be killed."""
    try:
        with open(state.dir + "/" + RECOVERY_FILE, "rb") as f:
            data = jsonio.loads(f.read(), f"recovery state of {state.id}")
    except (OSError, HandcarError):
        data = None
    if not isinstance(data, dict) or data.get("id") != state.id:
        if why.endswith("is missing"):
            # Never committed: a create still at its first step (it holds the lock), or one
            # killed there, whose bare record only delete --force removes.
            state.data["creating"] = True
            return state
        state.unlock()
        raise HandcarError(why)
    from handcar import log

    log.warning(f"{why}; using its recovery record")
    record: Any = data
    state.data = record
    state.data["damaged"] = why
    return state
