"""The container's cgroup at create and delete, runc beside handcar on the same bundle.

Each test makes a cgroup before the container, as an engine does (a pod's cgroup, a frozen
or busy one), and removes what is left of it at the end, even when the test fails.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Runtime, wait_for

CGROUP_ROOT = Path("/sys/fs/cgroup")
Premade = tuple[str, list[Path]]  # a cgroup name, and the directories the test made


def hierarchy(controller: str) -> Path:
    path = CGROUP_ROOT / controller
    if not (path / "cgroup.procs").exists():
        pytest.skip(f"no v1 {controller} hierarchy on this host")
    return path


def remove(path: Path) -> None:
    """Kill, thaw and rmdir a test cgroup and its children, bottom-up."""
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir():
            remove(child)
    if (path / "freezer.state").exists():
        (path / "freezer.state").write_text("THAWED")
    for pid in (path / "cgroup.procs").read_text().split():
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass
    wait_for(lambda: _rmdir(path), what=f"rmdir {path}")


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


@pytest.fixture
def premade(hc: Runtime) -> Iterator[Premade]:
    """A cgroup name (no container id: nothing deletes it but this fixture) and the list of
    directories the test makes under it."""
    name = "hcpre-" + hc.new_id()[4:]
    made: list[Path] = []
    yield name, made
    for path in sorted(made, key=lambda p: -len(p.parts)):
        remove(path)
    for controller in CGROUP_ROOT.iterdir():
        remove(controller / name)


def config_in(hc: Runtime, cgroups_path: str, args: list[str]) -> Path:
    config = hc.config(args)
    config["linux"]["cgroupsPath"] = cgroups_path
    return hc.bundle(config)


def test_a_frozen_cgroup_is_refused(hc: Runtime, runc: Runtime, premade: Premade) -> None:
    name, made = premade
    frozen = hierarchy("freezer") / name
    frozen.mkdir()
    made.append(frozen)
    (frozen / "freezer.state").write_text("FROZEN")
    bundle = config_in(hc, "/" + name, ["true"])
    for runtime in (hc, runc):
        result = runtime("create", "--bundle", str(bundle), runtime.new_id(), timeout=30)
        assert result.rc != 0, result
        assert "container's cgroup unexpectedly frozen" in result.err, result
    assert frozen.is_dir(), "a cgroup create did not make is left as it was"
    assert not any(hc.root.iterdir()), "no state is left behind"


def test_a_busy_cgroup_gets_runcs_warning(hc: Runtime, runc: Runtime, premade: Premade) -> None:
    name, made = premade
    busy = hierarchy("pids") / name
    busy.mkdir()
    made.append(busy)
    squatter = subprocess.Popen(["sleep", "60"])
    try:
        (busy / "cgroup.procs").write_text(str(squatter.pid))
        bundle = config_in(hc, "/" + name, ["sleep", "60"])
        cid = hc.new_id()
        result = hc("create", "--bundle", str(bundle), cid)
        assert result.rc == 0, result
        assert "container's cgroup is not empty: 1 process(es) found" in result.err, result
        assert "level=warning" in result.err
        # runc 1.1.5 creates it too (it warns only from 1.1.7 on).
        other = runc.new_id()
        assert runc("create", "--bundle", str(bundle), other).rc == 0
        assert runc("delete", "--force", other).rc == 0
        assert hc("delete", "--force", cid).rc == 0
    finally:
        squatter.kill()
        squatter.wait()


def test_empty_cpuset_parents_are_filled(hc: Runtime, runc: Runtime, premade: Premade) -> None:
    """A pod cgroup made by an engine starts with no cpus and no mems: the container's
    cgroup below it could not take a process until every level above is filled."""
    name, made = premade
    pod = hierarchy("cpuset") / name
    pod.mkdir()
    made.append(pod)
    assert (pod / "cpuset.cpus").read_text().strip() == ""
    bundle = config_in(hc, f"/{name}/ctr", ["true"])
    for runtime in (runc, hc):
        result = runtime("run", "--bundle", str(bundle), runtime.new_id(), timeout=30)
        assert result.rc == 0, result
        assert (pod / "cpuset.cpus").read_text().strip(), "the parent got cpus"
        assert not (pod / "ctr").exists(), "the container's own cgroup went with it"
        remove(pod)
        pod.mkdir()
    assert pod.is_dir(), "a parent create did not make stays"


def test_delete_removes_a_premade_own_cgroup_but_not_a_premade_parent(
    hc: Runtime, runc: Runtime, premade: Premade
) -> None:
    name, made = premade
    pids = hierarchy("pids")
    for runtime in (runc, hc):
        own = pids / name / "own"
        own.mkdir(parents=True)
        made.append(pids / name)
        bundle = config_in(hc, f"/{name}/own", ["true"])
        result = runtime("run", "--bundle", str(bundle), runtime.new_id(), timeout=30)
        assert result.rc == 0, result
        assert not own.exists(), f"{runtime.binary}: the container's own cgroup is removed"
        assert (pids / name).is_dir(), f"{runtime.binary}: its premade parent stays"
