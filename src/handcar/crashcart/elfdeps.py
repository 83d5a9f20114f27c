"""Shared-library closure of ELF files, read from the files themselves (never by running ldd,
which executes the binary's loader and would run code from whatever it is given)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from handcar.crashcart.errors import CrashcartError

ELF_MAGIC = b"\x7fELF"
# Libraries the tools load with dlopen, so they appear in no DT_NEEDED: libgcc_s is loaded by
# glibc for pthread_cancel and unwinding, libthread_db by gdb to see a target's threads.
DLOPENED_LIBRARIES = ("libgcc_s.so.1",)


@dataclass
class ElfInfo:
    path: str
    elf_class: int
    machine: str
    interpreter: str | None
    needed: list[str] = field(default_factory=list)
    search_path: list[str] = field(default_factory=list)
    is_static: bool = False


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def _expand_origin(entry: str, origin: str) -> str:
    return entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)


def read_elf(path: str) -> ElfInfo:
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSegment
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import InterpSegment

    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            info = ElfInfo(path, elf.elfclass, elf["e_machine"], None)
            rpath: list[str] = []
            runpath: list[str] = []
            # Segments only: the program headers are what the loader reads, and walking the
            # section table instead costs ten times as much in pyelftools.
            for segment in elf.iter_segments():
                if isinstance(segment, InterpSegment):
                    info.interpreter = segment.get_interp_name()
                elif isinstance(segment, DynamicSegment):
                    for tag in segment.iter_tags():
                        # pyelftools sets the decoded string as an attribute named after the tag.
                        values = vars(tag)
                        if tag.entry.d_tag == "DT_NEEDED":
                            info.needed.append(str(values["needed"]))
                        elif tag.entry.d_tag == "DT_RPATH":
                            rpath.extend(str(values["rpath"]).split(":"))
                        elif tag.entry.d_tag == "DT_RUNPATH":
                            runpath.extend(str(values["runpath"]).split(":"))
            origin = os.path.dirname(os.path.realpath(path))
            # The loader ignores DT_RPATH when DT_RUNPATH is present.
            chosen = runpath if runpath else rpath
            info.search_path = [_expand_origin(p, origin) for p in chosen if p]
            info.is_static = info.interpreter is None and not info.needed
            return info
    except (ELFError, OSError) as error:
        raise CrashcartError(f"cannot read ELF file {path}: {error}") from error


def system_library_dirs() -> list[str]:
    """The directories the host's loader searches: ld.so.conf (with includes), then defaults."""
    dirs: list[str] = []

    def parse(conf: str, depth: int = 0) -> None:
        if depth > 8:
            return
        try:
            with open(conf) as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for raw in lines:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("include "):
                pattern = line.split(None, 1)[1]
                if not os.path.isabs(pattern):
                    pattern = os.path.join(os.path.dirname(conf), pattern)
                for included in sorted(glob.glob(pattern)):
                    parse(included, depth + 1)
            else:
                dirs.append(line)

    parse("/etc/ld.so.conf")
    for default in (
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/lib",
        "/usr/lib",
    ):
        dirs.append(default)
    return [d for i, d in enumerate(dirs) if d not in dirs[:i] and os.path.isdir(d)]


class LibraryResolver:
    """Finds each needed library the way the host's loader would, checking it matches the
    requester's ELF class and machine, and caches the answers."""

    def __init__(self) -> None:
        self.system_dirs = system_library_dirs()
        self._info_cache: dict[str, ElfInfo] = {}

    def info(self, path: str) -> ElfInfo:
        real = os.path.realpath(path)
        cached = self._info_cache.get(real)
        if cached is None:
            cached = read_elf(real)
            self._info_cache[real] = cached
        return cached

    def find(self, name: str, requester: ElfInfo) -> str:
        if "/" in name:
            return name
        for directory in requester.search_path + self.system_dirs:
            candidate = os.path.join(directory, name)
            if not os.path.exists(candidate):
                continue
            try:
                found = self.info(candidate)
            except CrashcartError:
                continue
            if found.elf_class == requester.elf_class and found.machine == requester.machine:
                return candidate
        raise CrashcartError(f"{requester.path} needs {name}, which is not on this host")

    def closure(self, roots: list[str]) -> dict[str, str]:
        """Every library the ELF files `roots` need, transitively: {soname: host path}."""
        libraries: dict[str, str] = {}
        pending = [self.info(root) for root in roots]
        while pending:
            current = pending.pop()
            for name in current.needed:
                if name in libraries:
                    continue
                path = self.find(name, current)
                libraries[name] = path
                pending.append(self.info(path))
        return libraries
