"""`handcar-python`: this venv's interpreter, started from the launcher's read-only image, for
programs that use the library (`handcar.runtime.container.Runtime`).

The library's create and exec fork processes into a container's sight, and those keep their
parent's image as /proc/<pid>/exe: from the host's writable interpreter file they refuse
(CVE-2019-5736). Under `handcar-python` they work:

    handcar-python my_program.py ARGS      handcar-python -m package.module ARGS
"""

from __future__ import annotations

import sys

USAGE = "usage: handcar-python SCRIPT [ARGS...] | -m MODULE [ARGS...] | -c CODE [ARGS...]\n"


def main() -> None:
    import runpy

    args = sys.argv[1:]
    if not args or (args[0] in ("-m", "-c") and len(args) < 2):
        sys.stderr.write(USAGE)
        raise SystemExit(2)
    if args[0] == "-m":
        sys.argv = args[1:]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")
