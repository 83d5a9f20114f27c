"""`handcar features` and the truthful `checkpoint`/`restore`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from handcar.runtime.features import idmap_mounts_implemented
from handcar.spec import mount_options
from handcar.spec.caps import CAPABILITIES
from harness import HANDCAR


def _handcar(
    *args: str, root: str = "/run/handcar-features-test"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HANDCAR, "--root", root, *args], capture_output=True, text=True, timeout=60
    )


def test_features_json_like_runc_1_2() -> None:
    result = _handcar("features")
    assert result.returncode == 0, result.stderr
    features = json.loads(result.stdout)
    assert features["ociVersionMin"] == "1.0.0"
    assert features["ociVersionMax"].startswith("1.")
    assert features["hooks"] == [
        "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"
    ]  # fmt: skip
    assert features["mountOptions"] == mount_options.MOUNT_OPTIONS
    linux = features["linux"]
    assert set(linux["namespaces"]) >= {"cgroup", "ipc", "mount", "network", "pid", "user", "uts"}
    assert linux["capabilities"][0] == "CAP_CHOWN" and set(linux["capabilities"]) == set(
        CAPABILITIES
    )
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False}
    seccomp = linux["seccomp"]
    assert seccomp["enabled"] is True
    assert "SCMP_ACT_ERRNO" in seccomp["actions"] and "SCMP_CMP_EQ" in seccomp["operators"]
    assert "SCMP_ARCH_X86_64" in seccomp["archs"]
    assert set(seccomp["supportedFlags"]) <= set(seccomp["knownFlags"])
    assert linux["apparmor"] == {"enabled": Path("/sys/kernel/security/apparmor").exists()}
    assert linux["intelRdt"] == {"enabled": False}
    assert linux["mountExtensions"]["idmap"]["enabled"] is idmap_mounts_implemented()
    annotations = features["annotations"]
    assert annotations["io.github.seccomp.libseccomp.version"].count(".") == 2
    assert set(annotations) <= {
        "io.github.seccomp.libseccomp.version",
        "org.opencontainers.runc.checkpoint.enabled",
        "org.opencontainers.runc.commit",
        "org.opencontainers.runc.version",
    }


def test_checkpoint_is_truthful_about_criu() -> None:
    from handcar.runtime.checkpoint import criu_check

    usable, reason = criu_check()
    result = _handcar("checkpoint", "--image-path", "/tmp/x", "--leave-running", "nosuch")
    assert result.returncode == 1
    assert "container does not exist" in result.stderr
    help_text = _handcar("checkpoint", "--help").stdout
    assert "--image-path" in help_text and "--tcp-established" in help_text
    restore = _handcar("restore", "--image-path", "/tmp/x", "--bundle", "/tmp", "nosuch")
    assert restore.returncode == 1
    if not usable:
        assert "unavailable" in help_text
        assert reason in restore.stderr.replace('\\"', '"')
        assert "checkpoint/restore is not available" in restore.stderr
    features = json.loads(_handcar("features").stdout)
    assert ("org.opencontainers.runc.checkpoint.enabled" in features["annotations"]) is usable
