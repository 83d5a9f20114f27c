"""User namespaces: the runtime writes the child's id maps while the child waits."""

from __future__ import annotations

from handcar.errors import HandcarError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.spec.types import LinuxIDMapping, Spec


def _map_lines(mappings: list[LinuxIDMapping]) -> str:
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings)


def write_id_maps(pid: int, config: Spec) -> None:
    linux_cfg = config.get("linux") or {}
    uid_maps = linux_cfg.get("uidMappings") or []
    gid_maps = linux_cfg.get("gidMappings") or []
    # gid_map cannot be written by an unprivileged writer until setgroups is denied.
    if gid_maps and _is_single_self_map(gid_maps):
        _write(pid, "setgroups", "deny", "linux.gidMappings")
    if uid_maps:
        _write(pid, "uid_map", _map_lines(uid_maps), "linux.uidMappings")
    if gid_maps:
        _write(pid, "gid_map", _map_lines(gid_maps), "linux.gidMappings")


def _is_single_self_map(mappings: list[LinuxIDMapping]) -> bool:
    import os

    return os.geteuid() != 0 and len(mappings) == 1 and mappings[0]["size"] == 1


def _write(pid: int, name: str, text: str, field: str) -> None:
    try:
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)
    except OSError as err:
        raise HandcarError(f"{field}: cannot write /proc/{pid}/{name}: {err.strerror}") from None
