"""Install a compiled filter on the calling process: the init's and exec's tiny part of seccomp.

It makes exactly one syscall and maps no library (the program was compiled in the runtime,
handcar.seccomp.compile).
"""

from __future__ import annotations

from handcar.linux import libseccomp as scmp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.seccomp.compile import CompiledFilter


def load_filter(compiled: CompiledFilter) -> int | None:
    """Install the filter on the calling process. Runs in the init, just before exec.

    Returns the notify listener fd (close-on-exec) when the profile uses SCMP_ACT_NOTIFY, else
    None. Raises OSError: EACCES when neither no_new_privs is set nor CAP_SYS_ADMIN is held.
    """
    fd = scmp.set_filter(compiled.flags, compiled.program)
    return fd if compiled.needs_listener else None
