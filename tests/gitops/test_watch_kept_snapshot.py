"""watch keeps the snapshot it last applied against and reads the state again only when someone
else committed: every outside write between two changes (a row edited by hand, an apply from
another process, a run recorded) is seen, reported and corrected as if the state were read anew."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from reconciler.gitops.watch import ReconcileEvent, WatchConfig, Watcher
from reconciler.state.db import database_url
from reconciler.state.snapshot import load_snapshot
from reconciler.workflow import PlanRequest, open_for_apply, plan_from_paths
from tests.gitops.helpers import WatchProcess, config
from tests.gitops.test_drift import sql

REPO = Path(__file__).resolve().parents[2]


def _reconcile(watcher: Watcher) -> ReconcileEvent:
    event = watcher.reconcile("files", ("agents.yaml",))
    assert event is not None
    return event


def _in_sync(root: Path, db: str) -> bool:
    return plan_from_paths(PlanRequest([str(root)], db))[0].is_empty


def test_the_kept_snapshot_is_reused_until_someone_else_writes(write_manifests, db_url: str) -> None:
    root = write_manifests(config({"triage": 0.2, "billing": 0.3}))
    watcher = Watcher(WatchConfig(paths=(str(root),), db=db_url, validate_providers=False))
    try:
        assert _reconcile(watcher).outcome == "applied"
        watcher.prepare()  # what run_watch does once the applied event is out
        kept = watcher.kept
        assert kept is not None and kept.reads == 2  # the startup's read, and the one after its commit

        write_manifests(config({"triage": 0.5, "billing": 0.3}))
        first = _reconcile(watcher)
        assert (first.outcome, first.changes, first.drift) == ("applied", ("~ agent triage: temperature 0.2 → 0.5",), ())
        assert kept.reads == 2  # planned against the kept snapshot: nobody wrote since it was read
        watcher.prepare()
        assert kept.reads == 3
        assert _reconcile(watcher).outcome == "in-sync" and kept.reads == 3

        # a row edited by hand, between two changes
        sql(db_url, "UPDATE agent_configs SET temperature = 1.9 WHERE name = 'billing'")
        write_manifests(config({"triage": 0.6, "billing": 0.3}))
        healed = _reconcile(watcher)
        assert kept.reads == 4  # read again: someone else committed
        assert healed.outcome == "applied"
        assert healed.changes == (
            "~ agent billing: temperature 1.9 → 0.3 (drift: changed outside reconciler since apply #1)",
            "~ agent triage: temperature 0.5 → 0.6",
        )
        assert [(d.name, d.fields[0].old, d.fields[0].new) for d in healed.drift] == [("billing", 0.3, 1.9)]
        watcher.prepare()
        # nothing planned against it changed it: it equals a fresh read, fingerprint included
        assert kept.snapshot is not None and kept.snapshot == load_snapshot(open_for_apply(db_url))
    finally:
        watcher.close()
    assert _in_sync(root, db_url)


def test_a_write_in_progress_while_the_state_is_read_is_seen_once_committed(write_manifests, db_url: str) -> None:
    """The writer began before the watcher read the state and commits after: the snapshot does not
    hold its change, and the marker must not claim it does (PostgreSQL: its id leaves the list of
    transactions in progress)."""
    root = write_manifests(config({"triage": 0.2}))
    watcher = Watcher(WatchConfig(paths=(str(root),), db=db_url, validate_providers=False))
    other = create_engine(database_url(db_url))
    try:
        assert _reconcile(watcher).outcome == "applied"
        with other.connect() as conn:
            conn.execute(text("UPDATE agent_configs SET temperature = 1.7"))  # not committed yet
            watcher.prepare()
            conn.commit()
        kept = watcher.kept
        assert kept is not None and kept.snapshot is not None
        assert kept.snapshot.resources[("Agent", "triage")].essence["temperature"] == 0.2
        write_manifests(config({"triage": 0.2, "billing": 0.3}))
        event = _reconcile(watcher)
        assert event.outcome == "applied"
        assert "~ agent triage: temperature 1.7 → 0.2 (drift: changed outside reconciler since apply #1)" in event.changes
    finally:
        watcher.close()
        other.dispose()
    assert _in_sync(root, db_url)


@pytest.mark.postgres
def test_postgresql_transactions_that_end_out_of_order_are_seen(write_manifests, pg_url: str) -> None:
    """A later writer commits before the watcher reads, an earlier one after: the newest transaction
    id does not move when the earlier one commits, the list of transactions in progress does."""
    root = write_manifests(config({"triage": 0.2, "billing": 0.3}))
    watcher = Watcher(WatchConfig(paths=(str(root),), db=pg_url, validate_providers=False))
    other = create_engine(database_url(pg_url))
    try:
        assert _reconcile(watcher).outcome == "applied"
        with other.connect() as early, other.connect() as late:
            early.execute(text("UPDATE agent_configs SET temperature = 1.7 WHERE name = 'triage'"))
            late.execute(text("UPDATE agent_configs SET temperature = 1.1 WHERE name = 'billing'"))
            late.commit()
            watcher.prepare()  # sees billing's 1.1, not triage's 1.7
            early.commit()
        write_manifests(config({"triage": 0.2, "billing": 0.3, "support": 0.1}))
        event = _reconcile(watcher)
        assert event.outcome == "applied"
        assert {(d.name, d.fields[0].new) for d in event.drift} == {("billing", 1.1), ("triage", 1.7)}
    finally:
        watcher.close()
        other.dispose()
    assert _in_sync(root, pg_url)


def test_the_interval_check_sees_outside_writes_on_the_kept_connection(write_manifests, db_url: str) -> None:
    root = write_manifests(config({"triage": 0.2}))
    watcher = Watcher(WatchConfig(paths=(str(root),), db=db_url, validate_providers=False))
    try:
        assert _reconcile(watcher).outcome == "applied"
        watcher.prepare()
        kept = watcher.kept
        assert kept is not None
        quiet = watcher.check()
        assert quiet is not None and quiet.outcome == "in-sync" and kept.reads == 2
        sql(db_url, "UPDATE agent_configs SET system_prompt = 'edited by hand'")
        found = watcher.check()
        assert found is not None and found.outcome == "drift" and kept.reads == 3
        assert [(d.name, d.fields[0].field) for d in found.drift] == [("triage", "system_prompt")]
        sql(db_url, "DELETE FROM agent_task_assignments")  # a row deleted outside reconciler
        gone = watcher.check()
        assert gone is not None and {(d.name, d.vanished) for d in gone.drift} == {("triage", False), ("triage-classify", True)}
    finally:
        watcher.close()


def test_an_apply_from_another_process_between_two_changes_is_seen(write_manifests, db_url: str, tmp_path: Path) -> None:
    root = write_manifests(config({"triage": 0.2, "billing": 0.3}))
    other = write_manifests(config({"triage": 0.9, "billing": 0.3}), "elsewhere")
    watcher = Watcher(WatchConfig(paths=(str(root),), db=db_url, validate_providers=False))
    try:
        assert _reconcile(watcher).outcome == "applied"
        watcher.prepare()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "reconciler", "apply", str(other), "--db", db_url, "--auto-approve", "--no-validate"]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        write_manifests(config({"triage": 0.2, "billing": 0.4}))
        event = _reconcile(watcher)
        # the other apply is no drift (reconciler wrote it), but the watcher's manifests win again
        assert (event.outcome, event.changes, event.drift) == (
            "applied",
            ("~ agent billing: temperature 0.3 → 0.4", "~ agent triage: temperature 0.9 → 0.2"),
            (),
        )
    finally:
        watcher.close()
    assert _in_sync(root, db_url)


@pytest.mark.slow
def test_watch_process_sees_a_hand_edit_and_a_started_run_between_changes(write_manifests, sqlite_url: str, tmp_path: Path) -> None:
    root = write_manifests(config({"triage": 0.2, "billing": 0.3}))
    w = WatchProcess(str(root), "--db", sqlite_url, "--interval", "3600", "--debounce", "300", "--no-validate", cwd=tmp_path)
    try:
        assert w.wait_for(lambda e: e["trigger"] == "startup")["outcome"] == "applied"
        write_manifests(config({"triage": 0.4, "billing": 0.3}))
        plain = w.wait_for(_applied)
        assert (plain["outcome"], plain["changes"]) == ("applied", ["~ agent triage: temperature 0.2 → 0.4"])

        sql(sqlite_url, "UPDATE agent_configs SET system_prompt = 'edited by hand' WHERE name = 'billing'")
        write_manifests(config({"triage": 0.5, "billing": 0.3}))
        healed = w.wait_for(_applied)
        assert healed["changes"] == [
            '~ agent billing: system_prompt "edited by hand" → "be brief" (drift: changed outside reconciler since apply #1)',
            "~ agent triage: temperature 0.4 → 0.5",
        ]
        assert [(d["name"], d["fields"][0]["field"]) for d in healed["drift"]] == [("billing", "system_prompt")]

        # a run started by another process (a runner records its status): its spec is frozen now
        write_manifests({"run.yaml": _run("hi")})
        created = w.wait_for(_applied)
        assert (created["outcome"], created["changes"]) == ("applied", ["+ run nightly"])
        mark = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE analysis_runs SET status = 'running'\"); c.commit()"
        subprocess.run([sys.executable, "-c", mark, str(tmp_path / "state.db")], check=True, timeout=60)
        write_manifests({"run.yaml": _run("hello")})
        refused = w.wait_for(lambda e: e["trigger"] == "files" and e["outcome"] != "in-sync")
        assert refused["outcome"] == "error"
        assert [p["message"] for p in refused["errors"]] == ["run 'nightly' has already started, so its spec cannot change"]
    finally:
        assert w.terminate() == 0


def _applied(event: dict) -> bool:  # type: ignore[type-arg]
    """The applied event of a change (not an in-sync one for a batch of unchanged files)."""
    return event["trigger"] == "files" and event["outcome"] == "applied"


def _run(text: str) -> str:
    return f"apiVersion: reconciler/v1\nkind: Run\nmetadata: {{name: nightly}}\nspec: {{assignment: triage-classify, inputs: [{text}]}}\n"
