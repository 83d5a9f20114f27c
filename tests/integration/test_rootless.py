"""Rootless: handcar run by a real unprivileged user made for the test."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from handcar.spec.bundle import make_rootfs
from harness import HANDCAR

USER = "hcrootless"


@pytest.fixture(scope="module")
def user() -> Iterator[tuple[int, Path]]:
    """A throwaway user with its own runtime dir and a bundle it owns."""
    if not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("needs useradd and setpriv")
    subprocess.run(["userdel", USER], capture_output=True)
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", USER], check=True)
    uid = pwd.getpwnam(USER).pw_uid
    top = Path(tempfile.mkdtemp(prefix="handcar-rootless-", dir="/tmp"))
    runtime_dir = Path(f"/tmp/handcar-xdg-{uid}")
    try:
        top.chmod(0o755)
        make_rootfs(str(top / "rootfs"))
        runtime_dir.mkdir(mode=0o700)
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(top), str(runtime_dir)], check=True)
        yield uid, top
    finally:
        subprocess.run(["userdel", USER], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(runtime_dir, ignore_errors=True)


def as_user(uid: int, bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "XDG_RUNTIME_DIR": f"/tmp/handcar-xdg-{uid}",
        "HOME": str(bundle),
    }
    # Files, not pipes: a created container's init inherits stdio and would hold a pipe open.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--init-groups", HANDCAR, *args],
            cwd=bundle,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
            timeout=60,
        )
        out.seek(0)
        err.seek(0)
        proc.stdout, proc.stderr = out.read(), err.read()
    return proc


def _spec(uid: int, top: Path, args: list[str]) -> Path:
    bundle = top / f"bundle-{len(list(top.iterdir()))}"
    bundle.mkdir()
    os.chown(bundle, uid, uid)
    result = as_user(uid, bundle, "spec", "--rootless")
    assert result.returncode == 0, result
    config = json.loads((bundle / "config.json").read_text())
    config["root"]["path"] = "../rootfs"  # relative to the bundle; a symlink is refused, as by runc
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def test_rootless_run_as_an_unprivileged_user(user: tuple[int, Path]) -> None:
    uid, top = user
    bundle = _spec(
        uid,
        top,
        ["sh", "-c", "id -u; cat /proc/self/uid_map; echo $$; touch /tmp/f && stat -c %u /tmp/f"],
    )
    config = json.loads((bundle / "config.json").read_text())
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": uid, "size": 1}]
    result = as_user(uid, bundle, "run", "rl-run")
    assert result.returncode == 0, result
    lines = result.stdout.split()
    assert lines[0] == "0"
    assert lines[1:4] == ["0", str(uid), "1"]
    assert lines[4] == "1"
    assert lines[5] == "0"
    state_root = Path(f"/tmp/handcar-xdg-{uid}/handcar")
    assert state_root.is_dir()  # the state lives under $XDG_RUNTIME_DIR/handcar
    assert list(state_root.iterdir()) == []  # and the foreground run cleaned up
    assert (top / "rootfs" / "tmp" / "f").stat().st_uid == uid


def test_rootless_create_start_state_delete(user: tuple[int, Path]) -> None:
    uid, top = user
    bundle = _spec(uid, top, ["sleep", "300"])
    assert as_user(uid, bundle, "create", "rl-life").returncode == 0
    try:
        state = json.loads(as_user(uid, bundle, "state", "rl-life").stdout)
        assert state["status"] == "created"
        assert pwd.getpwuid(os.stat(f"/proc/{state['pid']}").st_uid).pw_name == USER
        assert as_user(uid, bundle, "start", "rl-life").returncode == 0
        listed = as_user(uid, bundle, "list", "-q")
        assert listed.stdout.split() == ["rl-life"]
        assert as_user(uid, bundle, "kill", "rl-life", "KILL").returncode == 0
    finally:
        result = as_user(uid, bundle, "delete", "--force", "rl-life")
    assert result.returncode == 0, result
    assert as_user(uid, bundle, "list", "-q").stdout.split() == []
