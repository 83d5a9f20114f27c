"""`handcar update`: runc's individual flags as OCI resources, and validation of resources JSON.

Both check every value before anything is written, and name the flag or JSON path at fault.
"""

from __future__ import annotations

from handcar.cgroups.fs import CgroupError

# typing is not imported at run time (it costs milliseconds on every container start).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from handcar.spec.types import LinuxResources

_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1

# flag -> (path in linux.resources, parser name)
_FLAGS: dict[str, tuple[tuple[str, str], str]] = {
    "blkio-weight": (("blockIO", "weight"), "weight"),
    "cpu-period": (("cpu", "period"), "uint"),
    "cpu-quota": (("cpu", "quota"), "int"),
    "cpu-rt-period": (("cpu", "realtimePeriod"), "uint"),
    "cpu-rt-runtime": (("cpu", "realtimeRuntime"), "int"),
    "cpu-share": (("cpu", "shares"), "uint"),
    "cpu-shares": (("cpu", "shares"), "uint"),
    "cpuset-cpus": (("cpu", "cpus"), "list"),
    "cpuset-mems": (("cpu", "mems"), "list"),
    "memory": (("memory", "limit"), "size"),
    "memory-reservation": (("memory", "reservation"), "size"),
    "memory-swap": (("memory", "swap"), "size"),
    "kernel-memory": (("memory", "kernel"), "size"),
    "kernel-memory-tcp": (("memory", "kernelTCP"), "size"),
    "pids-limit": (("pids", "limit"), "int"),
}
_RDT_FLAGS = ("l3-cache-schema", "mem-bw-schema")

_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str) -> int:
    """A memory size as docker's units.RAMInBytes reads it: `100m`, `1.5GiB`, `512 kb`, or
    plain bytes; multipliers are powers of 1024. `-1` means unlimited.

    The grammar is: digits[.digits] [space] [kmgtp] [i] [b], letters in either case.
    """
    if text.strip() == "-1":
        return -1
    rest = text
    number = ""
    while rest[:1].isdigit() or (rest[:1] == "." and number and "." not in number):
        number, rest = number + rest[0], rest[1:]
    rest = rest.removeprefix(" ").lower()
    unit = rest[:1] if rest[:1] in ("k", "m", "g", "t", "p") else ""
    rest = rest[len(unit) :].removeprefix("i").removeprefix("b")
    if not number or number.endswith(".") or rest:
        raise ValueError(f"invalid size: '{text}'")
    return int(float(number) * 1024 ** _UNITS[unit])


def _parse_int(text: str, low: int, high: int) -> int:
    stripped = text.strip()
    body = stripped[1:] if stripped[:1] in "+-" else stripped
    if not body.isdigit():
        raise ValueError(f"invalid syntax: '{text}'")
    value = int(stripped)
    if not low <= value <= high:
        raise ValueError(f"value out of range: {value}")
    return value


def _parse(kind: str, text: str) -> object:
    if kind == "uint":
        return _parse_int(text, 0, _UINT64_MAX)
    if kind == "int":
        return _parse_int(text, -(1 << 63), _INT64_MAX)
    if kind == "weight":
        value = _parse_int(text, 0, 65535)
        if value and not 10 <= value <= 1000:
            raise ValueError(f"blkio weight must be between 10 and 1000, got {value}")
        return value
    if kind == "size":
        return parse_size(text)
    _check_cpu_list(text)
    return text


def resources_from_update_flags(flags: dict[str, str]) -> LinuxResources:
    """Turn runc update's flags ({"memory": "100m", ...}, with or without leading dashes)
    into a partial `linux.resources`; empty values are ignored, as runc ignores them."""
    resources: dict[str, Any] = {}
    for raw_name, text in flags.items():
        name = raw_name.lstrip("-")
        if text is None or text == "":
            continue
        if name in _RDT_FLAGS:
            raise CgroupError(f"--{name}: {text}: Intel RDT is not supported on this host")
        if name not in _FLAGS:
            raise CgroupError(f"--{name}: unknown update flag")
        (section, key), kind = _FLAGS[name]
        try:
            value = _parse(kind, text)
        except ValueError as err:
            raise CgroupError(f"--{name}: invalid value {text!r}: {err}") from None
        resources.setdefault(section, {})[key] = value
    return validate_resources(resources, "update flags")


