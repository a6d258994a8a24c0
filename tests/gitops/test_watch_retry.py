"""Retries in `watch`: exponential backoff with a cap after a failed apply, reset on success; invalid
manifests wait for a change and are reported once. A fake clock drives a real Watcher against real
SQLite files and real manifest directories, so nothing sleeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.gitops.watch import Backoff, ReconcileEvent, WatchConfig, Watcher
from tests.gitops.helpers import agent, config, task
from tests.gitops.test_drift import sql


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("failures", "rand", "expected"),
    [(1, 0.0, 1.0), (2, 0.0, 2.0), (4, 0.0, 8.0), (5, 0.0, 10.0), (500, 0.0, 10.0), (3, 0.5, 3.6), (5, 0.999, 8.002)],
    ids=["first", "doubles", "fourth", "capped", "capped-far-out", "jitter-shortens", "jitter-at-cap"],
)
def test_backoff_doubles_up_to_the_cap_and_jitters_down(failures: int, rand: float, expected: float) -> None:
    assert Backoff(initial=1.0, cap=10.0, jitter=0.2).delay(failures, rand) == pytest.approx(expected)


def _watcher(root: Path, db: str, clock: FakeClock, **options: object) -> Watcher:
    settings = {"validate_providers": False, "retry_initial": 1.0, "retry_max": 8.0, **options}
    return Watcher(WatchConfig((str(root),), db, **settings), clock=clock, rand=lambda: 0.0)  # type: ignore[arg-type]


def _retry(w: Watcher, clock: FakeClock, scheduled: float) -> ReconcileEvent | None:
    """Check the retry is ``scheduled`` seconds away, advance the clock to just before it (not due)
    and then to it (due), and retry."""
    assert w.retry_at is not None and w.retry_at - clock.now == pytest.approx(scheduled)
    clock.now = w.retry_at - 0.01
    assert not w.retry_due()
    clock.now += 0.01
    assert w.retry_due()
    return w.reconcile("retry")


def test_unreachable_database_backs_off_to_the_cap_then_resets_on_success(write_manifests, tmp_path: Path) -> None:
    from reconciler.state.db import open_engine
    from reconciler.state.lock import apply_lock

    root = write_manifests(config({"triage": 0.2}))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the database directory should be")
    db = f"sqlite:///{blocker / 'state.db'}"
    clock = FakeClock()
    w = _watcher(root, db, clock, lock_timeout=0.05)

    first = w.reconcile("startup")
    assert first is not None and (first.outcome, first.retry_in) == ("error", 1.0)
    assert first.render_text().splitlines()[0].endswith(
        f"startup: apply failed: cannot use database sqlite:///{blocker}/state.db while creating the database directory: "
        f"File exists; retrying in 1 s ({first.duration_ms:.0f} ms)"
    )
    assert first.to_dict()["retry_in_s"] == 1.0
    assert w.check() is None  # no drift check against a database that just failed: the retry is the check
    waits = []
    for scheduled in (1.0, 2.0, 4.0, 8.0):
        event = _retry(w, clock, scheduled)
        assert event is not None and event.outcome == "error" and event.trigger == "retry"
        waits.append(event.retry_in)
    assert waits == [2.0, 4.0, 8.0, 8.0]
    assert "retrying in 8 s" in event.render_text()
    # a change of the manifests is tried at once, whatever the backoff says; failing again keeps the cap
    changed = w.reconcile("files", (str(root / "agents.yaml"),))
    assert changed is not None and changed.retry_in == 8.0

    blocker.unlink()  # the database can be reached again
    healed = _retry(w, clock, 8.0)
    assert healed is not None and (healed.outcome, healed.summary["create"]) == ("applied", 4)
    assert (w.failures, w.retry_at) == (0, None)
    checked = w.check()
    assert checked is not None and checked.outcome == "in-sync"

    # the next failure starts from the initial wait again: another apply holds the lock
    write_manifests({"agents.yaml": agent("triage", temperature=0.5)})
    engine = open_engine(db, create=False)
    with apply_lock(engine, 1, command="apply"):
        locked = w.reconcile("files")
    engine.dispose()
    assert locked is not None and (locked.outcome, locked.retry_in) == ("error", 1.0)
    assert "another apply holds the state lock" in locked.render_text()
    done = _retry(w, clock, 1.0)
    assert done is not None and done.changes == ("~ agent triage: temperature 0.2 → 0.5",)
    w.close()


def test_invalid_manifests_are_reported_once_per_content_and_wait_for_a_change(write_manifests, sqlite_url: str) -> None:
    root = write_manifests(config({"triage": 0.2}))
    clock = FakeClock()
    w = _watcher(root, sqlite_url, clock)
    applied = w.reconcile("startup")
    assert applied is not None and applied.outcome == "applied"

    broken = write_manifests({"agents.yaml": agent("triage", temperature=9.0)}) / "agents.yaml"
    invalid = w.reconcile("files", (str(broken),))
    assert invalid is not None and invalid.outcome == "invalid" and invalid.retry_in is None
    assert "manifests are invalid; applied nothing; waiting for them to change" in invalid.render_text()
    assert [p.field for p in invalid.errors] == ["spec.temperature"]
    clock.now += 3600
    assert not w.retry_due()  # no timed retries: only new content can be valid
    assert w.reconcile("files", (str(broken),)) is None  # the same content (an editor saving again): said already
    broken.write_text(broken.read_text())  # touched: new mtime, same bytes
    assert w.reconcile("files", (str(broken),)) is None
    checked = w.check()
    assert checked is not None and checked.outcome == "in-sync"  # drift checks go on meanwhile

    write_manifests({"agents.yaml": agent("triage", temperature=7.0), "tasks.yaml": "kind: [oops"})
    again = w.reconcile("files")  # new content, new errors: reported
    assert again is not None and again.outcome == "invalid"
    assert {"agents.yaml", "tasks.yaml"} <= {Path(p.location.file).name for p in again.errors if p.location}
    write_manifests({"agents.yaml": agent("triage", temperature=0.7), "tasks.yaml": task("classify")})
    fixed = w.reconcile("files")
    assert fixed is not None and fixed.changes == ("~ agent triage: temperature 0.2 → 0.7",)
    w.close()


def test_a_refused_plan_is_reported_once_and_retried_until_the_database_is_fixed(cli_run, write_manifests, sqlite_url: str) -> None:
    """A row reconciler does not manage blocks the plan; adopting it (no manifest change) unblocks it."""
    docs = config({"triage": 0.2})
    root = write_manifests({"providers.yaml": docs["providers.yaml"]})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    sql(
        sqlite_url,
        "INSERT INTO task_configs (id, name, response_schema, is_active, created_at, updated_at) "
        "VALUES ('0f6f8d8e3c2a4b7e9d1c5a3b2e4f6a8c', 'classify', '{\"type\": \"object\"}', 1, '2024-01-01', '2024-01-01')",
    )
    write_manifests(docs)
    clock = FakeClock()
    w = _watcher(root, sqlite_url, clock)
    refused = w.reconcile("startup")
    assert refused is not None and (refused.outcome, refused.retry_in) == ("error", 1.0)
    assert "Task 'classify' already exists in the database but is not managed by reconciler" in refused.render_text()
    assert "apply failed; applied nothing; retrying in 1 s" in refused.render_text()
    assert _retry(w, clock, 1.0) is None  # the same refusal of the same manifests: reported once
    assert _retry(w, clock, 2.0) is None
    assert w.failures == 3

    code, _, err = cli_run("adopt", "task/classify", "--db", sqlite_url)
    assert code == 0, err
    healed = _retry(w, clock, 4.0)
    assert healed is not None and healed.outcome == "applied" and healed.trigger == "retry"
    assert healed.summary == {"create": 2, "update": 0, "delete": 0}  # the agent and its assignment
    w.close()


def test_watch_rejects_a_cap_below_the_first_wait(cli_run, write_manifests, sqlite_url: str) -> None:
    root = write_manifests(config())
    code, _, err = cli_run("watch", str(root), "--db", sqlite_url, "--retry-initial", "10", "--retry-max", "5")
    assert code == 2 and "--retry-max must be at least --retry-initial" in err and "Traceback" not in err
