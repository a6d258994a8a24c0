"""Several `reconciler watch` processes on one database: one leads, the others stand by, and a
SIGKILLed leader is replaced; nothing is applied twice."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.gitops.helpers import WatchProcess, config


def _applies(db_url: str) -> list[tuple[str, int, int, int]]:
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text('SELECT command, "created", "updated", "deleted" FROM reconciler_applies ORDER BY id')).all()
        return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def _first_takeover(standbys: list[WatchProcess], timeout: float) -> tuple[WatchProcess, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in standbys:
            for e in s.drain():
                if e["trigger"] == "takeover":
                    return s, e
        time.sleep(0.1)
    raise AssertionError(f"no standby took over: {[s.seen for s in standbys]}")


def _watch(root: Path, db_url: str, cwd: Path) -> WatchProcess:
    return WatchProcess(str(root), "--db", db_url, "--interval", "30", "--debounce", "200", "--no-validate", cwd=cwd)


@pytest.mark.slow
def test_one_watcher_leads_and_a_standby_takes_over_when_it_is_killed(write_manifests, db_url: str, tmp_path: Path) -> None:
    root = write_manifests(config({"triage": 0.2}))
    leader = _watch(root, db_url, tmp_path)
    standbys: list[WatchProcess] = []
    try:
        first = leader.wait_for(lambda e: e["trigger"] == "startup")
        assert (first["outcome"], first["summary"]["create"]) == ("applied", 4)
        standbys = [_watch(root, db_url, tmp_path) for _ in range(2)]
        for s in standbys:
            waiting = s.wait_for(lambda e: e["trigger"] == "startup")
            assert waiting["outcome"] == "standby" and waiting["apply_id"] is None
            assert "watch" in waiting["leader"]  # who leads, as the database knows it

        write_manifests(config({"triage": 0.3}))  # the leader applies it; standbys do not
        assert leader.wait_for(lambda e: e["trigger"] == "files")["changes"] == ["~ agent triage: temperature 0.2 → 0.3"]

        leader.proc.kill()  # SIGKILL: no clean-up, its lock goes with its process and connection
        killed_at = datetime.now(UTC)
        leader.proc.wait(timeout=30)
        new_leader, event = _first_takeover(standbys, timeout=15)
        assert (datetime.fromisoformat(event["time"]) - killed_at).total_seconds() < 10  # the bound
        assert event["outcome"] == "in-sync"  # the killed leader had applied everything: nothing twice
        time.sleep(3)  # longer than a standby's poll: the other one must still be standing by
        other = next(s for s in standbys if s is not new_leader)
        assert not any(e["trigger"] == "takeover" for e in other.drain())

        write_manifests(config({"triage": 0.4}))
        assert new_leader.wait_for(lambda e: e["trigger"] == "files")["changes"] == ["~ agent triage: temperature 0.3 → 0.4"]
    finally:
        for w in [leader, *standbys]:
            if w.proc.poll() is None:
                w.terminate()
    assert _applies(db_url) == [("watch", 4, 0, 0), ("watch", 0, 1, 0), ("watch", 0, 1, 0)]
