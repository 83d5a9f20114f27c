"""Signal names and numbers, without the `signal` module (it imports enum)."""

from __future__ import annotations

import _signal

from handcar.errors import UsageError

SIGNALS: dict[str, int] = {
    name: getattr(_signal, name)
    for name in dir(_signal)
    if name.startswith("SIG") and not name.startswith("SIG_") and name.isupper()
}


def parse_signal(text: str) -> int:
    """Accept "9", "KILL" or "SIGKILL" (runc's forms); any case for names."""
    if text.isdigit():
        number = int(text)
        if 0 < number <= 64:
            return number
        raise UsageError(f"unknown signal {text!r}")
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name in SIGNALS:
        return SIGNALS[name]
    if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
        base = SIGNALS["SIGRTMIN"] if "+" in name else SIGNALS["SIGRTMAX"]
        offset = name[9:]
        if offset.isdigit():
            return base + int(offset) if "+" in name else base - int(offset)
    raise UsageError(f"unknown signal {text!r}")
