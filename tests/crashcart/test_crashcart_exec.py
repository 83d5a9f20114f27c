"""crashcart exec against real busybox-static runc containers: tools that need no libc in the
target, exit codes, signals, users, namespaces, and nothing left behind."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from .crashcart_fixtures import Crashcart, RuncContainer, kill_quietly, loop_devices_for


def run_in(
    crashcart: Crashcart, container: RuncContainer, *command: str, options: tuple[str, ...] = ()
) -> tuple[int, str, str]:
    result = crashcart.run("--root", str(container.root), *options, container.id, "--", *command)
    return result.returncode, result.stdout, result.stderr


def test_command_exit_code_and_nothing_left_behind(
    crashcart: Crashcart, container: RuncContainer, unchanged: Callable[[], None]
) -> None:
    code, out, err = run_in(crashcart, container, "sh", "-c", "echo inside; exit 7")
    assert (code, out) == (7, "inside\n"), err
    unchanged()


def test_target_has_no_libc_but_tools_run(
    crashcart: Crashcart, container: RuncContainer, unchanged: Callable[[], None]
) -> None:
    assert not os.path.exists(f"/proc/{container.pid}/root/lib")
    code, out, err = run_in(
        crashcart,
        container,
        "bash",
        "-c",
        "test ! -e /lib && ls /dev/crashcart/bin/strace && curl --version | head -1"
        " && ps -o pid,comm | grep -c sleep",
    )
    assert code == 0, err
    assert "curl" in out and out.strip().endswith("1")
    unchanged()


def test_strace_attaches_to_container_init(
    crashcart: Crashcart, container: RuncContainer, unchanged: Callable[[], None]
) -> None:
    code, out, err = run_in(
        crashcart, container, "sh", "-c", "timeout -s INT 1 strace -p 1 2>&1; true"
    )
    assert code == 0, err
    assert "Process 1 attached" in out
    unchanged()


def test_gdb_attaches_to_container_init_with_python(
    crashcart: Crashcart, container: RuncContainer, unchanged: Callable[[], None]
) -> None:
    code, out, err = run_in(
        crashcart,
        container,
        "gdb",
        "-p",
        "1",
        "-batch",
        "-ex",
        "info inferiors",
        "-ex",
        "python print('python', 6 * 7)",
    )
    assert code == 0, err
    assert "process 1" in out
    assert "python 42" in out
    unchanged()


def test_network_tools_see_the_container_network(
    crashcart: Crashcart, container: RuncContainer, unchanged: Callable[[], None]
) -> None:
    script = (
        "ip link set lo up; ip -o addr show lo | grep -q 127.0.0.1 || exit 3;"
        " ip -o link | wc -l;"
        " tcpdump -i lo -n -c 2 -l icmp >/tmp/cc-dump 2>/dev/null & dump=$!;"
        " sleep 0.5; ping -c 3 -W 1 127.0.0.1 >/dev/null; wait $dump; cat /tmp/cc-dump;"
        " rm -f /tmp/cc-dump"
    )
    code, out, err = run_in(crashcart, container, "bash", "-c", script)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "1"  # only lo: the container's own network namespace
    assert sum("ICMP echo" in line for line in lines) >= 2
    unchanged()


def test_session_joins_cgroup_and_pid_namespace(
    crashcart: Crashcart, container: RuncContainer
) -> None:
    with open(f"/proc/{container.pid}/cgroup") as f:
        init_cgroups = f.read()
    code, out, err = run_in(crashcart, container, "sh", "-c", "cat /proc/self/cgroup; echo $$")
    assert code == 0, err
    *cgroup_lines, own_pid = out.strip().splitlines()
    assert "\n".join(cgroup_lines) + "\n" == init_cgroups
    assert int(own_pid) < 100  # a pid in the container's namespace, not the host's


def test_no_pid_ns_keeps_host_pids(crashcart: Crashcart, container: RuncContainer) -> None:
    code, out, err = run_in(
        crashcart, container, "sh", "-c", "echo $$; test -d /proc/1", options=("--no-pid-ns",)
    )
    assert code == 0, err
    assert int(out.strip()) > 1


def test_user_option_and_keep_caps(crashcart: Crashcart, container: RuncContainer) -> None:
    show = "id -u; id -g; grep CapEff /proc/self/status"
    code, out, err = run_in(crashcart, container, "sh", "-c", show, options=("--user", "1000:1001"))
    assert code == 0, err
    uid, gid, caps = out.splitlines()
    assert (uid, gid) == ("1000", "1001")
    assert int(caps.split()[1], 16) == 0
    code, out, err = run_in(
        crashcart, container, "sh", "-c", show, options=("--user", "1000", "--keep-caps")
    )
    assert code == 0, err
    assert int(out.splitlines()[2].split()[1], 16) != 0


def test_command_not_found_is_127(crashcart: Crashcart, container: RuncContainer) -> None:
    code, _, err = run_in(crashcart, container, "no-such-tool")
    assert code == 127
    assert "no-such-tool" in err and len(err.strip().splitlines()) == 1


def test_signal_is_forwarded_and_leftovers_are_killed(
    crashcart: Crashcart, container: RuncContainer, unchanged: Callable[[], None]
) -> None:
    process = crashcart.popen(
        "--root",
        str(container.root),
        container.id,
        "--",
        "sh",
        "-c",
        "sleep 300 & echo ready; wait",
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        kill_quietly(process)
    unchanged()


def test_target_by_pid(crashcart: Crashcart, container: RuncContainer) -> None:
    result = crashcart.run(str(container.pid), "--", "hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "runc"


def test_unknown_target_is_one_line(crashcart: Crashcart) -> None:
    result = crashcart.run("no-such-container-xyz", "--", "true")
    assert result.returncode == 125
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no such container" in result.stderr


def test_readonly_root(crashcart: Crashcart, runc_container: Callable[..., RuncContainer]) -> None:
    container = runc_container(readonly_root=True)
    before = container.mountinfo()
    code, out, err = run_in(crashcart, container, "sh", "-c", "strace -V | head -1; touch /x")
    assert code != 0 and "strace -- version" in out and "Read-only" in err
    assert container.mountinfo() == before


def test_user_namespace_container(
    crashcart: Crashcart, runc_container: Callable[..., RuncContainer]
) -> None:
    container = runc_container(user_namespace=True)
    before = container.mountinfo()
    code, out, err = run_in(
        crashcart, container, "sh", "-c", "id -u; cat /proc/self/uid_map; strace -V | head -1"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "200000", "65536"]
    assert "strace" in lines[2]
    assert container.mountinfo() == before


def test_readonly_dev(crashcart: Crashcart, runc_container: Callable[..., RuncContainer]) -> None:
    container = runc_container(readonly_dev=True)
    before = container.mountinfo()
    code, out, err = run_in(crashcart, container, "sh", "-c", "strace -V | head -1; ls /dev")
    assert code == 0, err
    assert "strace" in out
    assert container.mountinfo() == before
    assert not os.path.exists(f"/proc/{container.pid}/root/dev/crashcart")


def test_squashfs_image_uses_autoclearing_loop(
    crashcart: Crashcart,
    container: RuncContainer,
    unchanged: Callable[[], None],
    tmp_path: Path,
) -> None:
    # A cache of its own, so the session's default image stays the default.
    squashfs = Crashcart(tmp_path, "")
    built = squashfs.run("build", "--quiet", "--tools", "strace", "--format", "squashfs")
    assert built.returncode == 0, built.stderr
    image = built.stdout.strip()
    assert image.endswith(".squashfs")
    code, out, err = run_in(squashfs, container, "strace", "-V", options=("--image", image))
    assert code == 0, err
    assert "strace" in out
    unchanged()
    assert loop_devices_for(image) == []
