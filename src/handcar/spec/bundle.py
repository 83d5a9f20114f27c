"""Build a small busybox-static bundle: the rootfs the demo, the tests and the benchmark use."""

from __future__ import annotations

import os
import shutil

from handcar import jsonio
from handcar.spec.default import default_spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.spec.types import Spec

BUSYBOX = "/bin/busybox"


def make_rootfs(rootfs: str, busybox: str = BUSYBOX) -> None:
    """A rootfs of busybox-static and its applet links, /etc/passwd and /etc/group."""
    if not os.path.exists(busybox):
        raise FileNotFoundError(f"{busybox} is missing: apt-get install busybox-static")
    for sub in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        os.makedirs(os.path.join(rootfs, sub), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(rootfs, "bin", "busybox"))
    applets = os.popen(f"{busybox} --list").read().split()
    for applet in applets:
        link = os.path.join(rootfs, "bin", applet)
        if applet != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(rootfs, "etc", "group"), "w") as f:
        f.write("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")


def write_config(bundle: str, config: Spec) -> None:
    with open(os.path.join(bundle, "config.json"), "w") as f:
        f.write(jsonio.dumps(config, "\t"))


def make_bundle(bundle: str, args: list[str] | None = None) -> Spec:
    """A busybox bundle whose process runs `args` without a terminal; returns the config."""
    make_rootfs(os.path.join(bundle, "rootfs"))
    config = default_spec()
    config["process"]["terminal"] = False
    if args:
        config["process"]["args"] = args
    write_config(bundle, config)
    return config
