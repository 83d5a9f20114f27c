"""Helpers for the isolation tests: a rootfs any uid can reach, user-namespace configs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handcar.spec.bundle import make_rootfs


@pytest.fixture(scope="module")
def open_rootfs() -> Iterator[Path]:
    """A busybox rootfs under a 0755 directory: pytest's tmp is 0700, closed to mapped uids."""
    top = Path(tempfile.mkdtemp(prefix="handcar-sec-", dir="/tmp"))
    try:
        top.chmod(0o755)
        make_rootfs(str(top / "rootfs"))
        yield top / "rootfs"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def add_userns(config: dict[str, Any], host_id: int = 100000, size: int = 65536) -> None:
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": host_id, "size": size}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": host_id, "size": size}]


def all_caps(config: dict[str, Any]) -> None:
    from handcar.spec.caps import CAPABILITIES

    every = sorted(CAPABILITIES)
    config["process"]["capabilities"] = {k: every for k in ("bounding", "effective", "permitted")}
