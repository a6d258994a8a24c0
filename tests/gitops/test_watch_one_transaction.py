"""watch plans inside the apply's write transaction: the state is read once per change, nobody can
write between that read and the writes, and each change is applied exactly once."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import reconciler.apply
from reconciler.gitops.watch import WatchConfig, Watcher
from reconciler.plan.model import Plan
from reconciler.workflow import ApplyHooks, ApplyRequest, PlanRequest, apply_manifests, plan_from_paths
from tests.gitops.helpers import config


def _history(url: str) -> list[tuple[str, int, int, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT command, created, updated, deleted FROM reconciler_applies ORDER BY id"))]  # type: ignore[misc]
    finally:
        engine.dispose()


def test_each_change_is_applied_exactly_once_reading_the_state_once(write_manifests, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_manifests(config({"triage": 0.2, "billing": 0.3}))
    reads: list[object] = []
    real_read = reconciler.apply.read_snapshot
    monkeypatch.setattr(reconciler.apply, "read_snapshot", lambda conn: reads.append(conn) or real_read(conn))
    watcher = Watcher(WatchConfig(paths=(str(root),), db=sqlite_url, validate_providers=False))
    try:
        first = watcher.reconcile("startup")
        assert first is not None and (first.outcome, first.summary) == ("applied", {"create": 6, "update": 0, "delete": 0})
        assert len(reads) == 1
        write_manifests(config({"triage": 0.5, "billing": 0.3}))
        changed = watcher.reconcile("files", ("agents.yaml",))
        assert changed is not None and (changed.outcome, changed.changes) == ("applied", ("~ agent triage: temperature 0.2 → 0.5",))
        assert len(reads) == 2
        again = watcher.reconcile("files", ("agents.yaml",))
        assert again is not None and again.outcome == "in-sync" and again.apply_id is None
        assert len(reads) == 3
    finally:
        watcher.close()
    assert _history(sqlite_url) == [("watch", 6, 0, 0), ("watch", 0, 1, 0)]
    the_plan, _ = plan_from_paths(PlanRequest([str(root)], sqlite_url))
    assert the_plan.is_empty


def test_no_other_writer_between_the_read_and_the_writes(write_manifests, sqlite_url: str, tmp_path: Path) -> None:
    root = write_manifests(config({"triage": 0.2}))
    request = ApplyRequest([str(root)], sqlite_url, command="watch", validate_providers=False, start_runs=False, plan_in_transaction=True)
    apply_manifests(request)
    write_manifests(config({"triage": 0.7}))
    refused: list[str] = []

    def meddle(plan: Plan) -> None:  # runs after the state was read, before the plan is written
        other = sqlite3.connect(tmp_path / "state.db", timeout=0.1)
        try:
            other.execute("UPDATE agent_configs SET temperature = 1.9")
            other.commit()
        except sqlite3.OperationalError as exc:
            refused.append(str(exc))
        finally:
            other.close()

    outcome = apply_manifests(request, ApplyHooks(show_plan=meddle))
    assert outcome.applied and outcome.plan.summary() == {"create": 0, "update": 1, "delete": 0}
    assert refused == ["database is locked"]
    the_plan, _ = plan_from_paths(PlanRequest([str(root)], sqlite_url))
    assert the_plan.is_empty  # the temperature is 0.7, not the meddler's 1.9


def test_same_outcome_as_planning_first(write_manifests, db_url: str, tmp_path: Path) -> None:
    """One transaction or two, the same plan and the same state afterwards."""
    root = write_manifests(config({"triage": 0.2, "billing": 0.3}))
    base = ApplyRequest([str(root)], db_url, validate_providers=False, start_runs=False)
    first = apply_manifests(base)
    assert first.applied
    write_manifests(config({"triage": 0.4, "support": 0.1}))
    before, _ = plan_from_paths(PlanRequest([str(root)], db_url))
    outcome = apply_manifests(ApplyRequest([str(root)], db_url, validate_providers=False, start_runs=False, plan_in_transaction=True))
    assert replace(outcome.plan, created_at=before.created_at) == before  # made a moment later: its second may differ
    assert outcome.snapshot.fingerprint == before.state_fingerprint
    after, _ = plan_from_paths(PlanRequest([str(root)], db_url))
    assert after.is_empty
