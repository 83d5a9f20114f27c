"""Applying OCI `linux.resources` to cgroup v1 controllers (and, on a hybrid host, hugetlb and
`unified` keys through the cgroup2 directory).

Writes happen in runc's subsystem order: cpuset, devices, memory, cpu, pids, blkio, hugetlb,
net_cls, net_prio, rdma. A value the kernel refuses raises CgroupError naming the field.
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
        LinuxDeviceCgroup,
        LinuxHugepageLimit,
        LinuxMemory,
        LinuxNetwork,
        LinuxPids,
        LinuxRdma,
        LinuxResources,
        ThrottleKey,
    )

R = "linux.resources."
UNIFIED = ""


def apply(dirs: dict[str, str], resources: LinuxResources, devices: bool) -> None:
    cpu = resources.get("cpu") or {}
    _cpuset(dirs, cpu)
    if devices:
        _devices(dirs, resources.get("devices"))
    _memory(_need(dirs, "memory", "memory", resources.get("memory")), resources.get("memory") or {})
    _cpu(_need(dirs, "cpu", "cpu", _cpu_fields(cpu)), cpu)
    _pids(dirs, resources.get("pids") or {})
    _blkio(dirs, resources.get("blockIO") or {})
    _hugetlb(dirs, resources.get("hugepageLimits") or [])
    _network(dirs, resources.get("network") or {})
    _rdma(dirs, resources.get("rdma") or {})
    _unified(dirs, resources.get("unified") or {})


def _need(dirs: dict[str, str], controller: str, field: str, wanted: object) -> str:
    """The controller's directory; a limit asked of an unmounted controller is an error."""
    path = dirs.get(controller)
    if path is None:
        if wanted:
            raise CgroupError(f"{R}{field}: the {controller} cgroup controller is not mounted")
        return ""
    return path


def _set(path: str, name: str, value: object, field: str) -> None:
    write_file(path, name, str(value), R + field, value)


def _cpuset(dirs: dict[str, str], cpu: LinuxCPU) -> None:
    for key in ("cpus", "mems"):
        value = cpu.get(key)
        if value:
            path = _need(dirs, "cpuset", "cpu." + key, value)
            _set(path, "cpuset." + key, value, "cpu." + key)


def _devices(dirs: dict[str, str], rules: list[LinuxDeviceCgroup] | None) -> None:
    from handcar.cgroups import devices

    path = _need(dirs, "devices", "devices", True)
    devices.apply_v1(path, devices.container_policy(rules))


def _check_usage(path: str, memory: LinuxMemory) -> None:
    """checkBeforeUpdate: refuse a limit below what the cgroup already uses (runc 1.2)."""
    limit = memory.get("limit") or 0
    swap = memory.get("swap") or 0
    usage = read_uint(path + "/memory.usage_in_bytes")
    if limit > 0 and usage >= limit:
        raise CgroupError(f"{R}memory.limit: {limit}: rejecting memory limit below usage {usage}")
    total = read_uint(path + "/memory.memsw.usage_in_bytes", usage)
    if swap > 0 and total >= swap:
        raise CgroupError(f"{R}memory.swap: {swap}: rejecting swap limit below usage {total}")


