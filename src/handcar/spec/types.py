"""The OCI documents handcar reads and writes, as TypedDicts: the config (runtime-spec 1.3.0,
Linux), the state, and `handcar features`' output.

For type checking only: import this module under `if TYPE_CHECKING:`, never at run time (it
imports `typing`, which the hot paths must not load). The names follow the runtime-spec's Go
package (specs-go) so that runc's and crun's code reads alongside.

A config typed `Spec` is one that passed handcar's validation (spec.validate, the resources
and seccomp checks). `Required[...]` marks a key that is then always present; where that
differs from the JSON schema, tests/unit/test_spec_types.py lists the case and its reason:
- a key the schema requires but handcar accepts without (`ociVersion`, `process.cwd`, ...) is
  not Required here, so the code has to `.get()` it with handcar's default;
- a key handcar always has though the schema does not require it (a throttle's `rate`, the
  state's `pid`) is Required;
- `root`, `root.path`, `process` and `process.args` are validated present yet not Required:
  the code reaches them as `config.get("root") or {}`, and a Required key would make that
  `{}` ill-typed (and a record saved before its config holds `{}`).
Enumerations are `Literal`s holding at least the schema's values (handcar accepts a few more,
as runc does: the recursive rootfs propagations, the "paused" status).

This module is deliberately free of `from __future__ import annotations`: Python 3.11 works
out `Required`/`NotRequired` keys only from real annotations, and the schema test reads them.
"""

from typing import Literal, Required, TypedDict

# ---- shared definitions (defs.json, defs-linux.json) ------------------------------------------

HookKind = Literal[
    "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"
]
NamespaceType = Literal["mount", "pid", "network", "uts", "ipc", "user", "cgroup", "time"]
# The schema lists the four plain propagations; runc and handcar accept the recursive ones too.
RootfsPropagation = Literal[
    "private",
    "shared",
    "slave",
    "unbindable",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
]
DeviceType = Literal["c", "b", "u", "p"]
SeccompAction = Literal[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
]
SeccompArch = Literal[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
]
SeccompFlag = Literal[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
]
SeccompOperator = Literal[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
]
SchedulerPolicy = Literal[
    "SCHED_OTHER",
    "SCHED_FIFO",
    "SCHED_RR",
    "SCHED_BATCH",
    "SCHED_ISO",
    "SCHED_IDLE",
    "SCHED_DEADLINE",
]
SchedulerFlag = Literal[
    "SCHED_FLAG_RESET_ON_FORK",
    "SCHED_FLAG_RECLAIM",
    "SCHED_FLAG_DL_OVERRUN",
    "SCHED_FLAG_KEEP_POLICY",
    "SCHED_FLAG_KEEP_PARAMS",
    "SCHED_FLAG_UTIL_CLAMP_MIN",
    "SCHED_FLAG_UTIL_CLAMP_MAX",
]
IOPriorityClass = Literal["IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"]
PersonalityDomain = Literal["LINUX", "LINUX32"]
MemoryPolicyMode = Literal[
    "MPOL_DEFAULT",
    "MPOL_BIND",
    "MPOL_INTERLEAVE",
    "MPOL_WEIGHTED_INTERLEAVE",
    "MPOL_PREFERRED",
    "MPOL_PREFERRED_MANY",
    "MPOL_LOCAL",
]
MemoryPolicyFlag = Literal[
    "MPOL_F_NUMA_BALANCING",
    "MPOL_F_RELATIVE_NODES",
    "MPOL_F_STATIC_NODES",
]


class LinuxIDMapping(TypedDict):
    """A range of ids: `size` ids from `containerID` in the container are `hostID`... outside."""

    containerID: int
    hostID: int
    size: int


class Hook(TypedDict, total=False):
    path: Required[str]
    args: list[str]
    env: list[str]
    timeout: int  # seconds, at least 1


class Mount(TypedDict, total=False):
    destination: Required[str]
    source: str
    options: list[str]
    type: str
    uidMappings: list[LinuxIDMapping]
    gidMappings: list[LinuxIDMapping]


# ---- the config: top level ----------------------------------------------------------------------


class Hooks(TypedDict, total=False):
    prestart: list[Hook]  # deprecated by the spec, still run (as runc does)
    createRuntime: list[Hook]
    createContainer: list[Hook]
    startContainer: list[Hook]
    poststart: list[Hook]
    poststop: list[Hook]


class Root(TypedDict, total=False):
    path: str  # relative to the bundle, or absolute; validated present
    readonly: bool


# ---- the config: process ------------------------------------------------------------------------


class Box(TypedDict, total=False):
    """process.consoleSize. The schema requires both; handcar reads a missing one as 0."""

    height: int
    width: int


class User(TypedDict, total=False):
    uid: int
    gid: int
    umask: int
    additionalGids: list[int]
    username: str  # Windows only; not read on Linux


