"""Shared helpers of the benchmarks: measured subprocess runs and machine information."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

__all__ = ["Measured", "run_measured", "machine_info", "count_lines", "REPO"]

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Measured:
    """One child process run: wall and CPU time, peak resident memory."""

    cmd: list[str]
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    #: ru_maxrss of the command (wait4 in a ~10 MB launcher), bytes. Exact: Linux charges a
    #: child with the high-water mark of the process it was forked from, so the command is
    #: forked from the small launcher rather than from the harness.
    peak_rss_kernel: int
    #: VmHWM of the launcher when it forked the command (the floor under `peak_rss_kernel`), bytes.
    launcher_rss: int
    #: Sum over the command's processes (helpers included) of each one's highest VmHWM read
    #: from /proc/PID/status (polled every `poll_s`): each process's own exact peak, so a
    #: short-lived helper is counted at its peak even if no poll saw it at that moment.
    peak_rss_hwm: int
    #: Highest sum of RSS over the command and its descendants, polled every `poll_s`.
    peak_rss_polled: int
    polls: int
    stderr_tail: str = ""
    samples: list[tuple[float, int]] = field(default_factory=list)
    #: 1-minute load average of the machine when the command started and ended.
    load_before: float = 0.0
    load_after: float = 0.0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def peak_rss(self) -> int:
        """Peak resident memory of the command, bytes: the kernel's exact high-water mark,
        or the polled sum over its process tree when that is larger (multi-process commands)."""
        return max(self.peak_rss_kernel, self.peak_rss_hwm, self.peak_rss_polled)

    def record(self) -> dict:
        d = asdict(self)
        d.update(cpu_s=round(self.cpu_s, 3), peak_rss=self.peak_rss)
        return d


# Forks and execs the command, waits for it with wait4 and writes its rusage as JSON to
# argv[1]. Runs with `python -S` so that its own high-water mark stays ~10 MB.
_LAUNCHER = r"""
import os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
floor = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        floor = int(line.split()[1])
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        os.write(2, ("cannot run %r: %s\n" % (cmd[0], exc)).encode())
    os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as f:
    f.write('{"wall": %r, "user": %r, "sys": %r, "maxrss_kb": %d, "launcher_maxrss_kb": %d, "status": %d}'
            % (wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss, floor, status))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def _hwm(pid: int) -> int:
    """VmHWM of a process in bytes (0 if unknown)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_measured(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None,
                 stdout_path: Path | None = None, stderr_path: Path | None = None,
                 poll_s: float = 0.05, sample_every_s: float = 1.0) -> Measured:
    """Run `cmd` to completion in a fresh process and measure it alone."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
    load_before = os.getloadavg()[0]
    fd, ru_path = tempfile.mkstemp(prefix="bench-rusage-", suffix=".json")
    os.close(fd)
    try:
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, ru_path, *map(str, cmd)],
                                cwd=cwd, env=env, stdout=out, stderr=err)
        launcher = psutil.Process(proc.pid)
        done = threading.Event()
        state = {"peak": 0, "hwm": {}, "polls": 0, "samples": []}
        t0 = time.perf_counter()

        def poll() -> None:
            next_sample = 0.0
            while not done.is_set():
                rss = 0
                try:
                    kids = launcher.children(recursive=True)
                except psutil.Error:
                    kids = []
                for k in kids:
                    try:
                        rss += k.memory_info().rss
                    except psutil.Error:
                        continue
                    state["hwm"][k.pid] = max(state["hwm"].get(k.pid, 0), _hwm(k.pid))
                state["polls"] += 1
                state["peak"] = max(state["peak"], rss)
                now = time.perf_counter() - t0
                if now >= next_sample:
                    state["samples"].append((round(now, 2), rss))
                    next_sample = now + sample_every_s
                done.wait(poll_s)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        proc.wait()
        done.set()
        th.join()
        try:
            ru = json.loads(Path(ru_path).read_text())
        except (OSError, ValueError):
            ru = {"wall": time.perf_counter() - t0, "user": 0.0, "sys": 0.0, "maxrss_kb": 0,
                  "launcher_maxrss_kb": 0, "status": proc.returncode}
    finally:
        for f in (out, err):
            if f is not subprocess.DEVNULL:
                f.close()
        Path(ru_path).unlink(missing_ok=True)
    tail = ""
    if stderr_path and stderr_path.exists():
        tail = stderr_path.read_bytes()[-2000:].decode("utf-8", "replace")
    return Measured(cmd=[str(c) for c in cmd], returncode=proc.returncode, wall_s=round(ru["wall"], 3),
                    user_s=round(ru["user"], 3), sys_s=round(ru["sys"], 3),
                    peak_rss_kernel=ru["maxrss_kb"] * 1024, launcher_rss=ru["launcher_maxrss_kb"] * 1024,
                    peak_rss_hwm=sum(state["hwm"].values()), peak_rss_polled=state["peak"], polls=state["polls"],
                    stderr_tail=tail, samples=state["samples"], load_before=load_before,
                    load_after=os.getloadavg()[0])


class Pace:
    """Iterate 0..n-1, each index at `rate` per second from the start of the loop; `late`
    counts the indices that came more than 10 ms behind schedule (the machine could not
    keep the rate)."""

    def __init__(self, n: int, rate: float) -> None:
        self.n, self.rate, self.late = n, rate, 0

    def __iter__(self):
        t0 = time.perf_counter()
        for i in range(self.n):
            wait = t0 + i / self.rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.01:
                self.late += 1
            yield i


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            n += chunk.count(b"\n")
    return n


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:
        return None


def _git() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "dirty_files": len(git("status", "--porcelain").splitlines())}


def machine_info() -> dict:
    vm = psutil.virtual_memory()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": affinity,
        "ram_bytes": vm.total,
        "ram_gib": round(vm.total / 2**30, 1),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "bytewax": _version("bytewax"),
        "orjson": _version("orjson"),
        "loadavg": os.getloadavg(),
        "git": _git(),
    }
