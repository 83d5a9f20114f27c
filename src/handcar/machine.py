"""The one machine handcar runs on: its syscall numbers (handcar.linux) and its final-exec
trampoline (handcar.init.trampoline) are x86_64's. Elsewhere it says so in one line at
start-up instead of making wrong syscalls."""

from __future__ import annotations

import os

SUPPORTED_MACHINE = "x86_64"


def unsupported_machine(machine: str | None = None) -> str | None:
    """The one-line refusal for this machine, or None where handcar runs."""
    machine = machine or os.uname().machine
    if machine == SUPPORTED_MACHINE:
        return None
    return (
        f"this machine is {machine}: handcar runs on {SUPPORTED_MACHINE} only "
        "(its syscall numbers and exec trampoline are x86_64's)"
    )