class LinuxCapabilities(TypedDict, total=False):
    bounding: list[str]
    effective: list[str]
    inheritable: list[str]
    permitted: list[str]
    ambient: list[str]


# `class` is a Python keyword: this one takes the functional form.
LinuxIOPriority = TypedDict(
    "LinuxIOPriority",
    {"class": Required[IOPriorityClass], "priority": int},
    total=False,
)


class Scheduler(TypedDict, total=False):
    policy: Required[SchedulerPolicy]
    nice: int
    priority: int
    flags: list[SchedulerFlag]
    runtime: int
    deadline: int
    period: int


class POSIXRlimit(TypedDict):
    type: str  # RLIMIT_*
    soft: int
    hard: int


class CPUAffinity(TypedDict, total=False):
    """process.execCPUAffinity: cpu lists (`0-3,7`) for the runtime's exec and the process."""

    initial: str
    final: str


class Process(TypedDict, total=False):
    args: list[str]  # validated non-empty, as runc does on Linux
    commandLine: str  # Windows only
    consoleSize: Box
    cwd: str  # required by the schema; handcar starts in "/" without it
    env: list[str]
    terminal: bool
    user: User
    capabilities: LinuxCapabilities
    apparmorProfile: str
    oomScoreAdj: int
    selinuxLabel: str
    ioPriority: LinuxIOPriority
    noNewPrivileges: bool
    scheduler: Scheduler
    rlimits: list[POSIXRlimit]
    execCPUAffinity: CPUAffinity


# ---- the config: linux --------------------------------------------------------------------------


class LinuxNamespace(TypedDict, total=False):
    type: Required[NamespaceType]
    path: str  # join this namespace instead of creating one


class LinuxDevice(TypedDict, total=False):
    """linux.devices: a device node to create in the container's /dev."""

    type: Required[DeviceType]
    path: Required[str]
    major: int  # validated present unless type is "p"
    minor: int
    fileMode: int
    uid: int
    gid: int


class LinuxNetDevice(TypedDict, total=False):
    name: str  # the name inside the container; the key of linux.netDevices is the host's


class LinuxDeviceCgroup(TypedDict, total=False):
    """linux.resources.devices: one allow or deny rule of the device controller."""

    allow: Required[bool]
    type: str  # a, b or c
    major: int
    minor: int
    access: str  # r, w and m


class LinuxPids(TypedDict, total=False):
    limit: int  # required by the schema; handcar reads a missing one as "no limit"


class LinuxWeightDevice(TypedDict, total=False):
    major: Required[int]
    minor: Required[int]
    weight: int
    leafWeight: int


class LinuxThrottleDevice(TypedDict):
    major: int
    minor: int
    rate: int  # the schema leaves it optional; handcar's validation requires it


# The LinuxBlockIO keys holding LinuxThrottleDevice lists.
ThrottleKey = Literal[
    "throttleReadBpsDevice",
    "throttleWriteBpsDevice",
    "throttleReadIOPSDevice",
    "throttleWriteIOPSDevice",
]


class LinuxBlockIO(TypedDict, total=False):
    weight: int
    leafWeight: int
    weightDevice: list[LinuxWeightDevice]
    throttleReadBpsDevice: list[LinuxThrottleDevice]
    throttleWriteBpsDevice: list[LinuxThrottleDevice]
    throttleReadIOPSDevice: list[LinuxThrottleDevice]
    throttleWriteIOPSDevice: list[LinuxThrottleDevice]


class LinuxCPU(TypedDict, total=False):
    cpus: str
    mems: str
    period: int
    quota: int
    burst: int
    realtimePeriod: int
    realtimeRuntime: int
    shares: int
    idle: int


class LinuxHugepageLimit(TypedDict):
    pageSize: str  # 2MB, 1GB, ...
    limit: int


class LinuxMemory(TypedDict, total=False):
    kernel: int  # deprecated; ignored, as runc ignores it
    kernelTCP: int  # deprecated; ignored, as runc ignores it
    limit: int
    reservation: int
    swap: int  # memory+swap, -1 for unlimited
    swappiness: int
    disableOOMKiller: bool
    useHierarchy: bool
    checkBeforeUpdate: bool


class LinuxInterfacePriority(TypedDict):
    name: str
    priority: int


class LinuxNetwork(TypedDict, total=False):
    classID: int
    priorities: list[LinuxInterfacePriority]


class LinuxRdma(TypedDict, total=False):
    hcaHandles: int
    hcaObjects: int


class LinuxResources(TypedDict, total=False):
    unified: dict[str, str]  # cgroup2 file name -> value
    devices: list[LinuxDeviceCgroup]
    pids: LinuxPids
    blockIO: LinuxBlockIO
    cpu: LinuxCPU
    hugepageLimits: list[LinuxHugepageLimit]
    memory: LinuxMemory
    network: LinuxNetwork
    rdma: dict[str, LinuxRdma]  # RDMA device name -> limits


