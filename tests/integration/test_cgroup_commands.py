"""cgroups on real containers: limits, OOM, pids, pause/resume, update, ps, events, clean-up,
cgroupsPath forms, the cgroup namespace and mount; and cgroup2 at the container level.

This host is hybrid: v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified, which holds
hugetlb unless someone mounted hugetlb as v1 (the benchmark does, for crun): the tests read the
layout at run time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import Runtime, leaked_cgroups, read_until, wait_for

CG = "/sys/fs/cgroup"
UNIFIED = CG + "/unified"


# --- helpers ---------------------------------------------------------------------------


def host_paths(hc: Runtime, cid: str) -> dict[str, str]:
    """The container's cgroup directories, from handcar's state.json."""
    data = json.loads((hc.root / cid / "state.json").read_text())
    paths: dict[str, str] = data["cgroup_paths"]
    return paths


def stored_resources(hc: Runtime, cid: str) -> dict[str, Any]:
    data = json.loads((hc.root / cid / "state.json").read_text())
    resources: dict[str, Any] = data["config"]["linux"].get("resources") or {}
    return resources


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def inside(hc: Runtime, cid: str, script: str) -> str:
    """Run a shell script in the container; return its stdout."""
    result = hc("exec", cid, "sh", "-c", script)
    assert result.rc == 0, result
    return result.out


def started(hc: Runtime, config: dict[str, Any]) -> str:
    cid = hc.create(config)
    assert hc("start", cid).rc == 0
    return cid


def hugetlb_v1() -> bool:
    """Whether hugetlb is a v1 hierarchy right now (else it is on cgroup2, if anywhere)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[2] == "cgroup" and "hugetlb" in fields[3].split(","):
                return True
    return False


def hugetlb_on_unified() -> bool:
    try:
        return "hugetlb" in read(UNIFIED + "/cgroup.controllers").split()
    except OSError:
        return False


def vda() -> tuple[int, int]:
    dev = os.stat("/dev/vda").st_rdev
    return os.major(dev), os.minor(dev)


def procs(path: str) -> list[int]:
    try:
        return [int(x) for x in read(path + "/cgroup.procs").split()]
    except OSError:
        return []


