"""Crash safety (SIGKILL mid-apply) on SQLite and PostgreSQL; see tests/reliability/crash.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.crash import run_crash_trials

RESOURCES = int(os.environ.get("RELIABILITY_CRASH_RESOURCES", "600"))
TRIALS = int(os.environ.get("RELIABILITY_CRASH_TRIALS", "20"))


@pytest.mark.slow
def test_killed_apply_leaves_before_or_after_state_and_next_apply_converges(db_url: str, tmp_path: Path) -> None:
    report = run_crash_trials(db_url, tmp_path, resources=RESOURCES, trials=TRIALS)
    assert report.violations == []
    assert report.trials == report.converged == TRIALS
    assert report.outcomes["before"] + report.outcomes["after"] + report.outcomes["finished"] == TRIALS
    # the kills must actually land inside transactions, or the test proves nothing
    assert report.killed_mid_transaction >= 1, report
