"""Applying OCI `linux.resources` to a cgroup2 directory, with runc's v1-to-v2 conversions.

- cpu.shares becomes cpu.weight by runc's (1.3+) quadratic fit: 2 -> 1, 1024 -> 100,
  262144 -> 10000;
- blockIO.weight becomes io.bfq.weight as is when BFQ is there, else io.weight scaled from
  [10, 1000] to [1, 10000];
- memory.swap is memory+swap, so memory.swap.max = swap - limit;
- quota and period become cpu.max, throttles become io.max lines.

runc ignores memory.swappiness, memory.disableOOMKiller and the kernel memory fields on v2
(the kernel has no such knobs) and so does handcar. Realtime cpu, blkio leaf weights and
network classes have no v2 equivalent either, but silently dropping those would change the
container's behaviour, so they are refused with an error naming the field.
"""

from __future__ import annotations

import os

from handcar.cgroups.fs import CgroupError, read_uint, write_file

# typing is not imported at run time (it costs milliseconds on every container start).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from handcar.spec.types import (
        LinuxBlockIO,
        LinuxCPU,
        LinuxHugepageLimit,
        LinuxMemory,
        LinuxNetwork,
        LinuxPids,
        LinuxRdma,
        LinuxResources,
        ThrottleKey,
    )

