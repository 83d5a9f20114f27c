"""linux.sysctl names and the namespace each needs, judged without a container (the real
containers are in tests/integration/security/test_paths.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from handcar.errors import ConfigError
from handcar.spec.sysctl import dotted, proc_path
from handcar.spec.validate import validate


@pytest.mark.parametrize(
    ("key", "name", "path"),
    [
        ("net.ipv4.ip_forward", "net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
        ("net/ipv4/ip_forward", "net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
        (
            "net/ipv4/conf/eth0.100/rp_filter",
            "net.ipv4.conf.eth0/100.rp_filter",
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
        ),
        ("net/../kernel/domainname", "net.//.kernel.domainname", None),
        ("net.//.kernel.pid_max", "net.//.kernel.pid_max", None),
        ("net..ipv4", "net..ipv4", None),
        ("net.", "net.", None),
    ],
)
def test_names_and_files(key: str, name: str, path: str | None) -> None:
    assert dotted(key) == name
    assert proc_path(key) == path


def config_with(sysctl: dict[str, str], namespaces: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "root": {"path": "rootfs"},
        "process": {"args": ["true"]},
        "linux": {"namespaces": namespaces, "sysctl": sysctl},
    }


ALL = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]


def without(kind: str) -> list[dict[str, Any]]:
    return [n for n in ALL if n["type"] != kind]


def joined(kind: str, path: str) -> list[dict[str, Any]]:
    return [*without(kind), {"type": kind, "path": path}]


OWN = f"/proc/{os.getpid()}/ns/"


@pytest.mark.parametrize(
    ("key", "namespaces", "problem"),
    [
        (
            "kernel.msgmax",
            without("ipc"),
            'sysctl "kernel.msgmax" is not allowed in the hosts ipc namespace',
        ),
        (
            "fs.mqueue.msg_max",
            without("ipc"),
            'sysctl "fs.mqueue.msg_max" is not allowed in the hosts ipc namespace',
        ),
        (
            "fs.mqueue.msg_max",
            joined("ipc", OWN + "ipc"),
            'sysctl "fs.mqueue.msg_max" is not allowed in the hosts ipc namespace',
        ),
        (
            "net.core.somaxconn",
            without("network"),
            'sysctl "net.core.somaxconn" not allowed in host network namespace',
        ),
        (
            "net/core/somaxconn",
            joined("network", OWN + "net"),
            'sysctl "net.core.somaxconn" not allowed in host network namespace',
        ),
        (
            "kernel.domainname",
            without("uts"),
            'sysctl "kernel.domainname" is not in a separate kernel namespace',
        ),
        (
            "kernel.domainname",
            joined("uts", OWN + "uts"),
            'sysctl "kernel.domainname" is not allowed in the hosts uts namespace',
        ),
        (
            "kernel.hostname",
            ALL,
            'sysctl "kernel.hostname" is not allowed as it conflicts with the OCI "hostname" field',
        ),
        ("kernel.msgfoo", ALL, 'sysctl "kernel.msgfoo" is not in a separate kernel namespace'),
        ("vm.swappiness", ALL, 'sysctl "vm.swappiness" is not in a separate kernel namespace'),
        ("net/..//kernel/domainname", ALL, "invalid sysctl name 'net.//..kernel.domainname'"),
    ],
)
def test_refused(key: str, namespaces: list[dict[str, Any]], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(config_with({key: "1"}, namespaces))
    assert str(caught.value) == f"config.json: linux.sysctl: {problem}"


@pytest.mark.parametrize(
    ("key", "namespaces"),
    [
        ("kernel.shm_rmid_forced", ALL),
        ("fs.mqueue.queues_max", ALL),
        ("net.ipv4.ping_group_range", ALL),
        ("kernel.domainname", ALL),
    ],
)
def test_allowed(key: str, namespaces: list[dict[str, Any]]) -> None:
    validate(config_with({key: "1"}, namespaces))