def _memory(path: str, memory: LinuxMemory) -> None:
    if not path or not memory:
        return
    if memory.get("checkBeforeUpdate"):
        _check_usage(path, memory)
    limit = memory.get("limit") or 0
    swap = memory.get("swap") or 0
    has_swap_file = os.path.exists(path + "/memory.memsw.limit_in_bytes")
    if limit == -1 and swap == 0 and has_swap_file:
        swap = -1  # "unlimited memory" means unlimited memory+swap too, as in runc
    set_limit = (
        (lambda: _set(path, "memory.limit_in_bytes", limit, "memory.limit")) if limit else None
    )
    set_swap = (
        (lambda: _set(path, "memory.memsw.limit_in_bytes", swap, "memory.swap")) if swap else None
    )
    # The kernel requires memory <= memory+swap at every step, so the order of the two writes
    # depends on whether the new memory+swap limit is above the current memory limit.
    swap_first = bool(limit and swap) and (
        swap == -1 or read_uint(path + "/memory.limit_in_bytes") < swap
    )
    order = (set_swap, set_limit) if swap_first else (set_limit, set_swap)
    for step in order:
        if step is not None:
            step()
    if memory.get("reservation"):
        _set(path, "memory.soft_limit_in_bytes", memory["reservation"], "memory.reservation")
    # memory.kernel and memory.kernelTCP are ignored, as runc ignores them (deprecated).
    if memory.get("disableOOMKiller"):
        _set(path, "memory.oom_control", 1, "memory.disableOOMKiller")
    if memory.get("swappiness") is not None and memory["swappiness"] != -1:
        _set(path, "memory.swappiness", memory["swappiness"], "memory.swappiness")
    if memory.get("useHierarchy"):
        _set(path, "memory.use_hierarchy", 1, "memory.useHierarchy")


def _cpu_fields(cpu: LinuxCPU) -> bool:
    keys = ("shares", "quota", "period", "burst", "realtimeRuntime", "realtimePeriod", "idle")
    return any(cpu.get(k) not in (None, 0) for k in keys)


def _cpu(path: str, cpu: LinuxCPU) -> None:
    if not path or not cpu:
        return
    shares = cpu.get("shares") or 0
    if shares:
        _set(path, "cpu.shares", shares, "cpu.shares")
        # The kernel clamps out-of-range shares silently; say so instead, as runc does.
        actual = read_uint(path + "/cpu.shares")
        if actual != shares:
            bound = "maximum" if shares > actual else "minimum"
            raise CgroupError(
                f"{R}cpu.shares: {shares}: the {bound} allowed cpu-shares is {actual}"
            )
    _quota_and_period(path, cpu.get("quota") or 0, cpu.get("period") or 0)
    if cpu.get("burst") is not None:
        _set(path, "cpu.cfs_burst_us", cpu["burst"], "cpu.burst")
    if cpu.get("idle") is not None:
        _set(path, "cpu.idle", cpu["idle"], "cpu.idle")
    # Realtime: period before runtime, so that runtime fits within the new period.
    if cpu.get("realtimePeriod"):
        _set(path, "cpu.rt_period_us", cpu["realtimePeriod"], "cpu.realtimePeriod")
    if cpu.get("realtimeRuntime"):
        _set(path, "cpu.rt_runtime_us", cpu["realtimeRuntime"], "cpu.realtimeRuntime")


def _quota_and_period(path: str, quota: int, period: int) -> None:
    retry_period = False
    if period:
        try:
            _set(path, "cpu.cfs_period_us", period, "cpu.period")
        except CgroupError:
            # A shorter period can be refused while the old quota/new period ratio exceeds the
            # parent's; when a quota is coming too, retry the period after it (runc does so).
            if not quota:
                raise
            retry_period = True
    if quota:
        _set(path, "cpu.cfs_quota_us", quota, "cpu.quota")
    if retry_period:
        _set(path, "cpu.cfs_period_us", period, "cpu.period")


def _pids(dirs: dict[str, str], pids: LinuxPids) -> None:
    limit = pids.get("limit") or 0
    if not limit:
        return
    path = _need(dirs, "pids", "pids.limit", limit)
    write_file(path, "pids.max", str(limit) if limit > 0 else "max", R + "pids.limit", limit)