class LinuxSeccompArg(TypedDict, total=False):
    index: Required[int]
    value: Required[int]
    valueTwo: int
    op: Required[SeccompOperator]


class LinuxSyscall(TypedDict, total=False):
    names: Required[list[str]]
    action: Required[SeccompAction]
    errnoRet: int
    args: list[LinuxSeccompArg]


class LinuxSeccomp(TypedDict, total=False):
    defaultAction: Required[SeccompAction]
    defaultErrnoRet: int
    flags: list[SeccompFlag]
    listenerPath: str
    listenerMetadata: str
    architectures: list[SeccompArch]
    syscalls: list[LinuxSyscall]


class LinuxIntelRdt(TypedDict, total=False):
    closID: str
    schemata: list[str]
    l3CacheSchema: str
    memBwSchema: str
    enableMonitoring: bool


class LinuxMemoryPolicy(TypedDict, total=False):
    mode: MemoryPolicyMode
    nodes: str
    flags: list[MemoryPolicyFlag]


class LinuxPersonality(TypedDict, total=False):
    domain: PersonalityDomain
    flags: list[str]


class LinuxTimeOffset(TypedDict, total=False):
    secs: int
    nanosecs: int


class LinuxTimeOffsets(TypedDict, total=False):
    boottime: LinuxTimeOffset
    monotonic: LinuxTimeOffset


class Linux(TypedDict, total=False):
    devices: list[LinuxDevice]
    netDevices: dict[str, LinuxNetDevice]  # host interface name -> how to move it in
    uidMappings: list[LinuxIDMapping]
    gidMappings: list[LinuxIDMapping]
    namespaces: list[LinuxNamespace]
    resources: LinuxResources
    cgroupsPath: str
    rootfsPropagation: RootfsPropagation
    seccomp: LinuxSeccomp
    sysctl: dict[str, str]
    maskedPaths: list[str]
    readonlyPaths: list[str]
    mountLabel: str
    intelRdt: LinuxIntelRdt
    memoryPolicy: LinuxMemoryPolicy
    personality: LinuxPersonality
    timeOffsets: LinuxTimeOffsets


class Spec(TypedDict, total=False):
    """config.json. Other platforms' sections (windows, solaris, vm, zos, freebsd) are left
    out: handcar runs Linux containers only."""

    ociVersion: str  # required by the schema; handcar, like runc, does not insist
    hooks: Hooks
    annotations: dict[str, str]
    hostname: str
    domainname: str
    mounts: list[Mount]
    root: Root
    process: Process
    linux: Linux


# ---- the state ----------------------------------------------------------------------------------

# The schema's statuses, and "paused", which runc (and so every engine) reports too.
Status = Literal["creating", "created", "running", "stopped", "paused"]


class State(TypedDict, total=False):
    """The OCI state: what hooks read on stdin."""

    ociVersion: Required[str]
    id: Required[str]
    status: Required[Status]
    pid: Required[int]  # optional in the schema; handcar always writes it (0 once stopped)
    bundle: Required[str]
    annotations: dict[str, str]


class RuncState(State, total=False):
    """The `state` (and `list --format json`) object: the OCI state plus runc's fields, in
    runc's field order."""

    rootfs: Required[str]
    created: Required[str]  # RFC 3339, nanoseconds
    owner: str  # always set; added last (after annotations), as runc orders it


# ---- `handcar features` -------------------------------------------------------------------------
# Arrays of enumerated names (actions, archs, ...) are plain `list[str]`: handcar fills them from
# its own tables of what it implements.


class Enabled(TypedDict, total=False):
    enabled: bool


class CgroupFeatures(TypedDict, total=False):
    v1: bool
    v2: bool
    systemd: bool
    systemdUser: bool
    rdma: bool


class SeccompFeatures(TypedDict, total=False):
    enabled: bool
    actions: list[str]
    operators: list[str]
    archs: list[str]
    knownFlags: list[str]
    supportedFlags: list[str]


class MountExtensions(TypedDict, total=False):
    idmap: Enabled


class LinuxFeatures(TypedDict, total=False):
    namespaces: list[str]
    capabilities: list[str]
    cgroup: CgroupFeatures
    seccomp: SeccompFeatures
    apparmor: Enabled
    selinux: Enabled
    intelRdt: Enabled
    mountExtensions: MountExtensions
    netDevices: Enabled


class Features(TypedDict, total=False):
    ociVersionMin: Required[str]
    ociVersionMax: Required[str]
    hooks: list[str]
    mountOptions: list[str]
    annotations: dict[str, str]
    potentiallyUnsafeConfigAnnotations: list[str]
    linux: LinuxFeatures
