"""`checkpoint` and `restore` through CRIU: not available on this host.

Debian 12's criu 3.17.1 cannot initialise on Linux 6.13 and later: those kernels split the vDSO
data pages into two mappings, [vvar] and [vvar_vclock] (kernel commit e93d2521b27f, "x86/vdso:
Split virtual clock pages into dedicated mapping"), and criu 3.17 stops at `Unexpected rt vDSO
area bounds` in its kernel-feature detection, before it can dump anything. CRIU fixed this
upstream after 3.17 (checkpoint-restore/criu pull request #2539, "vdso: handle vvar_vclock
vma-s"). So handcar runs `criu check` and reports its verdict instead of pretending.
"""

from __future__ import annotations

import os

from handcar.errors import HandcarError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.runtime.container import Runtime

CRIU = "criu"
_UNAVAILABLE = (
    "checkpoint/restore is not available: criu cannot run on this kernel ({reason}); "
    "Linux 6.13+ splits the vDSO data into [vvar] and [vvar_vclock], which criu learned "
    "after 3.17 (checkpoint-restore/criu#2539)"
)


def criu_check(criu: str = CRIU) -> tuple[bool, str]:
    """(usable, reason): run `criu check` and keep its first error line."""
    import subprocess

    try:
        result = subprocess.run(
            [criu, "check"], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        return False, f"{criu} is not installed"
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"{criu} check: {err}"
    output = (result.stdout + result.stderr).strip()
    if result.returncode == 0 and "Error" not in output:
        return True, "criu check: looks good"
    errors = [line for line in output.splitlines() if "Error" in line]
    return False, (errors[0] if errors else output.splitlines()[0] if output else "failed")


def criu_usable() -> bool:
    return os.path.exists("/usr/sbin/criu") and criu_check()[0]


def _unavailable() -> HandcarError:
    usable, reason = criu_check()
    if usable:
        return HandcarError("checkpoint/restore through criu is not implemented in handcar yet")
    return HandcarError(_UNAVAILABLE.format(reason=reason))


def checkpoint(runtime: Runtime, container_id: str) -> None:
    runtime.store.load(container_id, lock=False)  # "container does not exist" comes first
    raise _unavailable()


def restore(runtime: Runtime, container_id: str) -> None:
    raise _unavailable()
