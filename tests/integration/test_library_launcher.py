"""The library tests, run as a library user runs a program: under `handcar-python`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness import HANDCAR

ROOT = Path(__file__).resolve().parents[2]
HANDCAR_PYTHON = str(Path(HANDCAR).parent / "handcar-python")


def test_the_library_under_handcar_python() -> None:
    done = subprocess.run(
        [
            HANDCAR_PYTHON,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "tests/integration/test_library.py",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary


def test_handcar_python_runs_from_a_sealed_image() -> None:
    code = "from handcar.procfs import writable_exe; print(repr(writable_exe()))"
    done = subprocess.run([HANDCAR_PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "''", done