# --- validation of linux.resources JSON --------------------------------------------------

_INT = "integer"
_UINT = "unsigned integer"
_STR = "string"
_BOOL = "boolean"

_MEMORY = {
    "limit": _INT,
    "reservation": _INT,
    "swap": _INT,
    "kernel": _INT,
    "kernelTCP": _INT,
    "swappiness": _UINT,
    "disableOOMKiller": _BOOL,
    "useHierarchy": _BOOL,
    "checkBeforeUpdate": _BOOL,
}
_CPU = {
    "shares": _UINT,
    "quota": _INT,
    "burst": _UINT,
    "period": _UINT,
    "realtimeRuntime": _INT,
    "realtimePeriod": _UINT,
    "cpus": _STR,
    "mems": _STR,
    "idle": _INT,
}
_THROTTLE = {"major": _INT, "minor": _INT, "rate": _UINT}
_WEIGHT_DEVICE = {"major": _INT, "minor": _INT, "weight": _UINT, "leafWeight": _UINT}
_DEVICE = {"allow": _BOOL, "type": _STR, "major": _INT, "minor": _INT, "access": _STR}


def validate_resources(resources: object, where: str = "linux.resources") -> LinuxResources:
    """Check the shape and ranges of a `linux.resources` object; raise CgroupError naming the
    JSON path of the first bad value. Unknown keys are errors too, to catch typos. Returns
    `resources` itself, now known to be LinuxResources."""
    obj: Any = _object(resources, where)
    known = ("memory", "cpu", "pids", "blockIO", "hugepageLimits", "network", "rdma")
    for key in obj:
        if key not in (*known, "unified", "devices"):
            raise CgroupError(f"{where}.{key}: unknown field")
    if "memory" in obj:
        memory = _fields(obj["memory"], _MEMORY, f"{where}.memory")
        if memory.get("swappiness") is not None and memory["swappiness"] > 100:
            raise CgroupError(f"{where}.memory.swappiness: {memory['swappiness']}: must be 0-100")
        for key in ("limit", "reservation", "swap"):
            if memory.get(key) is not None and memory[key] < -1:
                raise CgroupError(f"{where}.memory.{key}: {memory[key]}: must be -1 or positive")
    if "cpu" in obj:
        _validate_cpu(_fields(obj["cpu"], _CPU, f"{where}.cpu"), f"{where}.cpu")
    if "pids" in obj:
        _fields(obj["pids"], {"limit": _INT}, f"{where}.pids")
    if "blockIO" in obj:
        _validate_blkio(obj["blockIO"], f"{where}.blockIO")
    for i, limit in enumerate(_list(obj.get("hugepageLimits"), f"{where}.hugepageLimits")):
        _validate_hugepage(limit, f"{where}.hugepageLimits[{i}]")
    if "network" in obj:
        _validate_network(obj["network"], f"{where}.network")
    for device, limits in _object(obj.get("rdma") or {}, f"{where}.rdma").items():
        _fields(limits, {"hcaHandles": _UINT, "hcaObjects": _UINT}, f"{where}.rdma.{device}")
    for key, value in _object(obj.get("unified") or {}, f"{where}.unified").items():
        if not isinstance(value, str) or "/" in key or "." not in key:
            raise CgroupError(
                f"{where}.unified.{key}: {value!r}: expected a file name and a string"
            )
    for i, rule in enumerate(_list(obj.get("devices"), f"{where}.devices")):
        _validate_device(rule, f"{where}.devices[{i}]")
    checked: LinuxResources = obj
    return checked


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CgroupError(f"{where}: expected an object, got {_show(value)}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CgroupError(f"{where}: expected an array, got {_show(value)}")
    return value


def _show(value: object) -> str:
    import json

    return json.dumps(value)


def _fields(value: object, schema: dict[str, str], where: str) -> dict[str, Any]:
    obj = _object(value, where)
    for key, item in obj.items():
        kind = schema.get(key)
        if kind is None:
            raise CgroupError(f"{where}.{key}: unknown field")
        if item is None:
            continue
        ok = (
            isinstance(item, bool)
            if kind == _BOOL
            else isinstance(item, str)
            if kind == _STR
            else isinstance(item, int) and not isinstance(item, bool)
        )
        if ok and kind == _UINT:
            ok = 0 <= item <= _UINT64_MAX
        elif ok and kind == _INT:
            ok = -(1 << 63) <= item <= _INT64_MAX
        if not ok:
            raise CgroupError(f"{where}.{key}: {_show(item)}: expected {_article(kind)}")
    return obj


def _article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _check_cpu_list(text: str) -> None:
    """`0-3,6` style lists, as cpuset.cpus and cpuset.mems take them."""
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or (high and int(high) < int(low)):
            raise ValueError(f"invalid cpu/mem list: '{text}'")


def _validate_cpu(cpu: dict[str, Any], where: str) -> None:
    for key in ("cpus", "mems"):
        if cpu.get(key):
            try:
                _check_cpu_list(cpu[key])
            except ValueError as err:
                raise CgroupError(f"{where}.{key}: {cpu[key]!r}: {err}") from None
    if cpu.get("idle") not in (None, 0, 1):
        raise CgroupError(f"{where}.idle: {cpu['idle']}: must be 0 or 1")
    if cpu.get("quota") is not None and cpu["quota"] < -1:
        raise CgroupError(f"{where}.quota: {cpu['quota']}: must be -1 or positive")


def _validate_weight(value: object, where: str) -> None:
    if value and not (isinstance(value, int) and 10 <= value <= 1000):
        raise CgroupError(f"{where}: {value}: must be between 10 and 1000")


def _validate_blkio(value: object, where: str) -> None:
    schema = {"weight": _UINT, "leafWeight": _UINT}
    lists = ("weightDevice",) + tuple(k for k, _ in _throttle_keys())
    obj = _object(value, where)
    _fields({k: v for k, v in obj.items() if k not in lists}, schema, where)
    _validate_weight(obj.get("weight"), f"{where}.weight")
    _validate_weight(obj.get("leafWeight"), f"{where}.leafWeight")
    for i, device in enumerate(_list(obj.get("weightDevice"), f"{where}.weightDevice")):
        entry = _fields(device, _WEIGHT_DEVICE, f"{where}.weightDevice[{i}]")
        _validate_weight(entry.get("weight"), f"{where}.weightDevice[{i}].weight")
        _require(entry, ("major", "minor"), f"{where}.weightDevice[{i}]")
    for key, _ in _throttle_keys():
        for i, device in enumerate(_list(obj.get(key), f"{where}.{key}")):
            entry = _fields(device, _THROTTLE, f"{where}.{key}[{i}]")
            _require(entry, ("major", "minor", "rate"), f"{where}.{key}[{i}]")


def _throttle_keys() -> tuple[tuple[str, str], ...]:
    from handcar.cgroups.v1 import THROTTLES

    return THROTTLES


def _require(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if obj.get(key) is None:
            raise CgroupError(f"{where}.{key}: missing")


def _validate_hugepage(value: object, where: str) -> None:
    entry = _fields(value, {"pageSize": _STR, "limit": _UINT}, where)
    _require(entry, ("pageSize", "limit"), where)
    size = entry["pageSize"]
    if not (size[:-2].isdigit() and size[-2:] in ("KB", "MB", "GB")):
        raise CgroupError(f"{where}.pageSize: {size!r}: expected a size like 2MB or 1GB")


def _validate_network(value: object, where: str) -> None:
    obj = _object(value, where)
    _fields({k: v for k, v in obj.items() if k != "priorities"}, {"classID": _UINT}, where)
    for i, prio in enumerate(_list(obj.get("priorities"), f"{where}.priorities")):
        entry = _fields(prio, {"name": _STR, "priority": _UINT}, f"{where}.priorities[{i}]")
        _require(entry, ("name", "priority"), f"{where}.priorities[{i}]")


def _validate_device(value: object, where: str) -> None:
    rule = _fields(value, _DEVICE, where)
    if rule.get("allow") is None:
        raise CgroupError(f"{where}.allow: missing")
    if rule.get("type", "a") not in (None, "a", "b", "c"):
        raise CgroupError(f"{where}.type: {rule['type']!r}: must be a, b or c")
    access = rule.get("access") or ""
    if any(c not in "rwm" for c in access):
        raise CgroupError(f"{where}.access: {access!r}: only r, w and m are allowed")
