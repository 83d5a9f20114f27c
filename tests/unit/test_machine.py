"""The architecture guard: anywhere but x86_64, handcar refuses in one line at start-up."""

from __future__ import annotations

from handcar.machine import unsupported_machine


def test_x86_64_runs() -> None:
    assert unsupported_machine("x86_64") is None


def test_another_machine_gets_one_line_naming_it() -> None:
    refusal = unsupported_machine("aarch64")
    assert refusal is not None
    assert "aarch64" in refusal and "x86_64" in refusal and "\n" not in refusal


def test_this_machine_is_supported() -> None:
    # The suite runs on x86_64; were it not, every container test would fail on the guard.
    assert unsupported_machine() is None
