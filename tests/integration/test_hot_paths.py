"""The hot paths stay free of heavy imports: every CLI call pays for what it imports."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness import HANDCAR, Runtime

FORBIDDEN = {
    "re",
    "enum",
    "logging",
    "argparse",
    "subprocess",
    "dataclasses",
    "typing",
    "json",
    "socket",
    "signal",
    "threading",
    "asyncio",
    "tempfile",
    "shutil",
    # The typed model is for type checking only.
    "handcar.spec.types",
    "handcar.cgroups.types",
}


def _imported_modules(hc: Runtime, *args: str) -> set[str]:
    launcher = Path(HANDCAR).read_text().splitlines()
    interpreter = launcher[0][2:].split()[0]
    site = launcher[2].split('"')[1]
    code = (
        f"import sys; sys.path.insert(0, {site!r}); sys.argv = ['handcar'] + {list(args)!r}; "
        "from handcar.cli.main import main; main()"
    )
    # A file, not a pipe: a created container's init inherits stderr and keeps it open.
    err_file = hc.tmp / f"importtime-{args[-1]}.txt"
    with err_file.open("w") as err:
        subprocess.run(
            [interpreter, "-IS", "-X", "importtime", "-c", code],
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=60,
        )
    modules = set()
    for line in err_file.read_text().splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip())
    return modules


@pytest.mark.parametrize("command", ["create", "start", "state", "kill", "delete", "list", "exec"])
def test_hot_path_imports(hc: Runtime, command: str) -> None:
    cid = hc.new_id()
    bundle = hc.bundle(args=["sleep", "300"])
    root = ["--root", str(hc.root)]
    if command == "create":
        modules = _imported_modules(hc, *root, "create", "--bundle", str(bundle), cid)
    else:
        assert hc("create", "--bundle", str(bundle), cid).rc == 0
        if command == "exec":
            assert hc("start", cid).rc == 0
        argv = {
            "start": ["start", cid],
            "state": ["state", cid],
            "kill": ["kill", cid, "KILL"],
            "delete": ["delete", "--force", cid],
            "list": ["list"],
            "exec": ["exec", cid, "true"],
        }[command]
        modules = _imported_modules(hc, *root, *argv)
    assert (
        "handcar.cli.main" in modules and "handcar.runtime.state" in modules
    )  # the trace was read
    heavy = modules & FORBIDDEN
    assert not heavy, f"{command} imports {sorted(heavy)}"
