"""Concurrency: several applies of different manifest sets started at once on one database, and
``watch --self-heal`` running while people apply. Applies must serialise on the lock: each either
succeeds or fails with the documented lock-timeout message, the final state is exactly one of the
sets, and history holds one entry per successful apply (and nothing for a failed one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO
from tests.reliability.crash import apply_in_process
from tests.reliability.dbstate import dangling_apply_ids, dump_state, history_rows
from tests.reliability.manifest_sets import write_set

LOCK_TIMEOUT_MESSAGE = "another apply holds the state lock"


@dataclass
class ConcurrencyReport:
    backend: str
    rounds: int = 0
    applies_started: int = 0
    applies_succeeded: int = 0
    applies_recorded: int = 0  # succeeded and changed something (so history has an entry)
    lock_timeouts: int = 0
    watch_reconciles: int = 0
    violations: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _start_apply(manifests: Path, url: str, cwd: Path, lock_timeout: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", str(manifests), "--db", url, "--auto-approve", "--allow-mass-delete", "--lock-timeout", str(lock_timeout)],
        cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _reference_dumps(sets: list[Path], url: str) -> dict[str, object]:
    """Each set's exact state, reached by applying it (dumps do not depend on the path taken)."""
    refs = {}
    for s in sets:
        apply_in_process(s, url)
        refs[str(s)] = dump_state(url)
    return refs


def _check_round(report: ConcurrencyReport, url: str, procs: list[tuple[Path, subprocess.Popen[str]]], before: int) -> list[str]:
    """Collect one round of applies; returns the sources of the successful ones."""
    succeeded = []
    for manifests, proc in procs:
        out, err = proc.communicate(timeout=600)
        report.applies_started += 1
        if proc.returncode == 0:
            report.applies_succeeded += 1
            if "Apply complete" in out:  # otherwise the database already matched: nothing to record
                succeeded.append(str(manifests))
                report.applies_recorded += 1
        elif proc.returncode == 1 and LOCK_TIMEOUT_MESSAGE in err and "Traceback" not in err:
            report.lock_timeouts += 1
        else:
            report.violations.append(f"apply of {manifests.name} failed unexpectedly (exit {proc.returncode}): {err[-500:]}")
    new = history_rows(url)[before:]
    if sorted(r[1] for r in new) != sorted(succeeded):
        report.violations.append(f"history gained {[r[1] for r in new]} for successful applies {succeeded}")
    if any(sum(r[2:]) == 0 for r in new):
        report.violations.append("history holds an entry that changed nothing")
    if dangling_apply_ids(url):
        report.violations.append("bookkeeping names an apply missing from the history")
    return succeeded


def run_concurrent_applies(url: str, workdir: Path, *, parallel: int, rounds: int, resources: int, lock_timeout: float) -> ConcurrencyReport:
    """``rounds`` times, start ``parallel`` applies of different sets at once and check the outcome."""
    report = ConcurrencyReport("sqlite" if url.startswith("sqlite") else "postgresql")
    sets = [write_set(workdir / f"set{v}", resources, v) for v in range(parallel)]
    refs = _reference_dumps(sets, url)
    for _ in range(rounds):
        before = len(history_rows(url))
        procs = [(s, _start_apply(s, url, workdir, lock_timeout)) for s in sets]
        succeeded = _check_round(report, url, procs, before)
        last = history_rows(url)[-1][1]
        if succeeded and last not in succeeded:
            report.violations.append("the newest history entry is not one of this round's applies")
        if dump_state(url) != refs[last]:
            report.violations.append(f"the final state is not exactly the set of the last apply ({last})")
        report.rounds += 1
        sets.append(sets.pop(0))  # start them in a different order next round
    return report


def run_watch_against_applies(url: str, workdir: Path, *, applies: int, resources: int) -> ConcurrencyReport:
    """``watch`` reconciles a directory whose files keep changing while others apply another set."""
    report = ConcurrencyReport("sqlite" if url.startswith("sqlite") else "postgresql")
    variants = [write_set(workdir / f"v{v}", resources, v) for v in (0, 1, 2)]
    refs = list(_reference_dumps(variants, url).values())
    watched = write_set(workdir / "watched", resources, 0)
    before = len(history_rows(url))
    watch = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "watch", str(watched), "--db", url, "--interval", "0.2", "--debounce", "100",
         "--json", "--lock-timeout", "60", "--allow-mass-delete"],
        cwd=workdir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.5)
        for i in range(applies):
            proc = _start_apply(variants[1], url, workdir, 60)
            time.sleep(0.1 * i)
            write_set(watched, resources, 2 if i % 2 == 0 else 0)  # the watcher reconciles this edit
            out, err = proc.communicate(timeout=600)
            report.applies_started += 1
            if proc.returncode == 0:
                report.applies_succeeded += 1
                report.applies_recorded += "Apply complete" in out
            elif LOCK_TIMEOUT_MESSAGE in err:
                report.lock_timeouts += 1
            else:
                report.violations.append(f"apply failed unexpectedly: {err[-500:]}")
            time.sleep(1.0)
    finally:
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=120)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    applied = [e for e in events if e.get("outcome") == "applied"]
    errors = [e for e in events if e.get("outcome") == "error"]
    report.watch_reconciles = len(applied)
    if errors:
        report.violations.append(f"watch reported errors: {errors[:2]}")
    history = history_rows(url)[before:]
    report.rounds = 1
    if len(history) != report.applies_recorded + len(applied):
        report.violations.append(f"history gained {len(history)} entries for {report.applies_recorded} applies and {len(applied)} watch reconciles")
    if dump_state(url) not in refs:
        report.violations.append("the final state is not exactly one of the manifest sets")
    if dangling_apply_ids(url):
        report.violations.append("bookkeeping names an apply missing from the history")
    return report
