"""Concurrent applies and watch-vs-apply on SQLite and PostgreSQL; see tests/reliability/concurrency.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.concurrency import run_concurrent_applies, run_watch_against_applies

PARALLEL = int(os.environ.get("RELIABILITY_PARALLEL_APPLIES", "4"))
ROUNDS = int(os.environ.get("RELIABILITY_CONCURRENCY_ROUNDS", "2"))


@pytest.mark.slow
def test_concurrent_applies_serialise(db_url: str, tmp_path: Path) -> None:
    report = run_concurrent_applies(db_url, tmp_path, parallel=PARALLEL, rounds=ROUNDS, resources=100, lock_timeout=120)
    assert report.violations == []
    assert report.applies_succeeded == report.applies_started == PARALLEL * ROUNDS


@pytest.mark.slow
def test_concurrent_applies_with_short_lock_timeout_fail_only_with_the_lock_message(db_url: str, tmp_path: Path) -> None:
    report = run_concurrent_applies(db_url, tmp_path, parallel=PARALLEL, rounds=1, resources=400, lock_timeout=0)
    assert report.violations == []
    assert report.applies_succeeded + report.lock_timeouts == PARALLEL
    assert report.applies_succeeded >= 1


@pytest.mark.slow
def test_watch_self_heal_while_someone_applies(db_url: str, tmp_path: Path) -> None:
    report = run_watch_against_applies(db_url, tmp_path, applies=3, resources=100)
    assert report.violations == []
    assert report.applies_succeeded + report.lock_timeouts == 3
    assert report.watch_reconciles >= 1
