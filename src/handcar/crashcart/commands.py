"""The crashcart commands, once the command line is parsed: mount, run, and unmount."""

from __future__ import annotations

import os
import sys

from handcar.crashcart.errors import CrashcartError
from handcar.crashcart.imagefile import DEFAULT_PREFIX, ImageInfo, find_image, read_image_info
from handcar.crashcart.inject import (
    Container,
    SessionRegistry,
    ensure_mounted,
    mounts_at,
    open_image_mount,
    remove_mount,
)
from handcar.crashcart.session import SessionOptions, run_session
from handcar.crashcart.targets import resolve_target


class ExecRequest:
    """What `crashcart [exec]` was asked to do, filled in by the command-line parser."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.command: list[str] = []
        self.image: str | None = None
        self.state_roots: list[str] = []
        self.user: tuple[int, int] | None = None
        self.keep_caps = False
        self.pid_namespace = True
        self.tty: bool | None = None
        self.mount_only = False
        self.unmount = False


def run_exec(request: ExecRequest) -> int:
    if request.pid_namespace and not (request.mount_only or request.unmount):
        _require_sealed_exe()
    target = resolve_target(request.target, request.state_roots)
    if request.unmount:
        return unmount(target.pid, request)
    image = find_or_build_image(request.image)
    container = Container.open(target.pid)
    registry = SessionRegistry(container.mnt_ns_inode())
    try:
        with SessionRegistry.global_lock():
            shared = ensure_mounted(container, image.path, image.fs_format, image.prefix)
            if request.mount_only:
                if not shared:
                    raise CrashcartError(
                        f"the container's {os.path.dirname(image.prefix)} is read-only and has"
                        f" no {os.path.basename(image.prefix)}: there is no place to leave the"
                        " toolbox mounted (a session without --mount-only uses a private view)"
                    )
                state = registry.read_state()
                state.pinned = True
                registry.write_state(state)
                print(f"{image.prefix}")
                return 0
            if shared:
                registry.join()
        options = session_options(request, image)
        if not shared:
            options.private_mount_fd = open_image_mount(image.path, image.fs_format)
            try:
                return run_session(target.pid, options)
            finally:
                os.close(options.private_mount_fd)
        try:
            return run_session(target.pid, options)
        finally:
            leave(container, registry, image.prefix)
    finally:
        container.close()


def _require_sealed_exe() -> None:
    """The session's keeper is a fork of this process in the container's pid namespace, and
    shows this process's image as its /proc/<pid>/exe. The crashcart launcher execs the
    interpreter from a read-only or sealed image; the host's own file, which `python -m` runs,
    the container could overwrite (CVE-2019-5736)."""
    from handcar.procfs import writable_exe

    path = writable_exe()
    if path:
        raise CrashcartError(
            f"this process runs {path}, a writable host file that the container would see as "
            "/proc/self/exe of the session and could overwrite (CVE-2019-5736): run crashcart "
            "through its launcher, or use --no-pid-ns"
        )


def session_options(request: ExecRequest, image: ImageInfo) -> SessionOptions:
    use_tty = request.tty if request.tty is not None else os.isatty(0) and os.isatty(1)
    return SessionOptions(
        prefix=image.prefix,
        command=request.command,
        target_name=request.target,
        use_tty=use_tty,
        user=request.user,
        keep_caps=request.keep_caps,
        pid_namespace=request.pid_namespace,
    )


def leave(container: Container, registry: SessionRegistry, prefix: str) -> None:
    """End this session; the last one out (unless --mount-only pinned it) removes the mount."""
    with SessionRegistry.global_lock():
        last = not registry.others_active()
        registry.leave()
        if last and not registry.read_state().pinned:
            remove_mount(container, registry, prefix)


def unmount(pid: int, request: ExecRequest) -> int:
    container = Container.open(pid)
    registry = SessionRegistry(container.mnt_ns_inode())
    try:
        prefix = find_image_prefix(registry, request)
        with SessionRegistry.global_lock():
            state = registry.read_state()
            if registry.others_active():
                state.pinned = False
                registry.write_state(state)
                print(
                    "crashcart: sessions are still running; the last one out removes the mount",
                    file=sys.stderr,
                )
                return 0
            if not mounts_at(pid, prefix):
                registry.remove()
                raise CrashcartError(f"nothing is mounted at {prefix} in {request.target}")
            remove_mount(container, registry, prefix)
        return 0
    finally:
        container.close()


def find_image_prefix(registry: SessionRegistry, request: ExecRequest) -> str:
    state = registry.read_state()
    if state.image and os.path.exists(state.image):
        found = find_image(state.image)
        if found is not None:
            return found.prefix
    image = find_image(request.image)
    return image.prefix if image is not None else DEFAULT_PREFIX


def find_or_build_image(path: str | None) -> ImageInfo:
    """The image to mount: a first session on a machine with none builds it."""
    image = find_image(path)
    if image is not None:
        return image
    from handcar.crashcart.build import build_image

    return read_image_info(build_image(show_progress=True).image)