def _blkio(dirs: dict[str, str], blkio: LinuxBlockIO) -> None:
    if not any(blkio.values()):
        return
    path = _need(dirs, "blkio", "blockIO", True)
    # Modern kernels only have BFQ's weight files; CFQ's blkio.weight is gone.
    bfq = os.path.exists(path + "/blkio.bfq.weight")
    weight_file = "blkio.bfq.weight" if bfq else "blkio.weight"
    if blkio.get("weight"):
        _set(path, weight_file, blkio["weight"], "blockIO.weight")
    if blkio.get("leafWeight"):
        _set(path, "blkio.leaf_weight", blkio["leafWeight"], "blockIO.leafWeight")
    for i, device in enumerate(blkio.get("weightDevice") or []):
        dev = f"{device['major']}:{device['minor']}"
        if device.get("weight"):
            field = f"blockIO.weightDevice[{i}].weight"
            write_file(
                path,
                weight_file + "_device",
                f"{dev} {device['weight']}",
                R + field,
                device["weight"],
            )
        if device.get("leafWeight"):
            field = f"blockIO.weightDevice[{i}].leafWeight"
            write_file(
                path,
                "blkio.leaf_weight_device",
                f"{dev} {device['leafWeight']}",
                R + field,
                device["leafWeight"],
            )
    for key, name in THROTTLES:
        for i, throttle in enumerate(blkio.get(key) or []):
            text = f"{throttle['major']}:{throttle['minor']} {throttle['rate']}"
            write_file(path, "blkio.throttle." + name, text, f"{R}blockIO.{key}[{i}]", text)


THROTTLES: tuple[tuple[ThrottleKey, str], ...] = (
    ("throttleReadBpsDevice", "read_bps_device"),
    ("throttleWriteBpsDevice", "write_bps_device"),
    ("throttleReadIOPSDevice", "read_iops_device"),
    ("throttleWriteIOPSDevice", "write_iops_device"),
)


def _hugetlb(dirs: dict[str, str], limits: list[LinuxHugepageLimit]) -> None:
    if not limits:
        return
    path = dirs.get("hugetlb")
    if path is not None:
        for i, limit in enumerate(limits):
            field = f"{R}hugepageLimits[{i}]"
            size, value = limit.get("pageSize"), limit.get("limit")
            write_file(path, f"hugetlb.{size}.limit_in_bytes", str(value), field, f"{size}={value}")
            if os.path.exists(f"{path}/hugetlb.{size}.rsvd.limit_in_bytes"):
                write_file(path, f"hugetlb.{size}.rsvd.limit_in_bytes", str(value), field, value)
        return
    # Hybrid hosts may leave hugetlb on cgroup2 (this machine does): use it there.
    unified = dirs.get(UNIFIED)
    if unified is None:
        raise CgroupError(f"{R}hugepageLimits: the hugetlb cgroup controller is not mounted")
    from handcar.cgroups import v2
    from handcar.cgroups.fs import cgroup2_mount_of, enable_controllers

    enable_controllers(cgroup2_mount_of(unified), unified)
    v2.hugetlb(unified, limits)


def _network(dirs: dict[str, str], network: LinuxNetwork) -> None:
    class_id = network.get("classID")
    if class_id:
        path = _need(dirs, "net_cls", "network.classID", class_id)
        _set(path, "net_cls.classid", class_id, "network.classID")
    for i, prio in enumerate(network.get("priorities") or []):
        field = f"network.priorities[{i}]"
        path = _need(dirs, "net_prio", field, True)
        text = f"{prio['name']} {prio['priority']}"
        write_file(path, "net_prio.ifpriomap", text, R + field, text)


def _rdma(dirs: dict[str, str], rdma: dict[str, LinuxRdma]) -> None:
    for device, limits in rdma.items():
        field = f"rdma.{device}"
        path = _need(dirs, "rdma", field, True)
        from handcar.cgroups.v2 import rdma_line

        _set(path, "rdma.max", rdma_line(device, limits), field)


def _unified(dirs: dict[str, str], unified: dict[str, str]) -> None:
    if not unified:
        return
    path = dirs.get(UNIFIED)
    if path is None:
        raise CgroupError(f"{R}unified: cannot use unified resources on a cgroup v1 host")
    from handcar.cgroups import v2

    v2.unified(path, unified)
