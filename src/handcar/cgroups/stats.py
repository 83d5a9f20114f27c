"""`handcar events --stats` data, with the JSON field names of runc's types.Stats.

Fields that runc marks `omitempty` are left out when zero or empty, so that the output
matches runc's byte for byte in shape; struct-valued fields are always present, as in Go.
"""

from __future__ import annotations

import os

from handcar.cgroups.fs import read_key_values, read_optional, read_uint

# typing is not imported at run time (it costs milliseconds on every container start).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

UNIFIED = ""
_UNLIMITED = 0xFFFFFFFFFFFFFFFF


def _nonzero(**fields: Any) -> dict[str, Any]:
    """The omitempty fields that have a value."""
    return {k: v for k, v in fields.items() if v}


def _numbers(path: str) -> list[int]:
    text = read_optional(path)
    return [int(x) for x in text.split()] if text else []


def _entry(limit: int, usage: int, max_usage: int, failcnt: int) -> dict[str, Any]:
    return {"limit": limit, **_nonzero(usage=usage, max=max_usage), "failcnt": failcnt}


def _empty_stats() -> dict[str, Any]:
    empty = _entry(0, 0, 0, 0)
    return {
        "cpu": {"usage": {"kernel": 0, "user": 0}, "throttling": {}},
        "cpuset": {},
        "memory": {
            "usage": empty,
            "swap": dict(empty),
            "kernel": dict(empty),
            "kernelTCP": dict(empty),
        },
        "pids": {},
        "blkio": {},
        "hugetlb": {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


def hugepage_sizes() -> list[str]:
    """Page sizes as cgroup file names spell them: 2MB, 1GB, 64KB."""
    sizes = []
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except FileNotFoundError:
        return []
    for name in names:
        kb = int(name.removeprefix("hugepages-").removesuffix("kB"))
        if kb >= 1 << 20:
            sizes.append(f"{kb >> 20}GB")
        elif kb >= 1 << 10:
            sizes.append(f"{kb >> 10}MB")
        else:
            sizes.append(f"{kb}KB")
    return sorted(sizes)


# --- cgroup v1 -------------------------------------------------------------------------


def stats_v1(dirs: dict[str, str]) -> dict[str, Any]:
    stats = _empty_stats()
    if "cpuacct" in dirs:
        stats["cpu"]["usage"] = _cpuacct(dirs["cpuacct"])
    if "cpu" in dirs:
        stats["cpu"]["throttling"] = _throttling(read_key_values(dirs["cpu"] + "/cpu.stat"), 1)
    if "cpuset" in dirs:
        stats["cpuset"] = _cpuset_v1(dirs["cpuset"])
    if "memory" in dirs:
        stats["memory"] = _memory_v1(dirs["memory"])
    if "pids" in dirs:
        stats["pids"] = _pids(dirs["pids"])
    if "blkio" in dirs:
        stats["blkio"] = _blkio_v1(dirs["blkio"])
    if "hugetlb" in dirs:
        stats["hugetlb"] = _hugetlb_v1(dirs["hugetlb"])
    elif UNIFIED in dirs:
        stats["hugetlb"] = _hugetlb_v2(dirs[UNIFIED])
    return stats


def _cpuacct(path: str) -> dict[str, Any]:
    kernel = read_uint(path + "/cpuacct.usage_sys", -1)
    user = read_uint(path + "/cpuacct.usage_user", -1)
    if kernel < 0 or user < 0:
        # Older kernels: cpuacct.stat in USER_HZ ticks.
        ticks = read_key_values(path + "/cpuacct.stat")
        hz = os.sysconf("SC_CLK_TCK")
        kernel = ticks.get("system", 0) * 1_000_000_000 // hz
        user = ticks.get("user", 0) * 1_000_000_000 // hz
    return {
        **_nonzero(
            total=read_uint(path + "/cpuacct.usage"),
            percpu=_numbers(path + "/cpuacct.usage_percpu"),
            percpu_kernel=_numbers(path + "/cpuacct.usage_percpu_sys"),
            percpu_user=_numbers(path + "/cpuacct.usage_percpu_user"),
        ),
        "kernel": kernel,
        "user": user,
    }


def _throttling(stat: dict[str, int], ns_per_unit: int) -> dict[str, Any]:
    throttled = stat.get("throttled_time", stat.get("throttled_usec", 0) * 1000) * ns_per_unit
    return _nonzero(
        periods=stat.get("nr_periods", 0),
        throttledPeriods=stat.get("nr_throttled", 0),
        throttledTime=throttled,
    )


def _cpu_list(text: str | None) -> list[int]:
    """`0-3,8` -> [0, 1, 2, 3, 8]."""
    result: list[int] = []
    for part in (text or "").strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        result.extend(range(int(low), int(high or low) + 1))
    return result


def _cpuset_v1(path: str) -> dict[str, Any]:
    def flag(name: str) -> int:
        return read_uint(f"{path}/cpuset.{name}")

    relax = read_optional(path + "/cpuset.sched_relax_domain_level")
    return {
        **_nonzero(cpus=_cpu_list(read_optional(path + "/cpuset.cpus"))),
        "cpu_exclusive": flag("cpu_exclusive"),
        **_nonzero(mems=_cpu_list(read_optional(path + "/cpuset.mems"))),
        "mem_hardwall": flag("mem_hardwall"),
        "mem_exclusive": flag("mem_exclusive"),
        "memory_migrate": flag("memory_migrate"),
        "memory_spread_page": flag("memory_spread_page"),
        "memory_spread_slab": flag("memory_spread_slab"),
        "memory_pressure": flag("memory_pressure"),
        "sched_load_balance": flag("sched_load_balance"),
        "sched_relax_domain_level": int(relax) if relax and relax.strip() else 0,
    }


def _memory_entry_v1(path: str, prefix: str) -> dict[str, Any]:
    return _entry(
        read_uint(f"{path}/{prefix}limit_in_bytes"),
        read_uint(f"{path}/{prefix}usage_in_bytes"),
        read_uint(f"{path}/{prefix}max_usage_in_bytes"),
        read_uint(f"{path}/{prefix}failcnt"),
    )


def _memory_v1(path: str) -> dict[str, Any]:
    raw = read_key_values(path + "/memory.stat")
    return {
        **_nonzero(cache=raw.get("cache", 0)),
        "usage": _memory_entry_v1(path, "memory."),
        "swap": _memory_entry_v1(path, "memory.memsw."),
        "kernel": _memory_entry_v1(path, "memory.kmem."),
        "kernelTCP": _memory_entry_v1(path, "memory.kmem.tcp."),
        **_nonzero(raw=raw),
    }


def _pids(path: str) -> dict[str, Any]:
    limit = read_uint(path + "/pids.max")
    return _nonzero(
        current=read_uint(path + "/pids.current"), limit=0 if limit == _UNLIMITED else limit
    )


def _blkio_entries(path: str) -> list[dict[str, Any]]:
    entries = []
    for line in (read_optional(path) or "").splitlines():
        fields = line.split()
        if len(fields) != 3 or ":" not in fields[0]:
            continue  # the "Total N" line
        major, _, minor = fields[0].partition(":")
        entries.append(
            _nonzero(major=int(major), minor=int(minor), op=fields[1], value=int(fields[2]))
        )
    return entries


_BLKIO_KEYS = (
    ("ioServiceBytesRecursive", "io_service_bytes_recursive"),
    ("ioServicedRecursive", "io_serviced_recursive"),
    ("ioQueueRecursive", "io_queued_recursive"),
    ("ioServiceTimeRecursive", "io_service_time_recursive"),
    ("ioWaitTimeRecursive", "io_wait_time_recursive"),
    ("ioMergedRecursive", "io_merged_recursive"),
    ("ioTimeRecursive", "time_recursive"),
    ("sectorsRecursive", "sectors_recursive"),
)


def _blkio_v1(path: str) -> dict[str, Any]:
    # runc's order of preference: BFQ's files, then CFQ's, then the throttle counters.
    for prefix in ("blkio.bfq.", "blkio."):
        if os.path.exists(f"{path}/{prefix}io_service_bytes_recursive"):
            return _nonzero(
                **{key: _blkio_entries(f"{path}/{prefix}{name}") for key, name in _BLKIO_KEYS}
            )
    return _nonzero(
        ioServiceBytesRecursive=_blkio_entries(path + "/blkio.throttle.io_service_bytes_recursive"),
        ioServicedRecursive=_blkio_entries(path + "/blkio.throttle.io_serviced_recursive"),
    )


def _hugetlb_v1(path: str) -> dict[str, Any]:
    result = {}
    for size in hugepage_sizes():
        prefix = f"{path}/hugetlb.{size}."
        result[size] = {
            **_nonzero(
                usage=read_uint(prefix + "usage_in_bytes"),
                max=read_uint(prefix + "max_usage_in_bytes"),
            ),
            "failcnt": read_uint(prefix + "failcnt"),
        }
    return result


# --- cgroup v2 -------------------------------------------------------------------------


def stats_v2(path: str) -> dict[str, Any]:
    stats = _empty_stats()
    cpu = read_key_values(path + "/cpu.stat")
    stats["cpu"]["usage"] = {
        **_nonzero(total=cpu.get("usage_usec", 0) * 1000),
        "kernel": cpu.get("system_usec", 0) * 1000,
        "user": cpu.get("user_usec", 0) * 1000,
    }
    stats["cpu"]["throttling"] = _throttling(cpu, 1)
    if os.path.exists(path + "/cpuset.cpus.effective"):
        stats["cpuset"] = _nonzero(
            cpus=_cpu_list(read_optional(path + "/cpuset.cpus.effective")),
            mems=_cpu_list(read_optional(path + "/cpuset.mems.effective")),
        )
    if os.path.exists(path + "/memory.current"):
        stats["memory"] = _memory_v2(path)
    if os.path.exists(path + "/pids.current"):
        stats["pids"] = _pids(path)
    stats["blkio"] = _io_v2(path)
    stats["hugetlb"] = _hugetlb_v2(path)
    return stats


def _memory_v2(path: str) -> dict[str, Any]:
    raw = read_key_values(path + "/memory.stat")
    usage = read_uint(path + "/memory.current")
    limit = read_uint(path + "/memory.max")
    swap_usage = read_uint(path + "/memory.swap.current")
    swap_limit = read_uint(path + "/memory.swap.max")
    # v1 reports swap as memory+swap; runc adds the two on v2 for the same meaning.
    swap_limit = swap_limit if swap_limit == _UNLIMITED else min(swap_limit + limit, _UNLIMITED)
    failcnt = read_key_values(path + "/memory.events").get("max", 0)
    return {
        **_nonzero(cache=raw.get("file", 0)),
        "usage": _entry(limit, usage, read_uint(path + "/memory.peak"), failcnt),
        "swap": _entry(swap_limit, swap_usage + usage, 0, 0),
        "kernel": _entry(0, 0, 0, 0),
        "kernelTCP": _entry(0, 0, 0, 0),
        **_nonzero(raw=raw),
    }


def _io_v2(path: str) -> dict[str, Any]:
    service_bytes: list[dict[str, Any]] = []
    serviced: list[dict[str, Any]] = []
    ops = {"rbytes": "Read", "wbytes": "Write", "dbytes": "Discard"}
    counts = {"rios": "Read", "wios": "Write", "dios": "Discard"}
    for line in (read_optional(path + "/io.stat") or "").splitlines():
        device, *pairs = line.split()
        major, _, minor = device.partition(":")
        for pair in pairs:
            key, _, value = pair.partition("=")
            target = service_bytes if key in ops else serviced if key in counts else None
            if target is None:
                continue
            op = ops.get(key) or counts[key]
            target.append(_nonzero(major=int(major), minor=int(minor), op=op, value=int(value)))
    return _nonzero(ioServiceBytesRecursive=service_bytes, ioServicedRecursive=serviced)


def _hugetlb_v2(path: str) -> dict[str, Any]:
    result = {}
    for size in hugepage_sizes():
        prefix = f"{path}/hugetlb.{size}."
        if not os.path.exists(prefix + "current"):
            continue
        result[size] = {
            **_nonzero(usage=read_uint(prefix + "current")),
            "failcnt": read_key_values(prefix + "events").get("max", 0),
        }
    return result
