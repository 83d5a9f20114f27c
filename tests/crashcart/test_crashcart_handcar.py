"""crashcart against handcar's own containers, found by id in handcar's state root."""

from __future__ import annotations

import os

from harness import Runtime

from .crashcart_fixtures import Crashcart, host_image_mounts, mount_table


def test_crashcart_in_a_handcar_container(crashcart: Crashcart, hc: Runtime) -> None:
    cid = hc.create(args=["sleep", "300"])
    assert hc("start", cid).rc == 0
    pid = hc.state(cid)["pid"]
    container_mounts = mount_table(pid)
    host_mounts = host_image_mounts()
    result = crashcart.run(
        "--root",
        str(hc.root),
        cid,
        "--",
        "sh",
        "-c",
        "test ! -e /lib && strace -V | head -1 && echo links=$(ip -o link | wc -l)",
    )
    assert result.returncode == 0, result.stderr
    assert "strace -- version" in result.stdout
    assert "links=1" in result.stdout  # only lo: the container's own network namespace
    assert mount_table(pid) == container_mounts
    assert host_image_mounts() == host_mounts
    assert os.path.exists(f"/proc/{pid}")  # the container's init is untouched
