"""crashcart's command line: `crashcart build ...` and `crashcart [exec] TARGET [-- CMD...]`."""

from __future__ import annotations

import os
import sys

from handcar.crashcart.errors import CrashcartError

USAGE = """\
usage: crashcart build [--tools LIST] [--add-tools LIST] [--from-package PKG]...
                       [--prefix DIR] [--format erofs|squashfs] [--cache-dir DIR] [-o FILE]
       crashcart [exec] [OPTIONS] TARGET [--] [CMD [ARG...]]

Debug any running container with tools from the host, even one with no shell and no libc.

build                 make the toolbox image from this host's binaries (cached by content)
  --tools LIST        comma-separated tools instead of the default set:
                      busybox,bash,strace,gdb,ltrace,lsof,tcpdump,ip,ss,curl,ps
  --add-tools LIST    tools to add to the default set
  --from-package PKG  every binary of an installed Debian package (repeatable)
  --prefix DIR        where the image is mounted in containers (default /dev/crashcart)
  --format FMT        erofs or squashfs (default: erofs if mkfs.erofs is installed)
  --cache-dir DIR     image cache (default $XDG_CACHE_HOME/crashcart or /var/cache/crashcart)
  -o, --output FILE   also copy the image to FILE
  -q, --quiet         no progress bar and no summary

exec (the default)    mount the toolbox in TARGET and run a shell there, or CMD
  TARGET              a handcar, runc or crun container id, a podman or Docker name or id,
                      a containerd task ([NAMESPACE/]ID), or a pid
  --image FILE        the image to use (default: the last one built; built if none)
  --root DIR          also look for container ids in this runtime state root (repeatable)
  -u, --user UID[:GID]  run as this user in the container (default root)
  --keep-caps         keep capabilities when --user is not root
  --no-pid-ns         stay in the host's pid namespace (see the host's processes)
  -t, --tty / -T, --no-tty  force a pty on or off (default: on when stdin is a terminal)
  -m, --mount-only    only mount the toolbox (it stays until --unmount)
  -U, --unmount       remove the toolbox mount (once no session uses it)

Exit status: CMD's, or 125 when crashcart itself fails.
"""

EXIT_USAGE = 2
EXIT_FAILURE = 125


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        code = dispatch(args)
    except UsageError as error:
        print(f"crashcart: {error} (see crashcart --help)", file=sys.stderr)
        code = EXIT_USAGE
    except CrashcartError as error:
        print(f"crashcart: {error}", file=sys.stderr)
        code = EXIT_FAILURE
    except OSError as error:
        print(f"crashcart: {error.strerror or error}", file=sys.stderr)
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def dispatch(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else EXIT_USAGE
    from handcar.machine import unsupported_machine

    refusal = unsupported_machine()
    if refusal:
        raise CrashcartError(refusal)
    if args[0] == "build":
        return run_build(args[1:])
    if args[0] == "exec":
        args = args[1:]
    return run_exec(args)


def _value(args: list[str], index: int, flag: str) -> str:
    if index + 1 >= len(args):
        raise UsageError(f"{flag} needs a value")
    return args[index + 1]


def _split_flag(arg: str) -> tuple[str, str | None]:
    if arg.startswith("--") and "=" in arg:
        flag, value = arg.split("=", 1)
        return flag, value
    return arg, None


def _tool_list(text: str) -> list[str]:
    tools = [t.strip() for t in text.split(",") if t.strip()]
    if not tools:
        raise UsageError("empty tool list")
    return tools


def run_build(args: list[str]) -> int:
    from handcar.crashcart.build import DEFAULT_TOOLS, build_image

    tools = list(DEFAULT_TOOLS)
    packages: list[str] = []
    options: dict[str, str] = {}
    quiet = False
    index = 0
    while index < len(args):
        flag, inline = _split_flag(args[index])
        takes_value = flag in (
            "--tools",
            "--add-tools",
            "--from-package",
            "--prefix",
            "--format",
            "--cache-dir",
            "-o",
            "--output",
        )
        value = ""
        if takes_value:
            if inline is None:
                value = _value(args, index, flag)
                index += 1
            else:
                value = inline
        if flag == "--tools":
            tools = _tool_list(value)
        elif flag == "--add-tools":
            tools.extend(_tool_list(value))
        elif flag == "--from-package":
            packages.append(value)
        elif flag in ("-o", "--output"):
            options["output"] = value
        elif takes_value:
            options[flag.lstrip("-").replace("-", "_")] = value
        elif flag in ("-q", "--quiet"):
            quiet = True
        elif flag in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        else:
            raise UsageError(f"build: unknown option {args[index]}")
        index += 1
    try:
        result = build_image(
            tools=tools,
            packages=packages,
            prefix=options.get("prefix", "/dev/crashcart"),
            fs_format=options.get("format"),
            cache_dir=options.get("cache_dir"),
            output=options.get("output"),
            show_progress=not quiet,
        )
    except CrashcartError as error:
        print(f"crashcart: {error}", file=sys.stderr)
        return 1
    print(result.image)
    if not quiet:
        how = "cached" if result.cached else "built"
        print(
            f"crashcart: {how} {len(result.tools)} tools, {result.size / 2**20:.1f} MiB,"
            f" in {result.seconds:.2f} s",
            file=sys.stderr,
        )
    return 0


def parse_user(text: str) -> tuple[int, int]:
    uid_text, _, gid_text = text.partition(":")
    if not uid_text.isdigit() or (gid_text and not gid_text.isdigit()):
        raise UsageError(f"--user takes UID[:GID] as numbers, not {text}")
    uid = int(uid_text)
    return uid, int(gid_text) if gid_text else uid


def run_exec(args: list[str]) -> int:
    from handcar.crashcart.commands import ExecRequest
    from handcar.crashcart.commands import run_exec as execute

    request = ExecRequest(target="")
    index = 0
    while index < len(args):
        arg = args[index]
        flag, inline = _split_flag(arg)
        if arg == "--" or not arg.startswith("-"):
            break
        value = inline
        if flag in ("--image", "--root", "-u", "--user") and value is None:
            value = _value(args, index, flag)
            index += 1
        if flag == "--image":
            request.image = value
        elif flag == "--root":
            request.state_roots.append(value or "")
        elif flag in ("-u", "--user"):
            request.user = parse_user(value or "")
        elif flag == "--keep-caps":
            request.keep_caps = True
        elif flag == "--no-pid-ns":
            request.pid_namespace = False
        elif flag in ("-t", "--tty"):
            request.tty = True
        elif flag in ("-T", "--no-tty"):
            request.tty = False
        elif flag in ("-m", "--mount-only"):
            request.mount_only = True
        elif flag in ("-U", "--unmount"):
            request.unmount = True
        elif flag in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        else:
            raise UsageError(f"unknown option {arg}")
        index += 1
    if index < len(args) and args[index] == "exec" and index + 1 < len(args):
        # `crashcart --root DIR exec TARGET`: the subcommand word after the options.
        return run_exec(args[:index] + args[index + 1 :])
    if index < len(args) and args[index] == "--":
        raise UsageError("no TARGET before --")
    if index >= len(args):
        raise UsageError("no TARGET given")
    request.target = args[index]
    rest = args[index + 1 :]
    request.command = rest[1:] if rest[:1] == ["--"] else rest
    if request.mount_only and request.unmount:
        raise UsageError("--mount-only and --unmount exclude each other")
    if (request.mount_only or request.unmount) and request.command:
        raise UsageError("--mount-only and --unmount take no command")
    if os.geteuid() != 0:
        raise CrashcartError("entering a container's namespaces needs root")
    return execute(request)
