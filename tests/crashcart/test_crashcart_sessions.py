"""Interactive sessions with a pty, concurrent sessions sharing one mount, --mount-only and
--unmount, and the build command's own behaviour."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from harness import read_until

from .crashcart_fixtures import (
    Crashcart,
    RuncContainer,
    crashcart_env,
    host_image_mounts,
    kill_quietly,
    loop_devices_for,
)


def test_interactive_shell_on_a_pty(
    crashcart: Crashcart, container: RuncContainer, unchanged: Callable[[], None]
) -> None:
    master, slave = pty.openpty()
    process = subprocess.Popen(
        crashcart.command("--root", str(container.root), container.id),
        env={**crashcart_env(crashcart.cache), "TERM": "xterm"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        read_until(master, b"crashcart", 20)  # the prompt names the session
        os.write(master, b"echo answer=$((6*7)); tty; echo $TERM\r")
        output = read_until(master, b"xterm\r\n", 20)
        assert b"answer=42" in output
        assert b"/dev/pts/" in output  # the container's own devpts
        os.write(master, b"exit 3\r")
        assert process.wait(timeout=20) == 3
    finally:
        kill_quietly(process)
        os.close(master)
    unchanged()


def test_two_sessions_share_the_mount_and_the_last_removes_it(
    crashcart: Crashcart, container: RuncContainer, unchanged: Callable[[], None]
) -> None:
    first = crashcart.popen(
        "--root",
        str(container.root),
        container.id,
        "--",
        "sh",
        "-c",
        "echo up; read line",
        stdin=subprocess.PIPE,  # kept open: the first session waits on it
    )
    try:
        assert first.stdout is not None
        assert first.stdout.readline() == "up\n"
        second = crashcart.run(
            "--root", str(container.root), container.id, "--", "ls", "/dev/crashcart/bin/strace"
        )
        assert second.returncode == 0, second.stderr
        # The second session ended, but the first still uses the mount.
        assert any(" /dev/crashcart " in line for line in container.mountinfo())
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        kill_quietly(first)
    unchanged()


def test_mount_only_then_unmount(
    crashcart: Crashcart, container: RuncContainer, unchanged: Callable[[], None]
) -> None:
    mounted = crashcart.run("--root", str(container.root), "--mount-only", container.id)
    assert mounted.returncode == 0, mounted.stderr
    assert mounted.stdout.strip() == "/dev/crashcart"
    # The mount stays without a session: the runtime's own exec can use it.
    result = container.exec("/dev/crashcart/bin/strace", "-V")
    assert result.returncode == 0 and "strace" in result.stdout, result.stderr
    # A session in between must not take the pinned mount away.
    session = crashcart.run("--root", str(container.root), container.id, "--", "true")
    assert session.returncode == 0, session.stderr
    assert container.exec("ls", "/dev/crashcart/bin/gdb").returncode == 0
    removed = crashcart.run("--root", str(container.root), "--unmount", container.id)
    assert removed.returncode == 0, removed.stderr
    unchanged()


def test_unmount_with_nothing_mounted_is_one_line(
    crashcart: Crashcart, container: RuncContainer
) -> None:
    result = crashcart.run("--root", str(container.root), "--unmount", container.id)
    assert result.returncode == 125
    assert "nothing is mounted" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_second_build_is_cached_and_instant(crashcart: Crashcart) -> None:
    started = time.monotonic()
    result = crashcart.run("build")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == crashcart.image
    assert "cached" in result.stderr
    assert elapsed < 3  # interpreter start included; the cache check itself is milliseconds


def test_missing_tool_names_its_debian_package(crashcart: Crashcart, tmp_path: Path) -> None:
    builder = Crashcart(tmp_path, "")
    missing = next(
        (t for t in ("socat", "jq", "mtr", "ethtool", "htop", "dig") if not shutil.which(t)), None
    )
    tool = missing or "no-such-tool-xyz"
    result = builder.run("build", "--tools", f"strace,{tool}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert tool in lines[0] and "Debian package" in lines[0]


def test_from_package_and_scripts(
    crashcart: Crashcart, container: RuncContainer, tmp_path: Path
) -> None:
    builder = Crashcart(tmp_path, "")
    # iproute2 ships ELF binaries; debianutils' which is a /bin/sh script.
    built = builder.run("build", "--quiet", "--tools", "which", "--from-package", "iproute2")
    assert built.returncode == 0, built.stderr
    image = built.stdout.strip()
    script = "head -1 /dev/crashcart/bin/which; bridge -V; which ss"
    result = builder.run(
        "--image", image, "--root", str(container.root), container.id, "--", "sh", "-c", script
    )
    assert result.returncode == 0, result.stderr
    shebang, version, ss_path = result.stdout.strip().splitlines()
    assert shebang == "#!/dev/crashcart/bin/sh"
    assert "bridge" in version
    assert ss_path == "/dev/crashcart/bin/ss"


def test_help_and_usage_errors() -> None:
    env = crashcart_env(Path("/nonexistent"))
    run = Crashcart(Path("/nonexistent"), "")
    helped = subprocess.run(run.command("--help"), env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "crashcart build" in helped.stdout
    bad = subprocess.run(run.command("--bogus", "x"), env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1


def test_container_dying_mid_session_leaves_nothing(
    crashcart: Crashcart, container: RuncContainer
) -> None:
    before = host_image_mounts()
    namespace = os.stat(f"/proc/{container.pid}/ns/mnt").st_ino
    session = crashcart.popen(
        "--root", str(container.root), container.id, "--", "sh", "-c", "echo up; sleep 300"
    )
    try:
        assert session.stdout is not None
        assert session.stdout.readline() == "up\n"
        os.kill(container.pid, signal.SIGKILL)
        # Its pid namespace goes with its init, and the session with it.
        assert session.wait(timeout=20) != 0
    finally:
        kill_quietly(session)
    assert host_image_mounts() == before
    assert loop_devices_for(crashcart.image) == []
    assert not os.path.exists(f"/run/crashcart/mnt-{namespace}")
