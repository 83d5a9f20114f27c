"""The hot paths stay free of heavy imports: every CLI call pays for what it imports."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sysconfig

import pytest

from harness import ROOT, Runtime

PYTHON = str(ROOT / ".venv" / "bin" / "python3")

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


def _sealed_interpreter() -> int:
    """A sealed memfd copy of the launcher's interpreter, as the launcher itself makes for
    rootless callers: create refuses to run from a writable interpreter file (CVE-2019-5736)."""
    fd = os.memfd_create("python", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    with open(os.path.realpath(PYTHON), "rb") as src:
        os.write(fd, src.read())
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def _imported_modules(hc: Runtime, *args: str) -> set[str]:
    """What the command imports, from `python -X importtime` with the launcher's own flags and
    entry point (launcher/launcher.c)."""
    site = sysconfig.get_paths(vars={"base": str(ROOT / ".venv")})["purelib"]
    code = (
        f"import sys; sys.path.insert(0, {site!r}); sys.argv = ['handcar'] + {list(args)!r}; "
        "from handcar.cli.main import main; main()"
    )
    # A file, not a pipe: a created container's init inherits stderr and keeps it open.
    err_file = hc.tmp / f"importtime-{args[-1]}.txt"
    image = _sealed_interpreter()
    try:
        with err_file.open("w") as err:
            subprocess.run(
                [PYTHON, "-IS", "-X", "importtime", "-c", code],
                executable=f"/proc/self/fd/{image}",
                pass_fds=(image,),
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=60,
            )
    finally:
        os.close(image)
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
        assert hc.state(cid)["status"] == "created"  # the traced create did create it
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