class Events:
    """`handcar events` in the background; its JSON lines, read as they come."""

    def __init__(self, hc: Runtime, *args: str) -> None:
        self.proc = hc.popen("events", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.seen: list[dict[str, Any]] = []
        self.err = ""
        self._buffer = b""

    def _take_lines(self) -> list[dict[str, Any]]:
        *lines, self._buffer = self._buffer.split(b"\n")
        events = [json.loads(line) for line in lines]
        self.seen += events
        return events

    def next(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """Read on until an event of this type arrives; fail clearly if it never does."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            for event in self._take_lines():
                if event["type"] == kind:
                    return event
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {kind} event within {timeout}s: {self.seen}"
            chunk = read_until(self.proc.stdout.fileno(), b"\n", remaining)
            assert chunk, f"events ended before a {kind} event: {self.seen}"
            self._buffer += chunk

    def finish(self, timeout: float) -> int:
        """Wait for the stream to end; read the rest. Its exit code."""
        out, err = self.proc.communicate(timeout=timeout)
        self._buffer += out
        self.err = err.decode()
        self._take_lines()
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


# --- every resource this host has, from config.json -------------------------------------


def test_every_resource_read_back_inside_and_on_the_host(hc: Runtime) -> None:
    major, minor = vda()
    config = hc.config(["sleep", "300"])
    resources: dict[str, Any] = {
        "memory": {"limit": 96 << 20, "reservation": 48 << 20, "swap": 128 << 20, "swappiness": 20},
        "cpu": {
            "shares": 256,
            "quota": 30000,
            "period": 100000,
            "cpus": "0",
            "mems": "0",
            "realtimePeriod": 1000000,
            "realtimeRuntime": 0,
        },
        "pids": {"limit": 77},
        "blockIO": {
            "weight": 300,
            "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 200}],
        },
    }
    has_hugetlb = hugetlb_v1() or hugetlb_on_unified()
    if has_hugetlb:
        resources["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 << 20}]
    config["linux"]["resources"] = resources
    cid = started(hc, config)
    p = host_paths(hc, cid)
    want = {
        "memory/memory.limit_in_bytes": str(96 << 20),
        "memory/memory.soft_limit_in_bytes": str(48 << 20),
        "memory/memory.memsw.limit_in_bytes": str(128 << 20),
        "memory/memory.swappiness": "20",
        "cpu/cpu.shares": "256",
        "cpu/cpu.cfs_quota_us": "30000",
        "cpu/cpu.cfs_period_us": "100000",
        "cpu/cpu.rt_period_us": "1000000",
        "cpuset/cpuset.cpus": "0",
        "cpuset/cpuset.mems": "0",
        "pids/pids.max": "77",
    }
    # Inside, the container's own cgroup is mounted (read-only) at /sys/fs/cgroup/<controller>.
    names = " ".join("/sys/fs/cgroup/" + k for k in want)
    seen = inside(hc, cid, f"for f in {names}; do cat $f; done").split("\n")
    assert seen[: len(want)] == list(want.values())
    for key, value in want.items():
        controller, name = key.split("/")
        assert read(p[controller] + "/" + name) == value, key
    blkio = inside(
        hc,
        cid,
        "cat /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device "
        "/sys/fs/cgroup/blkio/blkio.throttle.write_iops_device",
    )
    assert f"{major}:{minor} 1048576" in blkio and f"{major}:{minor} 200" in blkio
    weight_file = p["blkio"] + "/blkio.bfq.weight"
    if os.path.exists(weight_file):
        assert read(weight_file).split()[-1] == "300"
    if hugetlb_v1():
        assert read(p["hugetlb"] + "/hugetlb.2MB.limit_in_bytes") == str(4 << 20)
        assert inside(
            hc, cid, "cat /sys/fs/cgroup/hugetlb/hugetlb.2MB.limit_in_bytes"
        ).strip() == str(4 << 20)
    elif has_hugetlb:
        assert read(p[""] + "/hugetlb.2MB.max") == str(4 << 20)
    # The devices policy: runc's default allow-list, /dev/null yes, /dev/vda no.
    allowed = read(p["devices"] + "/devices.list")
    assert "c 1:3 rwm" in allowed and f"b {major}:{minor}" not in allowed
    # The init really is in every one of those cgroups.
    pid = hc.state(cid)["pid"]
    for path in set(p.values()):
        assert pid in procs(path), path


def test_refused_config_values_name_the_field(hc: Runtime) -> None:
    config = hc.config(["true"])
    config["linux"]["resources"] = {"cpu": {"shares": 1}}
    bundle = hc.bundle(config)
    result = hc("create", "--bundle", str(bundle), hc.new_id())
    assert result.rc == 1
    assert "cpu.shares: 1" in result.msg, result
    config["linux"]["resources"] = {"memory": {"limit": "lots"}}
    bundle = hc.bundle(config)
    result = hc("create", "--bundle", str(bundle), hc.new_id())
    assert result.rc == 1 and "linux.resources.memory.limit" in result.msg, result


# --- the memory limit OOM-kills; events reports it ---------------------------------------

# busybox's ash keeps a command substitution's output in memory: 200 MB of 'a' must be held.
ALLOCATE = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"


def test_memory_limit_oom_kills_and_events_reports_it(hc: Runtime) -> None:
    config = hc.config(["sh", "-c", ALLOCATE])
    config["linux"]["resources"] = {"memory": {"limit": 32 << 20, "swap": 32 << 20}}
    cid = hc.create(config)
    memory = host_paths(hc, cid)["memory"]
    events = Events(hc, "--interval", "100ms", cid)
    try:
        # events registers its OOM eventfd before its first stats: then the allocation may start
        events.next("stats")
        assert hc("start", cid).rc == 0
        assert events.finish(30) == 0, events.err
    finally:
        events.close()
    lines = events.seen
    assert {"type": "oom", "id": cid} in lines, lines
    assert all(e["id"] == cid and e["type"] in ("oom", "stats") for e in lines)
    # The kernel killed it: the cgroup counted an OOM kill, and `survived` was never printed.
    assert hc.state(cid)["status"] == "stopped"
    control = read(memory + "/memory.oom_control")
    assert "oom_kill 1" in control or "oom_kill 2" in control, control
    assert int(read(memory + "/memory.max_usage_in_bytes")) > 30 << 20


def test_run_oom_killed_exit_status(hc: Runtime) -> None:
    config = hc.config(["sh", "-c", ALLOCATE])
    config["linux"]["resources"] = {"memory": {"limit": 24 << 20, "swap": 24 << 20}}
    result = hc.run(["sh", "-c", ALLOCATE], config)
    assert result.rc == 128 + signal.SIGKILL, result
    assert "survived" not in result.out


def test_events_stream_reports_oom_of_a_child_and_goes_on(hc: Runtime) -> None:
    config = hc.config(["sleep", "300"])
    config["linux"]["resources"] = {"memory": {"limit": 24 << 20, "swap": 24 << 20}}
    cid = started(hc, config)
    events = Events(hc, "--interval", "200ms", cid)
    try:
        events.next("stats")  # the stream is up
        result = hc("exec", cid, "sh", "-c", ALLOCATE)
        assert result.rc == 128 + signal.SIGKILL, result  # the exec'd shell was OOM-killed
        events.next("oom")
        assert hc.state(cid)["status"] == "running"
        events.next("stats")  # the stream goes on after an oom
        assert hc("kill", cid, "KILL").rc == 0
        assert events.finish(10) == 0, events.err
    finally:
        events.close()
    assert {"type": "oom", "id": cid} in events.seen


# --- the pids limit stops a fork bomb -----------------------------------------------------


def test_pids_limit_stops_a_fork_bomb(hc: Runtime) -> None:
    cid = started(hc, hc.config(["sleep", "300"]))
    pids_dir = host_paths(hc, cid)["pids"]
    assert hc("update", "--pids-limit", "16", cid).rc == 0
    # A bounded bomb: 200 background sleeps, far past the limit. ash gives up at the first
    # fork the kernel refuses ("can't fork"); everything it made stays, up to the limit.
    bomb = "i=0; while [ $i -lt 200 ]; do sleep 300 & i=$((i+1)); done; echo all forked"
    result = hc("exec", cid, "sh", "-c", bomb, timeout=30)
    assert result.rc != 0 and "all forked" not in result.out, result
    assert "can't fork" in result.err, result
    assert int(read(pids_dir + "/pids.events").split()[-1]) > 0  # "max N": forks refused
    assert int(read(pids_dir + "/pids.max")) == 16
    assert 1 < len(procs(pids_dir)) <= 16
    # kill --all reaches all of them; delete then leaves nothing.
    assert hc("kill", "--all", cid, "KILL").rc == 0
    assert wait_for(lambda: not procs(pids_dir), 10)
    assert wait_for(lambda: hc.state(cid)["status"] == "stopped")
    assert hc("delete", cid).rc == 0
    assert not os.path.exists(pids_dir)


# --- pause and resume ---------------------------------------------------------------------


def test_pause_resume(hc: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    config = hc.config(["sh", "-c", "while true; do date +%s%N > /out/tick; sleep 0.02; done"])
    config["mounts"].append(
        {"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind", "rw"]}
    )
    cid = hc.create(config)
    tick = out / "tick"
    assert hc("resume", cid).msg == "container not paused"
    assert hc("start", cid).rc == 0
    assert wait_for(tick.exists)
    assert hc("pause", cid).rc == 0
    assert hc.state(cid)["status"] == "paused"
    listed = json.loads(hc("list", "--format", "json").out)
    assert [c["status"] for c in listed if c["id"] == cid] == ["paused"]
    freezer = host_paths(hc, cid)["freezer"]
    assert read(freezer + "/freezer.state") == "FROZEN"
    before = tick.read_text()
    time.sleep(0.3)
    assert tick.read_text() == before, "a paused container still ran"
    again = hc("pause", cid)
    assert again.rc == 1 and again.msg == "container not running"
    delete = hc("delete", cid)
    assert delete.rc == 1 and "not stopped: paused" in delete.msg
    assert hc("resume", cid).rc == 0
    assert hc.state(cid)["status"] == "running"
    assert wait_for(lambda: tick.read_text() != before)
    assert hc("resume", cid).msg == "container not paused"
    assert hc("kill", cid, "KILL").rc == 0
    assert wait_for(lambda: hc.state(cid)["status"] == "stopped")
    assert hc("pause", cid).msg == "container not running"
    assert hc("resume", cid).msg == "container not paused"
    assert hc("pause", "nonexistent-" + cid).msg == "container does not exist"


def test_kill_all_and_delete_force_of_a_paused_container(hc: Runtime) -> None:
    config = hc.config(["sh", "-c", "sleep 300 & sleep 300 & sleep 300 & wait"])
    cid = started(hc, config)
    paths = host_paths(hc, cid)
    assert wait_for(lambda: len(procs(paths["pids"])) == 4)
    assert hc("pause", cid).rc == 0
    # SIGKILL to a frozen v1 cgroup: the tasks die only once thawed; kill --all must manage.
    assert hc("kill", "--all", cid, "KILL").rc == 0
    assert wait_for(lambda: not procs(paths["pids"]), 5), procs(paths["pids"])
    assert hc.state(cid)["status"] == "stopped"
    assert hc("delete", cid).rc == 0
    # delete --force of a paused container, this time with no kill before it.
    cid = started(hc, config)
    paths = host_paths(hc, cid)
    assert wait_for(lambda: len(procs(paths["pids"])) == 4)
    pids = procs(paths["pids"])
    assert hc("pause", cid).rc == 0
    started_at = time.monotonic()
    result = hc("delete", "--force", cid)
    assert result.rc == 0, result
    assert time.monotonic() - started_at < 5
    assert wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), 5)
    assert all(not os.path.exists(path) for path in paths.values())
    assert hc("state", cid).msg == "container does not exist"


# --- update ---------------------------------------------------------------------------------


def test_update_flags_change_limits_and_the_stored_config(hc: Runtime) -> None:
    config = hc.config(["sleep", "300"])
    config["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}}
    cid = started(hc, config)
    p = host_paths(hc, cid)
    result = hc(
        "update",
        "--memory",
        "80m",
        "--memory-swap",
        "160m",
        "--memory-reservation",
        "40m",
        "--cpu-share",
        "333",
        "--cpu-quota",
        "20000",
        "--cpu-period",
        "50000",
        "--cpuset-cpus",
        "0",
        "--cpuset-mems",
        "0",
        "--pids-limit",
        "42",
        "--blkio-weight",
        "500",
        "--cpu-rt-period",
        "900000",
        "--kernel-memory",
        "",
        cid,
    )
    assert result.rc == 0, result
    assert read(p["memory"] + "/memory.limit_in_bytes") == str(80 << 20)
    assert read(p["memory"] + "/memory.memsw.limit_in_bytes") == str(160 << 20)
    assert read(p["memory"] + "/memory.soft_limit_in_bytes") == str(40 << 20)
    assert read(p["cpu"] + "/cpu.shares") == "333"
    assert read(p["cpu"] + "/cpu.cfs_quota_us") == "20000"
    assert read(p["cpu"] + "/cpu.cfs_period_us") == "50000"
    assert read(p["cpu"] + "/cpu.rt_period_us") == "900000"
    assert read(p["cpuset"] + "/cpuset.cpus") == "0"
    assert read(p["pids"] + "/pids.max") == "42"
    assert inside(hc, cid, "cat /sys/fs/cgroup/pids/pids.max").strip() == "42"
    stored = stored_resources(hc, cid)
    assert stored["memory"] == {"limit": 80 << 20, "swap": 160 << 20, "reservation": 40 << 20}
    assert stored["cpu"] == {
        "shares": 333,
        "quota": 20000,
        "period": 50000,
        "cpus": "0",
        "mems": "0",
        "realtimePeriod": 900000,
    }
    assert stored["pids"] == {"limit": 42}
    assert stored["blockIO"] == {"weight": 500}
    # -1 lifts the memory limit, and memory+swap with it.
    assert hc("update", "--memory", "-1", cid).rc == 0
    assert int(read(p["memory"] + "/memory.limit_in_bytes")) > 1 << 40
    assert int(read(p["memory"] + "/memory.memsw.limit_in_bytes")) > 1 << 40
    assert hc("update", "--pids-limit", "-1", cid).rc == 0
    assert read(p["pids"] + "/pids.max") == "max"


def test_update_resources_file_and_stdin(hc: Runtime, tmp_path: Path) -> None:
    cid = started(hc, hc.config(["sleep", "300"]))
    p = host_paths(hc, cid)
    doc = tmp_path / "r.json"
    doc.write_text(json.dumps({"memory": {"limit": 50 << 20}, "cpu": {"shares": 700}}))
    assert hc("update", "--resources", str(doc), cid).rc == 0
    assert read(p["memory"] + "/memory.limit_in_bytes") == str(50 << 20)
    assert read(p["cpu"] + "/cpu.shares") == "700"
    result = hc("update", "-r", "-", cid, input=json.dumps({"pids": {"limit": 9}}))
    assert result.rc == 0, result
    assert read(p["pids"] + "/pids.max") == "9"
    stored = stored_resources(hc, cid)
    assert stored["memory"]["limit"] == 50 << 20 and stored["pids"] == {"limit": 9}
    assert stored["cpu"]["shares"] == 700


BAD_FLAGS = [
    (["--memory", "lots"], "--memory: invalid value 'lots'"),
    (["--cpu-share", "-5"], "--cpu-share: invalid value '-5'"),
    (["--blkio-weight", "5"], "--blkio-weight: invalid value '5'"),
    (["--cpuset-cpus", "3-1"], "--cpuset-cpus: invalid value '3-1'"),
    (["--pids-limit", "x"], "--pids-limit: invalid value 'x'"),
    (["--cpu-quota", "1.5"], "--cpu-quota: invalid value '1.5'"),
    (["--memory-swap", "1q"], "--memory-swap: invalid value '1q'"),
    (["--l3-cache-schema", "L3:0=f"], "--l3-cache-schema"),
]
WATCHED = [("memory", "memory.limit_in_bytes"), ("pids", "pids.max"), ("cpu", "cpu.shares")]


def test_update_rejects_bad_flags_and_writes_nothing(hc: Runtime) -> None:
    cid = started(hc, hc.config(["sleep", "300"]))
    p = host_paths(hc, cid)
    before = {k: read(p[k[0]] + "/" + k[1]) for k in WATCHED}
    state_before = (hc.root / cid / "state.json").read_text()
    for args, message in BAD_FLAGS:
        # A valid flag next to the bad one must not be written either.
        result = hc("update", "--memory", "70m", "--pids-limit", "11", *args, cid)
        assert result.rc == 1
        assert message in result.msg, result
        assert {k: read(p[k[0]] + "/" + k[1]) for k in WATCHED} == before
        assert (hc.root / cid / "state.json").read_text() == state_before


def test_update_bad_json_and_stopped_container(hc: Runtime) -> None:
    cid = started(hc, hc.config(["sleep", "300"]))
    bad = hc("update", "-r", "-", cid, input='{"memory": {"limit": "big"}}')
    assert bad.rc == 1 and "--resources.memory.limit" in bad.msg, bad
    bad = hc("update", "-r", "-", cid, input='{"memory": ')
    assert bad.rc == 1 and "--resources" in bad.msg, bad
    refused = hc("update", "--cpu-share", "1", cid)
    assert refused.rc == 1 and "cpu.shares: 1" in refused.msg, refused
    assert "cpu" not in stored_resources(hc, cid)
    assert hc("kill", cid, "KILL").rc == 0
    assert wait_for(lambda: hc.state(cid)["status"] == "stopped")
    assert hc("update", "--memory", "10m", cid).msg == "container not running"
    assert hc("update", "--memory", "10m", "nope-" + cid).msg == "container does not exist"


# --- ps and events --stats ------------------------------------------------------------------


def test_ps_json_and_table(hc: Runtime) -> None:
    cid = started(hc, hc.config(["sh", "-c", "sleep 301 & sleep 302 & wait"]))
    p = host_paths(hc, cid)
    assert wait_for(lambda: len(procs(p["pids"])) == 3)
    result = hc("ps", "--format", "json", cid)
    assert result.rc == 0, result
    pids = json.loads(result.out)
    assert sorted(pids) == sorted(procs(p["pids"]))
    assert hc.state(cid)["pid"] in pids
    table = hc("ps", cid)
    assert table.rc == 0, table
    lines = table.out.splitlines()
    assert lines[0].split()[:2] == ["UID", "PID"]
    assert sorted(int(line.split()[1]) for line in lines[1:]) == sorted(pids)
    assert any("sleep 301" in line for line in lines)
    custom = hc("ps", cid, "-o", "pid,comm")
    assert custom.rc == 0, custom
    rows = custom.out.splitlines()
    assert rows[0].split() == ["PID", "COMMAND"]
    assert sorted(int(r.split()[0]) for r in rows[1:]) == sorted(pids)
    assert {r.split()[1] for r in rows[1:]} == {"sh", "sleep"}
    assert hc("ps", "--format", "yaml", cid).msg == "invalid format option"
    nopid = hc("ps", cid, "-o", "comm")
    assert nopid.rc == 1 and "couldn't find PID field in ps output" in nopid.msg
    assert hc("ps", "nope-" + cid).msg == "container does not exist"


def test_events_stats_fields(hc: Runtime) -> None:
    config = hc.config(["sh", "-c", "x=$(head -c 3000000 /dev/zero | tr '\\0' a); sleep 300"])
    config["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 40}}
    has_hugetlb = hugetlb_v1() or hugetlb_on_unified()
    if has_hugetlb:
        config["linux"]["resources"]["hugepageLimits"] = [{"pageSize": "2MB", "limit": 0}]
    cid = started(hc, config)
    pid = hc.state(cid)["pid"]
    wait_for(lambda: read(f"/proc/{pid}/comm") == "sleep", what="the allocation to be over")
    result = hc("events", "--stats", cid)
    assert result.rc == 0, result
    assert result.out.count("\n") == 1
    assert result.out.startswith(f'{{"type":"stats","id":"{cid}","data":{{')
    event = json.loads(result.out)
    data = event["data"]
    for key in ("cpu", "memory", "pids", "blkio", "hugetlb"):
        assert key in data, key
    assert data["cpu"]["usage"]["total"] > 0
    assert "percpu" in data["cpu"]["usage"]
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert data["memory"]["usage"]["usage"] > 0
    assert data["pids"] == {"current": 1, "limit": 40}
    if has_hugetlb:
        assert "failcnt" in data["hugetlb"]["2MB"]
    assert set(data["blkio"]) <= {
        "ioServiceBytesRecursive",
        "ioServicedRecursive",
        "ioQueueRecursive",
        "ioServiceTimeRecursive",
        "ioWaitTimeRecursive",
        "ioMergedRecursive",
        "ioTimeRecursive",
        "sectorsRecursive",
    }


def test_events_stream_interval_and_end(hc: Runtime) -> None:
    cid = started(hc, hc.config(["sleep", "300"]))
    began = time.monotonic()
    events = Events(hc, "--interval", "150ms", cid)
    try:
        for _ in range(3):
            events.next("stats")
        # The n-th stats event comes n intervals after the stream began, never sooner.
        assert time.monotonic() - began >= 3 * 0.15
        assert events.proc.poll() is None
        assert hc("kill", cid, "KILL").rc == 0
        assert events.finish(10) == 0, events.err  # the stream ends when the container stops
        ended = time.monotonic()
    finally:
        events.close()
    lines = events.seen
    assert 3 <= len(lines) <= (ended - began) / 0.15, lines
    assert all(e["type"] == "stats" and e["id"] == cid and "data" in e for e in lines)
    stopped = hc("events", "--stats", cid)
    assert stopped.rc == 1 and stopped.msg == f"container with id {cid} is not running"
    assert hc("events", "--interval", "0s", cid).msg == "duration interval must be greater than 0"
    assert "parse error" in hc("events", "--interval", "soon", cid).msg


# --- clean-up on every controller -----------------------------------------------------------


def test_delete_removes_every_cgroup(hc: Runtime) -> None:
    config = hc.config(["sh", "-c", "sleep 300 & sleep 300 & wait"])
    config["linux"]["cgroupsPath"] = "/handcar-cgt-" + os.urandom(3).hex() + "/inner/leaf"
    cid = started(hc, config)
    paths = host_paths(hc, cid)
    top = config["linux"]["cgroupsPath"].split("/")[1]
    hierarchies = [d for d in os.listdir(CG) if os.path.isdir(f"{CG}/{d}")]
    for name in hierarchies:
        if name != "systemd" or os.path.exists(f"{CG}/{name}/{top}"):
            assert os.path.isdir(f"{CG}/{name}/{top}/inner/leaf"), name
    assert set(paths) >= {
        "memory",
        "cpu",
        "cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "blkio",
        "pids",
        "",
    }
    assert hc("delete", "--force", cid).rc == 0
    for name in hierarchies:
        assert not os.path.exists(f"{CG}/{name}/{top}"), name  # parents it made go too


# --- cgroupsPath forms and --systemd-cgroup -------------------------------------------------


def _own_cgroup(controller: str) -> str:
    for line in read("/proc/self/cgroup").splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    raise AssertionError(controller)


def test_cgroups_path_absolute_relative_and_default(hc: Runtime) -> None:
    name = "handcar-cgt-" + os.urandom(3).hex()
    config = hc.config(["sleep", "300"])
    config["linux"]["cgroupsPath"] = "/" + name
    cid = hc.create(config)
    assert host_paths(hc, cid)["memory"] == f"{CG}/memory/{name}"
    pid = hc.state(cid)["pid"]
    assert f"memory:/{name}\n" in Path(f"/proc/{pid}/cgroup").read_text()
    assert hc("delete", "--force", cid).rc == 0
    # Relative: below the runtime's own cgroup (the test runner's, inherited by handcar).
    config["linux"]["cgroupsPath"] = name + "/sub"
    cid = hc.create(config)
    own = _own_cgroup("memory").rstrip("/")
    assert host_paths(hc, cid)["memory"] == f"{CG}/memory{own}/{name}/sub"
    assert hc("delete", "--force", cid).rc == 0
    assert not os.path.exists(f"{CG}/memory{own}/{name}")
    # Missing: the container id, relative.
    del config["linux"]["cgroupsPath"]
    cid = hc.create(config)
    assert host_paths(hc, cid)["pids"] == f"{CG}/pids{_own_cgroup('pids').rstrip('/')}/{cid}"


def test_systemd_cgroup_falls_back_to_cgroupfs_at_systemds_path(hc: Runtime) -> None:
    config = hc.config(["sleep", "300"])
    name = "hct" + os.urandom(3).hex()
    config["linux"]["cgroupsPath"] = f"machine-{name}.slice:handcar:{name}"
    bundle = hc.bundle(config)
    cid = hc.new_id()
    result = hc("--systemd-cgroup", "create", "--bundle", str(bundle), cid)
    assert result.rc == 0, result
    want = f"/machine.slice/machine-{name}.slice/handcar-{name}.scope"
    assert host_paths(hc, cid)["memory"] == f"{CG}/memory{want}"
    pid = hc.state(cid)["pid"]
    assert f"pids:{want}\n" in Path(f"/proc/{pid}/cgroup").read_text()
    assert hc("delete", "--force", cid).rc == 0
    assert not os.path.exists(f"{CG}/memory/machine.slice/machine-{name}.slice")
    config["linux"]["cgroupsPath"] = "not-a-slice-path"
    bundle = hc.bundle(config)
    bad = hc("--systemd-cgroup", "create", "--bundle", str(bundle), hc.new_id())
    assert bad.rc == 1 and 'expected cgroupsPath to be of format "slice:prefix:name"' in bad.msg


# --- the cgroup namespace and mount ---------------------------------------------------------


def test_cgroup_namespace_and_read_only_mount(hc: Runtime) -> None:
    config = hc.config(["sleep", "300"])
    config["linux"]["namespaces"].append({"type": "cgroup"})
    cid = started(hc, config)
    pid = hc.state(cid)["pid"]
    assert os.readlink(f"/proc/{pid}/ns/cgroup") != os.readlink("/proc/self/ns/cgroup")
    lines = inside(hc, cid, "cat /proc/self/cgroup").splitlines()
    assert lines and all(line.endswith(":/") for line in lines), lines
    listing = inside(hc, cid, "ls /sys/fs/cgroup").split()
    for controller in ("memory", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "pids"):
        assert controller in listing
    mounts = inside(hc, cid, "grep ' /sys/fs/cgroup/' /proc/self/mounts")
    assert "/sys/fs/cgroup/memory cgroup ro," in mounts
    # The namespace root is the container's cgroup: its own files, its own limit.
    # (the exec'd shell is in it too, with a small pid of the container's namespace).
    seen = [int(x) for x in inside(hc, cid, "cat /sys/fs/cgroup/pids/cgroup.procs").split()]
    assert seen[0] == 1 and all(x < 100 for x in seen), seen
    write = hc("exec", cid, "sh", "-c", "echo 5 > /sys/fs/cgroup/pids/pids.max")
    assert write.rc != 0 and "Read-only file system" in write.err


def test_cgroup_mount_without_namespace_shows_own_cgroup(hc: Runtime) -> None:
    cid = started(hc, hc.config(["sleep", "300"]))
    pid = hc.state(cid)["pid"]
    # Without a cgroup namespace the paths are the host's, but the mount shows the container's
    # own directory (as runc bind-mounts it): cgroup.procs holds just the init (as pid 1).
    assert "memory:/" in Path(f"/proc/{pid}/cgroup").read_text()
    seen = [int(x) for x in inside(hc, cid, "cat /sys/fs/cgroup/memory/cgroup.procs").split()]
    assert seen[0] == 1 and all(x < 100 for x in seen), seen
    listing = inside(hc, cid, "ls /sys/fs/cgroup").split()
    assert "memory" in listing and "pids" in listing


# --- cgroup2 at the container level (the hybrid host's unified hierarchy) --------------------


def test_unified_hierarchy_freeze_and_kill_at_container_level(hc: Runtime) -> None:
    """The container's cgroup2 directory (key "" on a hybrid host): its processes are there,
    `cgroup.kill` empties it, and freezing it stops the container."""
    cid = started(hc, hc.config(["sh", "-c", "sleep 300 & sleep 300 & wait"]))
    unified = host_paths(hc, cid)[""]
    assert unified.startswith(UNIFIED + "/")
    assert wait_for(lambda: len(procs(unified)) == 3)
    pids = procs(unified)
    with open(unified + "/cgroup.freeze", "w") as f:
        f.write("1")
    assert wait_for(lambda: "frozen 1" in read(unified + "/cgroup.events"))
    assert all(Path(f"/proc/{p}/stat").read_text().split(") ")[1][0] in "SD" for p in pids)
    with open(unified + "/cgroup.freeze", "w") as f:
        f.write("0")
    with open(unified + "/cgroup.kill", "w") as f:
        f.write("1")
    assert wait_for(lambda: not procs(unified), 5)
    assert wait_for(lambda: hc.state(cid)["status"] == "stopped")
    assert hc("delete", cid).rc == 0
    assert not os.path.exists(unified)


def test_no_container_cgroups_left(hc: Runtime) -> None:
    """A last sweep: nothing named like a test container or cgroup is left anywhere."""
    assert not leaked_cgroups(hc.ids)
    left = [
        f"{CG}/{h}/{n}"
        for h in os.listdir(CG)
        if os.path.isdir(f"{CG}/{h}")
        for n in os.listdir(f"{CG}/{h}")
        if n.startswith("handcar-cgt-")
    ]
    assert not left
