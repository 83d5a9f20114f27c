"""What the runtime decides before it forks the bootstrap, for the init to carry out.

Kept apart from handcar.init.bootstrap so that the runtime loads only this small module
before the fork.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from handcar.spec.types import Spec
    from handcar.sync import Channel


class InitPlan:
    """Everything the children need, decided by the runtime before it forks."""

    __slots__ = (
        "container_id",
        "config",
        "rootfs",
        "bundle",
        "fifo_path",
        "fifo_fd",
        "state_dir_fd",
        "namespaces",
        "boot_channel",
        "init_channel",
        "console_socket",
        "preserve_fds",
        "no_pivot",
        "no_new_keyring",
        "seccomp",
        "executable",
        "idmap_fds",
    )

    def __init__(self, container_id: str, config: Spec, bundle: str, rootfs: str) -> None:
        self.container_id = container_id
        self.config = config
        self.bundle = bundle
        self.rootfs = rootfs
        self.fifo_path = ""
        self.fifo_fd = -1  # opened by the runtime: a user-namespaced init may not reach the path
        # exec.fifo is reopened for writing relative to this directory, not through
        # /proc/self/fd: once the init runs as a non-root user while non-dumpable, its own
        # /proc/self/fd belongs to root and is closed to it.
        self.state_dir_fd = -1
        self.namespaces: dict[str, str] = {}
        self.boot_channel: Channel | None = None
        self.init_channel: Channel | None = None
        self.console_socket = -1
        self.preserve_fds = 0
        self.no_pivot = False
        self.no_new_keyring = False
        self.seccomp: Any = None
        self.executable = ""
        self.idmap_fds: dict[int, int] = {}  # mounts index -> detached id-mapped tree
