"""Run one command as a child process and record its wall time, CPU time and peak memory."""

from __future__ import annotations

import math
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One timed run of one measure."""

    tool: str  # "reconciler-sqlite" | "reconciler-postgresql" | "terraform" | "terraform-count"
    measure: str
    n: int
    rep: int
    seconds: float
    cpu_seconds: float  # user + system: less sensitive than wall time to other work on the machine
    max_rss_mib: float
    # the machine's 1-minute load average just before and just after the run (None in old results)
    load_before: float | None = None
    load_after: float | None = None
    probe_ms: float | None = None  # speed_probe() just before the run (None in old results)
    run: str = ""  # which `python -m bench` run measured it (its start time): ratios pair only within one run

    @property
    def load(self) -> float | None:
        """The load average during the run: the larger of the two readings."""
        readings = [x for x in (self.load_before, self.load_after) if x is not None]
        return max(readings) if readings else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CommandFailed(RuntimeError):
    pass


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def speed_probe() -> float:
    """Milliseconds a fixed piece of pure-Python work takes now (the best of three tries).

    The load average does not show everything: on this shared virtual machine the same command's
    CPU time has doubled within minutes at a load of 0.6 (the host's other tenants, its clock). The
    probe is taken before each timed run, so every figure says how fast the CPU was just before it:
    at this machine's fastest it is about 6 ms, and twice that means a host running at half speed.
    It samples one moment: the host's speed has changed within seconds, so a low probe does not
    prove the run after it was fast."""
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(_PROBE_STEPS):
            total += i * i % 7
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 2)


_PROBE_STEPS = 100_000

Timing = tuple[float, float, float, float | None, float | None, float | None]  # wall s, CPU s, peak RSS MiB, load before, after, probe ms


def run_timed(argv: list[str], *, cwd: Path, env: dict[str, str], ok_codes: tuple[int, ...] = (0,), log: Path | None = None) -> Timing:
    """(wall seconds, CPU seconds, peak RSS in MiB, load before, load after, speed probe before) of
    ``argv``; raises CommandFailed on another exit code.

    ``os.wait4`` gives the rusage of exactly this child, so runs never mix their peaks."""
    log = log or cwd / "last-command.log"
    probe = speed_probe()
    before = load_average()
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in ok_codes:
        tail = log.read_text(errors="replace")[-2000:]
        raise CommandFailed(f"{' '.join(argv[:4])}... exited {proc.returncode} in {cwd}:\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, before, load_average(), probe  # ru_maxrss is KiB on Linux
