"""Standby watchers with the leader SIGKILLed at random moments; see tests/reliability/failover.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.failover import run_leader_failover

TRIALS = int(os.environ.get("RELIABILITY_FAILOVER_TRIALS", "3"))


@pytest.mark.slow
def test_a_killed_leader_is_replaced_and_no_change_is_applied_twice(db_url: str, tmp_path: Path) -> None:
    report = run_leader_failover(db_url, tmp_path, trials=TRIALS)
    assert report.violations == []
    assert report.trials == len(report.takeovers) == TRIALS
    assert report.applied_by_successor + report.applied_by_leader == TRIALS
