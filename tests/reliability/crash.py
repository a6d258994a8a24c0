"""Crash safety: SIGKILL a large apply at random moments; the database must hold exactly the state
before or exactly the state after, the next apply must converge, and history must not gain an
entry for an apply that did not commit.

Each trial flips between two large manifest sets (``manifest_sets``), so every killed apply
creates, updates and deletes thousands of rows in one transaction. Half the kills land anywhere in
the run of the process; the other half land at a random moment inside the write transaction
(found by watching for it), where a crash is most dangerous.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO
from tests.reliability.dbstate import WriteWatch, dangling_apply_ids, dump_state, history_rows
from tests.reliability.manifest_sets import write_set

# watching for the write transaction: SQLite's is 0.02 s at 600 resources since apply writes through
# sqlite3, and polls 5 ms apart (longer under load) let all ten in-transaction kills of a run miss it
TRANSACTION_POLL_SECONDS = 0.0005


@dataclass
class CrashReport:
    backend: str
    resources: int
    changes_per_apply: int = 0
    trials: int = 0
    apply_seconds: float = 0.0  # one uninterrupted apply process, start to exit
    transaction_seconds: float = 0.0  # how long its write transaction was seen open
    outcomes: Counter[str] = field(default_factory=Counter)  # before | after | finished
    killed_mid_transaction: int = 0  # a write transaction was open at the moment of the kill
    converged: int = 0
    violations: list[str] = field(default_factory=list)


def _apply_command(manifests: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", "apply", str(manifests), "--db", url, "--auto-approve", "--allow-mass-delete", "--lock-timeout", "120"]


def _spawn(manifests: Path, url: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(_apply_command(manifests, url), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def apply_in_process(manifests: Path, url: str) -> str:
    """The real CLI entry point, in this process (saves the interpreter start-up); returns stdout."""
    from reconciler.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["apply", str(manifests), "--db", url, "--auto-approve", "--allow-mass-delete"])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise AssertionError(f"apply failed: {err.getvalue()[-2000:]}") from None
    return out.getvalue()


def _calibrate(manifests: Path, url: str, cwd: Path, watch: WriteWatch) -> tuple[float, float]:
    """(process seconds, write-transaction seconds) of one uninterrupted apply: the first write
    transaction, the apply's own (after its commit, validating the providers writes their status in
    small transactions of its own; spanning those too once made the "in-transaction" kills land
    after the commit)."""
    started = time.perf_counter()
    proc = _spawn(manifests, url, cwd)
    first = last = None
    ended = False  # the first write transaction has ended
    while proc.poll() is None:
        if not ended:
            if watch.writing():
                now = time.perf_counter()
                first = first or now
                last = now
            elif first is not None:
                ended = True
        time.sleep(TRANSACTION_POLL_SECONDS)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise AssertionError("the calibration apply failed")
    return total, (last - first) if first and last else 0.0


def _kill_at_random(proc: subprocess.Popen[bytes], watch: WriteWatch, rng: random.Random, report: CrashReport, in_transaction: bool) -> None:
    if in_transaction:
        deadline = time.perf_counter() + 2 * report.apply_seconds
        while proc.poll() is None and not watch.writing() and time.perf_counter() < deadline:
            time.sleep(TRANSACTION_POLL_SECONDS)
        # within the calibrated transaction (faster applies left too few kills inside it at 1.1x under load)
        delay = rng.uniform(0, 0.9 * report.transaction_seconds)
    else:
        delay = rng.uniform(0, report.apply_seconds)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        report.killed_mid_transaction += watch.writing()
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def run_crash_trials(url: str, workdir: Path, *, resources: int, trials: int, seed: int = 7) -> CrashReport:
    """Kill ``trials`` applies of ``resources`` resources at random moments; check every outcome."""
    rng = random.Random(seed)
    report = CrashReport("sqlite" if url.startswith("sqlite") else "postgresql", resources)
    sets = [write_set(workdir / f"set{v}", resources, v) for v in (0, 1)]
    apply_in_process(sets[0], url)
    dumps = [dump_state(url), {}]
    watch = WriteWatch(url)
    try:
        report.apply_seconds, report.transaction_seconds = _calibrate(sets[1], url, workdir, watch)
        dumps[1] = dump_state(url)
        last = history_rows(url)[-1]
        report.changes_per_apply = sum(last[2:])
        current = 1
        for trial in range(trials):
            target = 1 - current
            before_history = history_rows(url)
            proc = _spawn(sets[target], url, workdir)
            _kill_at_random(proc, watch, rng, report, in_transaction=trial % 2 == 1)
            state, history = dump_state(url), history_rows(url)
            if state == dumps[current]:
                outcome = "before"
                if history != before_history:
                    report.violations.append(f"trial {trial}: state unchanged but history went {len(before_history)} -> {len(history)}")
            elif state == dumps[target]:
                outcome = "after"
                if len(history) != len(before_history) + 1 or history[:-1] != before_history:
                    report.violations.append(f"trial {trial}: applied but history went {len(before_history)} -> {len(history)}")
            else:
                outcome = "mixed"
                report.violations.append(f"trial {trial}: the database is neither the state before nor the state after")
            report.outcomes["finished" if proc.returncode == 0 else outcome] += 1
            if dangling_apply_ids(url):
                report.violations.append(f"trial {trial}: bookkeeping names an apply missing from the history")
            # the next apply converges, recording one entry only if there was something left to do
            apply_in_process(sets[target], url)
            if dump_state(url) == dumps[target] and len(history_rows(url)) == len(history) + (outcome == "before"):
                report.converged += 1
            else:
                report.violations.append(f"trial {trial}: the apply after the kill did not converge")
            report.trials += 1
            current = target
    finally:
        watch.close()
    return report
