"""`run`: create, start and, in the foreground, wait for the container and clean up after it.

In the foreground handcar is a child subreaper, so the container's init (and anything orphaned
inside it) is re-parented to us: we reap it, return its exit status, and forward signals.
"""

from __future__ import annotations

import os

from handcar.runtime.foreground import CallerState, wait_for_exit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.runtime.container import Runtime
    from handcar.runtime.lifecycle import CreateOptions


def run_container(
    runtime: Runtime, container_id: str, options: CreateOptions, detach: bool, keep: bool
) -> int:
    # In the foreground handcar must be a subreaper: the init is its grandchild, re-parented
    # to it when the bootstrap exits, and only so can it be reaped and its status returned.
    # --no-subreaper is accepted and has nothing to change here.
    options.subreaper = not detach
    attach = None
    from handcar.spec import validate as spec

    config = spec.load_config(os.path.abspath(options.bundle))
    if not detach and not options.console_socket and config["process"].get("terminal") is True:
        # -t in the foreground: handcar is the console socket and relays its own terminal.
        from handcar.runtime.terminal import TerminalAttach

        attach = TerminalAttach()
        options.console_fd = attach.peer_fd
    try:
        pid = runtime.create(container_id, options, config)
        if detach:
            runtime.start(container_id)
            return 0
        caller = CallerState()
        try:
            if attach is not None:
                attach.receive()
                runtime.start(container_id)
                return attach.run(pid)
            caller.forward_to(pid)
            runtime.start(container_id)
            return wait_for_exit(pid)
        finally:
            caller.restore()
            if not options.was_subreaper:
                from handcar import linux

                linux.set_child_subreaper(False)
            if not keep:
                runtime.delete(container_id, force=True)
    finally:
        if attach is not None:
            attach.close()
