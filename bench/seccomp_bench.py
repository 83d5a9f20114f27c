"""Time handcar's seccomp work on podman's default profile, side by side with runc's.

handcar: compile cold (fresh process, no cache), compile cached (fresh process, warm cache),
and load_filter in a forked child. runc: the median `runc run` of /bin/true with the same
seccomp section minus the median without it, which is what seccomp costs runc per container.

Usage: python bench/seccomp_bench.py [--runs N]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, SRC)

from handcar.seccomp import compile as seccomp  # noqa: E402
from handcar.seccomp.load import load_filter  # noqa: E402

PROFILE = Path("/usr/share/containers/seccomp.json")
BUSYBOX = "/bin/busybox"
PODMAN_CAPS = "CHOWN DAC_OVERRIDE FOWNER FSETID KILL NET_BIND_SERVICE SETFCAP SETGID SETPCAP SETUID"
CAPS = [f"CAP_{name}" for name in (PODMAN_CAPS + " SYS_CHROOT").split()]


def podman_section() -> dict[str, object]:
    """podman's amd64 OCI section from its engine profile (archMap, includes/excludes by caps)."""
    profile = json.loads(PROFILE.read_text())
    arches = next(
        [m["architecture"], *m["subArchitectures"]]
        for m in profile["archMap"]
        if m["architecture"] == "SCMP_ARCH_X86_64"
    )
    syscalls = []
    for call in profile["syscalls"]:
        inc, exc = call.get("includes") or {}, call.get("excludes") or {}
        if inc.get("arches") and "amd64" not in inc["arches"]:
            continue
        if not set(inc.get("caps") or []) <= set(CAPS) or set(exc.get("caps") or []) & set(CAPS):
            continue
        rule = {k: call[k] for k in ("names", "action", "errnoRet", "args") if call.get(k)}
        syscalls.append(rule)
    return {
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "architectures": arches,
        "syscalls": syscalls,
    }


# A fresh interpreter per sample, timed from before `import handcar.seccomp` to the result, so
# the library load and the module import are counted as a real `handcar create` would pay them.
_FRESH = """
import sys, time, json
section = json.loads(sys.stdin.read())  # the runtime has parsed config.json already
t0 = time.perf_counter()
sys.path.insert(0, {src!r})
from handcar.seccomp import compile as seccomp  # noqa: E402
compiled = seccomp.compile_filter(section, cache_dir={cache!r})
print((time.perf_counter() - t0) * 1e3)
"""


def fresh_compile_ms(section_json: str, cache: str | bool, runs: int) -> float:
    samples = []
    for _ in range(runs):
        code = _FRESH.format(src=SRC, cache=cache)
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code],
            input=section_json,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        samples.append(float(out))
    return statistics.median(samples)


def fresh_import_ms(module: str, runs: int) -> float:
    """What a fresh process pays to import a module: the part of the fresh-process compile that
    the runtime pays anyway (os, ctypes, handcar.linux) is measured this way and subtracted."""
    code = f"import sys, time\nt0 = time.perf_counter()\nsys.path.insert(0, {SRC!r})\n"
    code += f"import {module}\nprint((time.perf_counter() - t0) * 1e3)"
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
        ).stdout
        samples.append(float(out))
    return statistics.median(samples)


def in_process_ms(section: dict[str, object], cache: str | bool, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        seccomp.compile_filter(section, cache_dir=cache)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def load_ms(compiled: seccomp.CompiledFilter, runs: int) -> float:
    samples = []
    for _ in range(runs):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_end)
                from handcar import linux

                linux.set_no_new_privs()
                t0 = time.perf_counter()
                load_filter(compiled)
                os.write(write_end, str((time.perf_counter() - t0) * 1e3).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        samples.append(float(os.read(read_end, 64)))
        os.close(read_end)
        os.waitpid(pid, 0)
    return statistics.median(samples)


def runc_bundle(root: Path, section: dict[str, object] | None) -> Path:
    rootfs = root / "rootfs"
    for name in ("bin", "proc", "dev", "sys"):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    subprocess.run(["runc", "spec", "--bundle", str(root)], check=True)
    config = json.loads((root / "config.json").read_text())
    config["process"].update(terminal=False, args=["/bin/busybox", "true"])
    if section is not None:
        config["linux"]["seccomp"] = section
    (root / "config.json").write_text(json.dumps(config))
    return root


def runc_run_ms(with_seccomp: Path, without: Path, runs: int) -> tuple[float, float]:
    """Interleave the two configurations so drift on a shared machine hits both alike."""
    timings: dict[Path, list[float]] = {with_seccomp: [], without: []}
    for i in range(runs):
        for bundle in (with_seccomp, without):
            name = f"hc-bench-{os.getpid()}-{i}"
            t0 = time.perf_counter()
            subprocess.run(
                ["runc", "run", "--bundle", str(bundle), name],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
            timings[bundle].append((time.perf_counter() - t0) * 1e3)
            subprocess.run(["runc", "delete", "--force", name], capture_output=True)
    return statistics.median(timings[with_seccomp]), statistics.median(timings[without])


def main() -> None:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 15
    section = podman_section()
    section_json = json.dumps(section)
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        compiled = seccomp.compile_filter(section, cache_dir=cache)  # warms the cache
        rows = {
            "compile cold, fresh process": fresh_compile_ms(section_json, False, runs),
            "compile cached, fresh process": fresh_compile_ms(section_json, cache, runs),
            "  of which importing handcar.linux": fresh_import_ms("handcar.linux", runs),
            "compile cold, in process": in_process_ms(section, False, runs),
            "compile cached, in process": in_process_ms(section, cache, runs),
            "load_filter in the child": load_ms(compiled, runs),
        }
        have_runc = shutil.which("runc") and os.path.exists(BUSYBOX)
        if have_runc:
            with_s = runc_bundle(Path(tmp) / "with", section)
            without = runc_bundle(Path(tmp) / "without", None)
            runc_with, runc_without = runc_run_ms(with_s, without, runs)
    entries = len(section["syscalls"])  # type: ignore[arg-type]
    insns = len(compiled.program) // 8
    version = seccomp.libseccomp_version()
    print(f"podman default profile: {entries} entries, {insns} BPF insns, libseccomp {version}")
    print(f"medians of {runs} runs (ms)")
    for label, value in rows.items():
        print(f"  {label:<34} {value:8.2f}")
    own_cached = rows["compile cached, fresh process"] - rows["  of which importing handcar.linux"]
    cached_total = own_cached + rows["load_filter in the child"]
    cold_total = rows["compile cold, in process"] + rows["load_filter in the child"]
    print(f"  handcar per container, cached      {cached_total:8.2f}  (beyond handcar.linux)")
    print(f"  handcar per container, cold        {cold_total:8.2f}")
    if not have_runc:
        print("runc or busybox missing: no comparison")
        return
    runc_cost = runc_with - runc_without
    print(f"  runc run /bin/true with seccomp    {runc_with:8.2f}")
    print(f"  runc run /bin/true without         {runc_without:8.2f}")
    print(f"  runc's seccomp overhead            {runc_cost:8.2f}")
    if runc_cost > 0:
        print(f"ratio handcar cached / runc: {cached_total / runc_cost:.3f}")
        print(f"ratio handcar cold / runc:   {cold_total / runc_cost:.3f}")
    speedup = rows["compile cold, in process"] / rows["compile cached, in process"]
    print(f"cache pays: a cold compile costs {speedup:.0f}x a cached read")


if __name__ == "__main__":
    main()
