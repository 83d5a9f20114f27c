"""The mounts[].options vocabulary: each option's mount flags, propagation, or filesystem data."""

from __future__ import annotations

from handcar import linux

# option -> (flags to set, flags to clear)
FLAG_OPTIONS: dict[str, tuple[int, int]] = {
    "defaults": (0, 0),
    "ro": (linux.MS_RDONLY, 0),
    "rw": (0, linux.MS_RDONLY),
    "suid": (0, linux.MS_NOSUID),
    "nosuid": (linux.MS_NOSUID, 0),
    "dev": (0, linux.MS_NODEV),
    "nodev": (linux.MS_NODEV, 0),
    "exec": (0, linux.MS_NOEXEC),
    "noexec": (linux.MS_NOEXEC, 0),
    "sync": (linux.MS_SYNCHRONOUS, 0),
    "async": (0, linux.MS_SYNCHRONOUS),
    "dirsync": (linux.MS_DIRSYNC, 0),
    "remount": (linux.MS_REMOUNT, 0),
    "mand": (linux.MS_MANDLOCK, 0),
    "nomand": (0, linux.MS_MANDLOCK),
    "atime": (0, linux.MS_NOATIME),
    "noatime": (linux.MS_NOATIME, 0),
    "diratime": (0, linux.MS_NODIRATIME),
    "nodiratime": (linux.MS_NODIRATIME, 0),
    "bind": (linux.MS_BIND, 0),
    "rbind": (linux.MS_BIND | linux.MS_REC, 0),
    "relatime": (linux.MS_RELATIME, 0),
    "norelatime": (0, linux.MS_RELATIME),
    "strictatime": (linux.MS_STRICTATIME, 0),
    "nostrictatime": (0, linux.MS_STRICTATIME),
    "lazytime": (linux.MS_LAZYTIME, 0),
    "nolazytime": (0, linux.MS_LAZYTIME),
    "symfollow": (0, linux.MS_NOSYMFOLLOW),
    "nosymfollow": (linux.MS_NOSYMFOLLOW, 0),
    "silent": (linux.MS_SILENT, 0),
    "loud": (0, linux.MS_SILENT),
}
PROPAGATION_OPTIONS: dict[str, int] = {
    "private": linux.MS_PRIVATE,
    "rprivate": linux.MS_PRIVATE | linux.MS_REC,
    "shared": linux.MS_SHARED,
    "rshared": linux.MS_SHARED | linux.MS_REC,
    "slave": linux.MS_SLAVE,
    "rslave": linux.MS_SLAVE | linux.MS_REC,
    "unbindable": linux.MS_UNBINDABLE,
    "runbindable": linux.MS_UNBINDABLE | linux.MS_REC,
}
# Options other runtimes accept that change nothing in the kernel mount call.
IGNORED_OPTIONS = frozenset(("tmpcopyup", "notmpcopyup", "copy-symlink", "nocopy"))
MOUNT_OPTIONS = sorted([*FLAG_OPTIONS, *PROPAGATION_OPTIONS, *IGNORED_OPTIONS])


class MountOptions:
    """A mounts[].options list split into flags, propagation and filesystem data."""

    __slots__ = ("flags", "propagation", "data")

    def __init__(self, options: list[str]) -> None:
        self.flags = 0
        self.propagation: list[int] = []
        data: list[str] = []
        for option in options:
            if option in FLAG_OPTIONS:
                set_flags, clear_flags = FLAG_OPTIONS[option]
                self.flags = (self.flags | set_flags) & ~clear_flags
            elif option in PROPAGATION_OPTIONS:
                self.propagation.append(PROPAGATION_OPTIONS[option])
            elif option not in IGNORED_OPTIONS:
                data.append(option)
        self.data = ",".join(data)

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & linux.MS_BIND)
