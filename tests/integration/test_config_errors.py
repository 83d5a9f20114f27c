"""Bad input gets one clear line naming the field, and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import Runtime


def _create_with(hc: Runtime, text: str) -> Any:
    bundle = hc.tmp / "bad-bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_text(text)
    result = hc("create", "--bundle", str(bundle), hc.new_id())
    assert result.rc == 1
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert not hc.root.exists() or list(hc.root.iterdir()) == []
    return result


def test_malformed_json_names_the_position(hc: Runtime) -> None:
    result = _create_with(hc, '{"ociVersion": "1.0.0",\n "process": {,}}')
    assert result.msg.startswith("handcar create failed: config.json: invalid JSON at line 2")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda c: c["process"].update(args=[]),
            "config.json: process.args: must be a non-empty array",
        ),
        (
            lambda c: c["process"].update(args="sh"),
            "config.json: process.args: must be a non-empty array",
        ),
        (
            lambda c: c["process"].update(args=["sh", 3]),
            "config.json: process.args[1]: must be a string",
        ),
        (
            lambda c: c["process"].update(cwd="tmp"),
            "config.json: process.cwd: must be an absolute path, not 'tmp'",
        ),
        (
            lambda c: c["process"].update(env=["NOEQUALS"]),
            "config.json: process.env[0]: must be KEY=VALUE, not 'NOEQUALS'",
        ),
        (
            lambda c: c["process"]["user"].update(uid=-1),
            "config.json: process.user.uid: must be at least 0, not -1",
        ),
        (
            lambda c: c["process"]["rlimits"].append(
                {"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}
            ),
            "config.json: process.rlimits[1].type: unknown rlimit 'RLIMIT_BOGUS'",
        ),
        (lambda c: c.pop("root"), "config.json: root: is required"),
        (
            lambda c: c["mounts"].append({"destination": "relative"}),
            "config.json: mounts[7].destination: must be an absolute path, not 'relative'",
        ),
        (
            lambda c: c["linux"]["namespaces"].append({"type": "pid"}),
            "config.json: linux.namespaces[5].type: duplicate namespace 'pid'",
        ),
        (
            lambda c: c["linux"]["namespaces"].append({"type": "nope"}),
            "config.json: linux.namespaces[5].type: unknown value 'nope'",
        ),
        (
            lambda c: c.update(hooks={"prestart": [{"path": "rel"}]}),
            "config.json: hooks.prestart[0].path: must be an absolute path, not 'rel'",
        ),
        (
            lambda c: c["linux"]["resources"].update(memory={"limit": "lots"}),
            "config.json: linux.resources.memory.limit",
        ),
        (
            lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_NOPE"}),
            "linux.seccomp.defaultAction",
        ),
    ],
)
def test_invalid_fields_are_named(hc: Runtime, mutate: Any, message: str) -> None:
    import json

    config = hc.config(["true"])
    mutate(config)
    result = _create_with(hc, json.dumps(config))
    assert message in result.msg, result.msg


def test_missing_config_and_rootfs(hc: Runtime, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = hc("create", "--bundle", str(empty), hc.new_id())
    assert result.rc == 1 and "config.json: no such file in bundle" in result.msg
    config = hc.config(["true"])
    config["root"]["path"] = "/no/such/rootfs"
    result = hc("create", "--bundle", str(hc.bundle(config)), hc.new_id())
    assert result.rc == 1 and "root.path: rootfs (/no/such/rootfs) does not exist" in result.msg
    assert not hc.root.exists() or list(hc.root.iterdir()) == []


def test_existing_id_is_not_harmed_by_a_second_create(hc: Runtime) -> None:
    cid = hc.create(args=["sleep", "300"])
    pid = hc.state(cid)["pid"]
    result = hc("create", "--bundle", str(hc.bundle(args=["true"])), cid)
    assert result.rc == 1 and f"container with id exists: {cid}" in result.msg
    state = hc.state(cid)
    assert state["pid"] == pid and state["status"] == "created"


def test_failed_setup_leaves_no_cgroup_state_or_process(hc: Runtime) -> None:
    config = hc.config(["true"])
    config["mounts"].append({"destination": "/x", "type": "nosuchfs", "source": "x"})
    bundle = hc.bundle(config)
    cid = hc.new_id()
    result = hc("create", "--bundle", str(bundle), cid)
    assert result.rc == 1
    assert list(hc.root.iterdir()) == []
    from harness import leaked_cgroups

    assert leaked_cgroups([cid]) == []
