"""The bpf(2) calls handcar needs for the cgroup v2 device filter, through ctypes.

Only program load, attach, detach, query and get-fd-by-id are wrapped. The attributes are
packed by hand into a zeroed `union bpf_attr` buffer (the kernel zero-extends a short one).
"""

from __future__ import annotations

import ctypes
import os
import struct

from handcar.linux import libc

SYS_BPF = 321  # x86_64

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

_ATTR_SIZE = 128
_LOG_SIZE = 65536


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    result: int = libc.syscall(SYS_BPF, cmd, attr, _ATTR_SIZE)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf {what}: {os.strerror(err)}")
    return result


def load_device_program(instructions: bytes, license: str = "Apache") -> int:
    """Load a BPF_PROG_TYPE_CGROUP_DEVICE program; return its fd.

    On a verifier rejection the call is repeated with a log buffer so that the error says why.
    """
    insns = ctypes.create_string_buffer(instructions, len(instructions))
    lic = ctypes.create_string_buffer(license.encode())
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(
        "<IIQQ",
        attr,
        0,
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(instructions) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(lic),
    )
    struct.pack_into("<I", attr, 68, BPF_CGROUP_DEVICE)  # expected_attach_type
    try:
        return _bpf(BPF_PROG_LOAD, attr, "prog load")
    except OSError as err:
        log = ctypes.create_string_buffer(_LOG_SIZE)
        struct.pack_into("<IIQ", attr, 24, 1, _LOG_SIZE, ctypes.addressof(log))
        try:
            return _bpf(BPF_PROG_LOAD, attr, "prog load")
        except OSError:
            text = log.value.decode(errors="replace").strip().replace("\n", "; ")
            raise OSError(err.errno, f"{err.strerror}: {text[-300:]}") from None


def query_programs(cgroup_fd: int, attach_type: int = BPF_CGROUP_DEVICE) -> tuple[int, list[int]]:
    """Return (attach flags, program ids) attached directly to the cgroup."""
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, attach_type, 0, 0, ctypes.addressof(ids), 64)
    _bpf(BPF_PROG_QUERY, attr, "prog query")
    flags = struct.unpack_from("<I", attr, 12)[0]
    count = struct.unpack_from("<I", attr, 24)[0]
    return flags, [ids[i] for i in range(count)]


def program_fd(prog_id: int) -> int:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<I", attr, 0, prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr, "prog get fd by id")


def attach(cgroup_fd: int, prog_fd: int, flags: int, attach_type: int = BPF_CGROUP_DEVICE) -> None:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, attach_type, flags)
    _bpf(BPF_PROG_ATTACH, attr, "prog attach")


def detach(cgroup_fd: int, prog_fd: int, attach_type: int = BPF_CGROUP_DEVICE) -> None:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<III", attr, 0, cgroup_fd, prog_fd, attach_type)
    _bpf(BPF_PROG_DETACH, attr, "prog detach")


def replace_device_filter(cgroup_dir: str, instructions: bytes) -> None:
    """Attach a new device program to the cgroup, then detach the ones it replaces.

    As runc does, programs are attached with BPF_F_ALLOW_MULTI (so a nested runtime can add
    its own below), and the new one is attached before the old ones go, so there is no
    moment without a filter. A cgroup that already holds an exclusive program (attached
    without flags) gets the new program the same exclusive way, which replaces it atomically.
    """
    prog = load_device_program(instructions)
    try:
        cgroup = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            flags, old_ids = query_programs(cgroup)
            if old_ids and not flags & BPF_F_ALLOW_MULTI:
                attach(cgroup, prog, 0)
                return
            attach(cgroup, prog, BPF_F_ALLOW_MULTI)
            for prog_id in old_ids:
                old = program_fd(prog_id)
                try:
                    detach(cgroup, old)
                finally:
                    os.close(old)
        finally:
            os.close(cgroup)
    finally:
        os.close(prog)
