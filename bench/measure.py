"""Run one command as a child process and record its wall time, CPU time and peak memory."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One timed run of one measure."""

    tool: str  # "reconciler-sqlite" | "reconciler-postgresql" | "terraform"
    measure: str
    n: int
    rep: int
    seconds: float
    cpu_seconds: float  # user + system: less sensitive than wall time to other work on the machine
    max_rss_mib: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CommandFailed(RuntimeError):
    pass


def run_timed(
    argv: list[str], *, cwd: Path, env: dict[str, str], ok_codes: tuple[int, ...] = (0,), log: Path | None = None
) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MiB) of ``argv``; raises CommandFailed on another exit code.

    ``os.wait4`` gives the rusage of exactly this child, so runs never mix their peaks."""
    log = log or cwd / "last-command.log"
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in ok_codes:
        tail = log.read_text(errors="replace")[-2000:]
        raise CommandFailed(f"{' '.join(argv[:4])}... exited {proc.returncode} in {cwd}:\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux
