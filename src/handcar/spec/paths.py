"""The host paths of a config, resolved as the spec says.

A bind mount's `source` and `root.path` are either absolute or relative to the bundle (the
spec; runc and crun agree). The other paths of a config are absolute by rule and checked so
by handcar.spec.validate: hooks[].path and linux.namespaces[].path on the host,
process.cwd, mounts[].destination, linux.devices[].path and the masked and read-only paths
in the container.
"""

from __future__ import annotations

import os

from handcar.errors import HandcarError


def in_bundle(bundle: str, path: str) -> str:
    """A host path from the config: an absolute one as it is, a relative one in the bundle."""
    return os.path.normpath(os.path.join(bundle, path))


def rootfs_path(bundle: str, root_path: str) -> str:
    """root.path as an absolute host path with no symlink on the way, as runc requires.

    runc resolves a relative root.path against the bundle's real path (its working
    directory), so a bundle reached through a symlink is fine; a symlink in root.path itself,
    or anywhere in an absolute one, is refused. The init opens the path again without
    following any symlink, so a swap after this check cannot redirect it either.
    """
    path = in_bundle(os.path.realpath(bundle), root_path)
    if not os.path.isdir(path):
        raise HandcarError(f"root.path: rootfs ({path}) does not exist")
    if os.path.realpath(path) != path:
        raise HandcarError("root.path: invalid rootfs: not an absolute path, or a symlink")
    return path
