"""The last exec of the container's process goes through a sealed in-memory trampoline.

At the moment of the final execve the caller is still the host's Python interpreter (the
launcher's read-only image of it), so a program whose interpreter line reads `#!/proc/self/exe`
would make the kernel start that interpreter inside the container, holding its inode (the other
door of CVE-2019-5736). So the
init first execs a tiny static program from a sealed memfd, which then execs the user's program:
at that point /proc/self/exe names the memfd, which nobody can write and which is not a host
file. The trampoline is a few dozen bytes of x86_64 machine code:

    argv = ["\x01" + path, user_argv...];  execve(path, &argv[1], envp);  exit(127)

The marker byte keeps it from serving as anyone's `#!` interpreter: run that way (argv[0] is
then "/proc/self/exe"), it exits 127 instead of looping.
"""

from __future__ import annotations

import fcntl
import os
import struct

_BASE = 0x400000
_EHDR_SIZE = 64
_PHDR_SIZE = 56
_CODE = bytes.fromhex(
    "488b7c2408"  # mov rdi, [rsp+8]          argv[0]: "\x01" + the path
    "803f01"  # cmp byte [rdi], 1         started by handcar, not as a #! interpreter
    "7518"  # jne fail
    "48ffc7"  # inc rdi                   skip the marker
    "488d742410"  # lea rsi, [rsp+16]         &argv[1]: the user's argv
    "488b0424"  # mov rax, [rsp]            argc
    "488d54c410"  # lea rdx, [rsp+rax*8+16]   envp
    "b83b000000"  # mov eax, 59 (execve)
    "0f05"  # syscall
    "bf7f000000"  # fail: mov edi, 127
    "b83c000000"  # mov eax, 60 (exit)
    "0f05"  # syscall
)
_MFD_CLOEXEC = 0x1
_MFD_ALLOW_SEALING = 0x2
_MFD_EXEC = 0x10
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def elf_image() -> bytes:
    size = _EHDR_SIZE + _PHDR_SIZE + len(_CODE)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        0x3E,  # x86_64
        1,
        _BASE + _EHDR_SIZE + _PHDR_SIZE,  # entry
        _EHDR_SIZE,  # program headers right after this header
        0,
        0,
        _EHDR_SIZE,
        _PHDR_SIZE,
        1,
        0,
        0,
        0,
    )
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)
    return header + program + _CODE


def sealed_trampoline() -> int | None:
    """A close-on-exec fd of the sealed trampoline, or None where it cannot run."""
    if os.uname().machine != "x86_64":
        return None
    try:
        fd = os.memfd_create("handcar-exec", _MFD_CLOEXEC | _MFD_ALLOW_SEALING | _MFD_EXEC)
    except OSError:
        try:  # kernels before 6.3 do not know MFD_EXEC
            fd = os.memfd_create("handcar-exec", _MFD_CLOEXEC | _MFD_ALLOW_SEALING)
        except OSError:
            return None
    os.write(fd, elf_image())
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    return fd


def exec_program(path: str, argv: list[str], env: dict[str, str]) -> None:
    """execve(path, argv, env) by way of the sealed trampoline; raises OSError on failure."""
    fd = sealed_trampoline()
    if fd is None:
        os.execve(path, argv, env)
    else:
        os.execve(fd, ["\x01" + path, *argv], env)
