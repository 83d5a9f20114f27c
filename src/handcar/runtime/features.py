"""`handcar features`: what this runtime implements, in runc 1.2's JSON shape.

Every boolean is truthful for handcar: a feature handcar would reject (an AppArmor profile on a
host without AppArmor, id-mapped mounts) is reported as false rather than left out, so callers
that look for a key find the real answer.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.spec.types import Features

OCI_VERSION_MIN = "1.0.0"


def _commit() -> str:
    try:
        with open(os.path.dirname(__file__) + "/COMMIT", "rb") as f:
            return f.read().decode().strip() or "unknown"
    except OSError:
        return "unknown"


def idmap_mounts_implemented() -> bool:
    """Id-mapped mounts (mounts[].uidMappings) need MOUNT_ATTR_IDMAP in the rootfs code."""
    from handcar.init import rootfs

    return hasattr(rootfs, "idmap_mount")


def features() -> Features:
    """`handcar features`' document (runtime-spec features.md, runc 1.2's field order)."""
    from handcar import OCI_VERSION, __version__
    from handcar.runtime.checkpoint import criu_usable
    from handcar.seccomp import compile as seccomp
    from handcar.spec.caps import CAPABILITIES
    from handcar.spec.mount_options import MOUNT_OPTIONS
    from handcar.spec.validate import HOOK_KINDS, NAMESPACE_TYPES

    seccomp_section = seccomp.features_section()
    annotations = {
        "io.github.seccomp.libseccomp.version": seccomp.libseccomp_version(),
        "org.opencontainers.runc.commit": _commit(),
        "org.opencontainers.runc.version": __version__,
    }
    if criu_usable():
        annotations["org.opencontainers.runc.checkpoint.enabled"] = "true"
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION,
        "hooks": list(HOOK_KINDS),
        "mountOptions": list(MOUNT_OPTIONS),
        "linux": {
            "namespaces": sorted(NAMESPACE_TYPES),
            "capabilities": sorted(CAPABILITIES, key=CAPABILITIES.__getitem__),
            "cgroup": {
                "v1": True,
                "v2": True,
                # --systemd-cgroup maps slice:prefix:name onto cgroupfs paths; there is no
                # systemd D-Bus driver.
                "systemd": False,
                "systemdUser": False,
            },
            "seccomp": seccomp_section,
            "apparmor": {"enabled": os.path.exists("/sys/kernel/security/apparmor")},
            "selinux": {"enabled": os.path.exists("/sys/fs/selinux/enforce")},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": idmap_mounts_implemented()}},
        },
        "annotations": annotations,
    }
