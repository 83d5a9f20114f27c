"""Watching a container's cgroup for OOM events, for `handcar events`.

    watcher = manager.oom_events()
    while not watcher.gone:
        if watcher.wait(5.0):          # seconds; returns how many OOM events arrived
            emit {"type": "oom", ...}
        emit stats ...
    watcher.close()

v1: an eventfd registered on memory.oom_control through cgroup.event_control; the kernel
signals it on each OOM (and once more when the cgroup is removed).
v2: memory.events, whose `oom` and `oom_kill` counters the kernel bumps and then wakes
poll(2) with POLLPRI.
"""

from __future__ import annotations

import os
import select

from handcar.cgroups.fs import write_file


class OomWatcher:
    """Something with a fileno() to poll and a wait(timeout) that counts new OOM events."""

    __slots__ = ("path", "gone", "_fd")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.gone = False  # True once the cgroup has been removed
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def wait(self, timeout: float | None = None) -> int:
        """Block up to `timeout` seconds (None: forever); return the number of OOM events."""
        poller = select.poll()
        poller.register(self._fd, self._events())
        ready = poller.poll(None if timeout is None else int(timeout * 1000))
        if not ready:
            if not os.path.isdir(self.path):
                self.gone = True
            return 0
        return self._consume()

    def _events(self) -> int:
        return select.POLLIN

    def _consume(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OomWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class V1OomWatcher(OomWatcher):
    __slots__ = ("_control",)

    def __init__(self, memory_dir: str) -> None:
        efd = os.eventfd(0, os.EFD_CLOEXEC)
        try:
            control = os.open(memory_dir + "/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(efd)
            raise
        self._control = control
        super().__init__(memory_dir, efd)
        try:
            write_file(memory_dir, "cgroup.event_control", f"{efd} {control}", "events", "oom")
        except BaseException:
            self.close()
            raise

    def _consume(self) -> int:
        count = os.eventfd_read(self._fd)
        if not os.path.exists(self.path + "/memory.oom_control"):
            # The kernel also signals the eventfd when the cgroup goes away.
            self.gone = True
            return max(count - 1, 0)
        return count

    def close(self) -> None:
        if self._control >= 0:
            os.close(self._control)
            self._control = -1
        super().close()


class V2OomWatcher(OomWatcher):
    __slots__ = ("_last",)

    def __init__(self, cgroup_dir: str) -> None:
        fd = os.open(cgroup_dir + "/memory.events", os.O_RDONLY | os.O_CLOEXEC)
        super().__init__(cgroup_dir, fd)
        self._last = self._counters()

    def _events(self) -> int:
        return select.POLLPRI | select.POLLERR

    def _counters(self) -> tuple[int, int]:
        # Read through the polled fd: kernfs keeps reporting POLLPRI on it until it is read
        # again (a read through another fd would leave the poll spinning).
        try:
            text = os.pread(self._fd, 4096, 0).decode()
        except OSError:  # ENODEV once the cgroup is removed
            text = ""
        values: dict[str, int] = {}
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                values[key] = int(value)
        if not values:
            self.gone = True
        return values.get("oom", 0), values.get("oom_kill", 0)

    def _consume(self) -> int:
        oom, kills = self._counters()
        last_oom, last_kills = self._last
        self._last = (oom, kills)
        if self.gone:
            # Nothing left to watch: stop the caller's loop instead of spinning on POLLERR.
            return 0
        return max(oom - last_oom, kills - last_kills)