R = "linux.resources."
MAX_UINT64 = 0xFFFFFFFFFFFFFFFF


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] to cpu.weight [1, 10000], as runc >= 1.3 and crun >= 1.23 do."""
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    import math

    log = math.log2(shares)
    exponent = (log * log + 125 * log) / 612.0 - 7.0 / 34.0
    return int(math.ceil(10**exponent))


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] to io.weight [1, 10000] (runc's linear map)."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def swap_to_v2(swap: int, limit: int) -> int:
    """OCI memory.swap (memory+swap) to memory.swap.max (swap alone); 0 means unset."""
    if limit == -1 and swap == 0:
        return -1  # unlimited memory: unlimited swap too, as v1 does
    if swap in (-1, 0):
        return swap
    if limit in (0, -1):
        raise CgroupError(f"{R}memory.swap: {swap}: unable to set swap limit without memory limit")
    if swap < limit:
        raise CgroupError(f"{R}memory.swap: {swap}: must be at least memory.limit ({limit})")
    return swap - limit


def _max(value: int) -> str:
    return "max" if value == -1 else str(value)


def _set(path: str, name: str, value: str, field: str, shown: object) -> None:
    write_file(path, name, value, R + field, shown)


def apply(path: str, resources: LinuxResources, devices: bool) -> None:
    cpu = resources.get("cpu") or {}
    for key in ("cpus", "mems"):
        if cpu.get(key):
            _set(path, "cpuset." + key, cpu[key], "cpu." + key, cpu[key])
    if devices:
        from handcar.cgroups import devices as device_rules

        device_rules.apply_v2(path, device_rules.container_policy(resources.get("devices")))
    _memory(path, resources.get("memory") or {})
    _pids(path, resources.get("pids") or {})
    _cpu(path, cpu)
    _io(path, resources.get("blockIO") or {})
    hugetlb(path, resources.get("hugepageLimits") or [])
    _rdma(path, resources.get("rdma") or {})
    _network(resources.get("network") or {})
    unified(path, resources.get("unified") or {})


def _check_usage(path: str, limit: int, swap: int) -> None:
    usage = read_uint(path + "/memory.current")
    if limit > 0 and usage >= limit:
        raise CgroupError(f"{R}memory.limit: {limit}: rejecting memory limit below usage {usage}")
    total = usage + read_uint(path + "/memory.swap.current")
    if swap > 0 and total >= swap:
        raise CgroupError(f"{R}memory.swap: {swap}: rejecting swap limit below usage {total}")


def _memory(path: str, memory: LinuxMemory) -> None:
    limit = memory.get("limit") or 0
    swap = memory.get("swap") or 0
    reservation = memory.get("reservation") or 0
    if not (limit or swap or reservation):
        return
    if memory.get("checkBeforeUpdate"):
        _check_usage(path, limit, swap)
    swap_max = swap_to_v2(swap, limit)
    swap_text = _max(swap_max) if swap_max else ("0" if swap > 0 else "")
    if swap_text:
        try:
            _set(path, "memory.swap.max", swap_text, "memory.swap", swap)
        except CgroupError:
            # Without swap accounting there is no memory.swap.max: "no limit" and "no swap"
            # are then already true, so only a real swap limit is an error.
            if swap_text not in ("max", "0") or os.path.exists(path + "/memory.swap.max"):
                raise
    if limit:
        _set(path, "memory.max", _max(limit), "memory.limit", limit)
    if reservation:
        _set(path, "memory.low", _max(reservation), "memory.reservation", reservation)


def _pids(path: str, pids: LinuxPids) -> None:
    limit = pids.get("limit") or 0
    if limit:
        _set(path, "pids.max", str(limit) if limit > 0 else "max", "pids.limit", limit)


def _cpu(path: str, cpu: LinuxCPU) -> None:
    for key in ("realtimeRuntime", "realtimePeriod"):
        if cpu.get(key):
            raise CgroupError(
                f"{R}cpu.{key}: {cpu[key]}: realtime cpu is not supported on cgroup v2"
            )
    if cpu.get("idle") is not None:
        _set(path, "cpu.idle", str(cpu["idle"]), "cpu.idle", cpu["idle"])
    shares = cpu.get("shares") or 0
    if shares:
        _set(path, "cpu.weight", str(shares_to_weight(shares)), "cpu.shares", shares)
    quota = cpu.get("quota") or 0
    period = cpu.get("period") or 0
    burst = cpu.get("burst")
    # cpu.max.burst must not exceed the quota: lower the burst first when it shrinks.
    if burst is not None and quota and burst < read_uint(path + "/cpu.max.burst"):
        _set(path, "cpu.max.burst", str(burst), "cpu.burst", burst)
        burst = None
    if quota or period:
        text = str(quota) if quota > 0 else "max"
        if period:
            text += f" {period}"
        _set(path, "cpu.max", text, "cpu.quota" if quota else "cpu.period", text)
    if burst is not None:
        _set(path, "cpu.max.burst", str(burst), "cpu.burst", burst)


def _io(path: str, blkio: LinuxBlockIO) -> None:
    if not any(blkio.values()):
        return
    if blkio.get("leafWeight"):
        raise CgroupError(
            f"{R}blockIO.leafWeight: {blkio['leafWeight']}: not supported on cgroup v2"
        )
    bfq = os.path.exists(path + "/io.bfq.weight")
    weight = blkio.get("weight") or 0
    if weight:
        if bfq:
            _set(path, "io.bfq.weight", str(weight), "blockIO.weight", weight)
        else:
            _set(
                path, "io.weight", str(blkio_weight_to_io_weight(weight)), "blockIO.weight", weight
            )
    for i, device in enumerate(blkio.get("weightDevice") or []):
        field = f"blockIO.weightDevice[{i}]"
        if device.get("leafWeight"):
            raise CgroupError(f"{R}{field}.leafWeight: not supported on cgroup v2")
        if device.get("weight"):
            value = device["weight"] if bfq else blkio_weight_to_io_weight(device["weight"])
            text = f"{device['major']}:{device['minor']} {value}"
            _set(path, "io.bfq.weight" if bfq else "io.weight", text, field, text)
    for key, name in THROTTLES:
        for i, throttle in enumerate(blkio.get(key) or []):
            text = f"{throttle['major']}:{throttle['minor']} {name}={throttle['rate']}"
            _set(path, "io.max", text, f"blockIO.{key}[{i}]", text)


THROTTLES: tuple[tuple[ThrottleKey, str], ...] = (
    ("throttleReadBpsDevice", "rbps"),
    ("throttleWriteBpsDevice", "wbps"),
    ("throttleReadIOPSDevice", "riops"),
    ("throttleWriteIOPSDevice", "wiops"),
)


def hugetlb(path: str, limits: list[LinuxHugepageLimit]) -> None:
    for i, limit in enumerate(limits):
        size, value = limit.get("pageSize"), limit.get("limit")
        field = f"hugepageLimits[{i}]"
        _set(path, f"hugetlb.{size}.max", str(value), field, f"{size}={value}")
        # Reserved pages have their own limit since 5.7: keep it in step, as runc 1.2 does.
        if os.path.exists(f"{path}/hugetlb.{size}.rsvd.max"):
            _set(path, f"hugetlb.{size}.rsvd.max", str(value), field, f"{size}={value}")


def _rdma(path: str, rdma: dict[str, LinuxRdma]) -> None:
    for device, limits in rdma.items():
        text = rdma_line(device, limits)
        _set(path, "rdma.max", text, f"rdma.{device}", text)


def _network(network: LinuxNetwork) -> None:
    if network.get("classID") or network.get("priorities"):
        raise CgroupError(
            f"{R}network: net_cls and net_prio do not exist on cgroup v2 (use an eBPF program)"
        )


def unified(path: str, values: dict[str, str]) -> None:
    """Write `unified` key-values: each key is a file in the container's cgroup2 directory."""
    for key, value in values.items():
        field = f"unified.{key}"
        if "/" in key or key.startswith(".") or "." not in key:
            raise CgroupError(f"{R}{field}: {value}: not a cgroup2 interface file name")
        if not os.path.exists(f"{path}/{key}"):
            controller = key.partition(".")[0]
            raise CgroupError(
                f"{R}{field}: {value}: no such file (is the {controller} controller enabled?)"
            )
        _set(path, key, str(value), field, value)


def rdma_line(device: str, limits: LinuxRdma) -> str:
    parts = [device]
    if limits.get("hcaHandles") is not None:
        parts.append(f"hca_handle={limits['hcaHandles']}")
    if limits.get("hcaObjects") is not None:
        parts.append(f"hca_object={limits['hcaObjects']}")
    return " ".join(parts)
