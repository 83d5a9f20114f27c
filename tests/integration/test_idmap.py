"""Id-mapped bind mounts (mounts[].uidMappings/gidMappings) on real containers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from harness import HANDCAR, Runtime, add_userns


def _owned_dir(path: Path, uid: int) -> Path:
    path.mkdir(mode=0o777)
    (path / "file").write_text("data\n")
    os.chown(path / "file", uid, uid)
    os.chown(path, uid, uid)
    return path


def test_files_show_the_mapped_owner(hc: Runtime, tmp_path: Path) -> None:
    data = _owned_dir(tmp_path / "data", 1234)
    config = hc.config(
        ["sh", "-c", "stat -c '%u %g' /data/file; touch /data/new; stat -c '%u %g' /data/new"]
    )
    config["process"]["user"] = {"uid": 5000, "gid": 5000}
    config["mounts"].append(
        {
            "destination": "/data",
            "type": "bind",
            "source": str(data),
            "options": ["rbind"],
            "uidMappings": [{"containerID": 1234, "hostID": 5000, "size": 1}],
            "gidMappings": [{"containerID": 1234, "hostID": 5000, "size": 1}],
        }
    )
    result = hc.run(config["process"]["args"], config)
    assert result.rc == 0, result
    assert result.out.split("\n")[:2] == ["5000 5000", "5000 5000"]
    st = os.stat(data / "new")  # written as 5000 through the mount: 1234 on disk
    assert (st.st_uid, st.st_gid) == (1234, 1234)
    assert os.stat(data / "file").st_uid == 1234


def test_idmapped_mount_in_a_user_namespace(hc: Runtime, open_rootfs: Path) -> None:
    top = open_rootfs.parent / "idmap-src"
    data = _owned_dir(top, 1234)
    try:
        config = hc.config(
            ["sh", "-c", "stat -c '%u' /root/file; echo hi > /root/file && echo written"]
        )
        config["root"]["path"] = str(open_rootfs)
        add_userns(config)
        config["mounts"].append(
            {
                "destination": "/root",
                "type": "bind",
                "source": str(data),
                "options": ["rbind"],
                "uidMappings": [{"containerID": 1234, "hostID": 100000, "size": 1}],
                "gidMappings": [{"containerID": 1234, "hostID": 100000, "size": 1}],
            }
        )
        result = hc.run(config["process"]["args"], config)
        assert result.rc == 0, result
        assert result.out.split() == ["0", "written"]  # host 1234 is the container's root
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=True)


def test_features_report_idmap() -> None:
    out = subprocess.run([HANDCAR, "features"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["linux"]["mountExtensions"]["idmap"]["enabled"] is True
