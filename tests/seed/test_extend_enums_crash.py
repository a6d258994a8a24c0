"""Crash safety of ``apply --extend-enums``. PostgreSQL cannot use an enum value in the transaction
that added it, so the values are added (and recorded in history) in a transaction of their own that
commits before the apply's. A SIGKILL can therefore land between the two: the configuration must
then be exactly the state before, the enum may hold the new value only together with its history
entry, and the next apply must converge without adding anything twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.reliability.dbstate import dump_state, engine_for
from tests.seed.helpers import enum_values, fill_like_the_service
from tests.seed.test_seed_service import ENV, append_document

TRIALS = int(os.environ.get("RELIABILITY_ENUM_CRASH_TRIALS", "10"))
LOCAL = {"apiVersion": "reconciler/v1", "kind": "Provider", "metadata": {"name": "local"}, "spec": {"type": "llamacpp"}}


def _prepared(cli_run, url: str, tmp_path: Path) -> tuple[Path, Path]:
    """A seed database, exported and adopted: (the manifests as adopted, the same plus a llamacpp provider)."""
    fill_like_the_service(url)
    same, changed = tmp_path / "same", tmp_path / "changed"
    assert cli_run("export", "--db", url, "--out", str(same), env=ENV)[0] == 0
    assert cli_run("adopt", "--all", "--db", url, env=ENV)[0] == 0
    changed.mkdir()
    for p in same.iterdir():
        (changed / p.name).write_text(p.read_text())
    append_document(changed / "providers.yaml", LOCAL)
    return same, changed


def _spawn(manifests: Path, url: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **ENV, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "reconciler", "apply", str(manifests), "--db", url, "--auto-approve", "--extend-enums", "--no-validate"]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_after(proc: subprocess.Popen[bytes], delay: float) -> None:
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _commands(url: str) -> list[str]:
    from sqlalchemy import select

    from reconciler.state.tables import reconciler_applies as h

    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(h.c.command).order_by(h.c.id)).scalars())
    finally:
        engine.dispose()


def _backends(url: str) -> set[int]:
    from sqlalchemy import text

    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            ).scalars())
    finally:
        engine.dispose()


def _wait_backends_gone(url: str, earlier: set[int]) -> None:
    """A killed client's server backend finishes (and rolls back) on its own time: wait until
    every backend that was not there before the apply started is gone."""
    deadline = time.monotonic() + 30
    while _backends(url) - earlier:
        if time.monotonic() > deadline:
            raise AssertionError("a killed apply's backend is still there after 30 s")
        time.sleep(0.05)


def _check_converges(cli_run, url: str, changed: Path, after_commands: list[str], *, adds: bool) -> None:
    code, out, err = cli_run("apply", str(changed), "--db", url, "--auto-approve", "--extend-enums", "--no-validate", env=ENV)
    assert code == 0, err
    assert ("Extended the enum providertype (llm_providers.type) with 'llamacpp'." in out) is adds  # never added twice
    assert _commands(url) == after_commands
    assert cli_run("plan", str(changed), "--db", url, "--detailed-exitcode", env=ENV)[0] == 0


@pytest.mark.postgres
def test_killed_after_extending_before_applying_keeps_the_state_before_and_converges(cli_run, pg_url: str, tmp_path: Path) -> None:
    """Deterministic: the test holds a SHARE lock on llm_providers, which lets every read and the
    enum's own transaction through but stops the apply transaction at its first write; the apply
    is killed there, after the values were committed."""
    from sqlalchemy import text

    same, changed = _prepared(cli_run, pg_url, tmp_path)
    before, earlier = dump_state(pg_url), _backends(pg_url)
    watcher = engine_for(pg_url)
    blocker = engine_for(pg_url).connect()
    blocker_tx = blocker.begin()
    blocker.execute(text("LOCK TABLE llm_providers IN SHARE MODE"))
    proc = _spawn(changed, pg_url, tmp_path)
    try:
        deadline = time.monotonic() + 60
        waiting = False
        while time.monotonic() < deadline and proc.poll() is None:
            with watcher.connect() as conn:  # not the blocker's: a transaction sees one snapshot of pg_stat_activity
                waiting = bool(conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'reconciler%' AND wait_event_type = 'Lock' "
                    "AND query LIKE 'INSERT INTO llm_providers%'"
                )).scalar())
            if waiting:
                break
            time.sleep(0.02)
        assert waiting, "the apply never reached its first write"
        assert enum_values(pg_url, "providertype") == ["ollama", "openai", "llamacpp"]  # committed before the apply's transaction
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        blocker_tx.commit()
        blocker.close()
        blocker.engine.dispose()
        watcher.dispose()
    _wait_backends_gone(pg_url, earlier)
    assert dump_state(pg_url) == before  # the configuration is exactly the state before
    assert _commands(pg_url) == ["adopt", "extend-enums"]  # the added value is in the history, no apply is
    _check_converges(cli_run, pg_url, changed, ["adopt", "extend-enums", "apply"], adds=False)
    assert enum_values(pg_url, "providertype") == ["ollama", "openai", "llamacpp"]
    assert cli_run("plan", str(same), "--db", pg_url, "--detailed-exitcode", env=ENV)[0] == 2  # the new provider is there


@pytest.mark.postgres
@pytest.mark.slow
def test_killed_at_random_moments_leaves_before_or_after_and_the_enum_only_with_its_history(
    cli_run, pg_server, tmp_path: Path
) -> None:
    rng = random.Random(15)
    outcomes: dict[str, int] = {}
    calibrated = None
    for trial in range(TRIALS):
        name = f"crash_{trial}_{os.getpid()}"
        url = pg_server.create_database(name)
        try:
            work = tmp_path / str(trial)
            work.mkdir()
            _same, changed = _prepared(cli_run, url, work)
            before, earlier = dump_state(url), _backends(url)
            started = time.perf_counter()
            proc = _spawn(changed, url, work)
            if calibrated is None:  # the first trial runs to the end: how long an apply takes
                assert proc.wait(timeout=120) == 0
                calibrated = time.perf_counter() - started
            elif trial % 2:  # anywhere in the process's life
                _kill_after(proc, rng.uniform(0, calibrated))
            else:  # just after the extension committed: in the gap, or in the apply's transaction
                deadline = time.monotonic() + 60
                while proc.poll() is None and "llamacpp" not in enum_values(url, "providertype") and time.monotonic() < deadline:
                    time.sleep(0.002)
                _kill_after(proc, rng.uniform(0, 0.05))
            _wait_backends_gone(url, earlier)
            commands, extended = _commands(url), "llamacpp" in enum_values(url, "providertype")
            if dump_state(url) == before:
                outcome = "before, enum extended" if extended else "before"
                assert commands == (["adopt", "extend-enums"] if extended else ["adopt"]), (trial, commands)
            else:
                outcome = "after"
                assert extended and commands == ["adopt", "extend-enums", "apply"], (trial, commands)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            # converges: one extension and one apply in the history, whatever the kill left
            _check_converges(cli_run, url, changed, ["adopt", "extend-enums", "apply"], adds=not extended)
        finally:
            pg_server.drop_database(name)
    print(f"extend-enums kills: {outcomes}")
    assert sum(outcomes.values()) == TRIALS, outcomes
