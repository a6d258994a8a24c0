"""Distributed runs on a real PostgreSQL with real `reconciler worker` processes against a stub
OpenAI-compatible server: a worker SIGKILLed mid-chunk loses nothing and duplicates nothing, SIGTERM
finishes the items in flight, and a distributed run gives what a local run of the same inputs gives."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from reconciler.state.tables import analysis_runs
from tests.runs.conftest import STUB_CONFIG, keyword_classifier
from tests.runs.distributed.helpers import (
    WorkerProcess,
    chunks_of,
    engine_of,
    prompt_of,
    results_of,
    run_manifest,
    running_workers,
    slow_classifier,
    stored_by,
    wait_until,
)
from tests.stub_openai import StubServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.usefixtures("real_llm_requests")]


def _apply(write_manifests, cli_run, db: str, base_url: str, runs: dict[str, str]) -> Path:  # type: ignore[no-untyped-def]
    root = write_manifests({"config.yaml": STUB_CONFIG.replace("BASE", base_url), **{f"{n}.yaml": text for n, text in runs.items()}})
    code, _, err = cli_run("apply", str(root), "--db", db, "--auto-approve", "--no-validate")
    assert code == 0, err
    return root


def _status(engine, name: str) -> str:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(analysis_runs.c.status).where(analysis_runs.c.name == name)).scalar_one()


def test_three_workers_one_killed_mid_chunk_every_item_stored_once(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    total, size = 90, 10
    with StubServer(slow_classifier(0.15)) as stub:
        _apply(write_manifests, cli_run, pg_url, stub.base_url, {"many": run_manifest("many", total)})
        code, out, err = cli_run("run", "many", "--db", pg_url, "--distribute", "--chunk-size", str(size))
        assert code == 0, err
        assert f"distributed {total} of {total} items in 9 chunks on queue 'runs'" in out
        engine = engine_of(pg_url)
        with running_workers(pg_url, tmp_path, 3, "--concurrency", "2", "--stalled-after", "3") as workers:
            victim, survivors = workers[0], workers[1:]
            held: list[dict] = []

            def victim_is_mid_chunk() -> bool:
                stored = {r["item_index"] for r in results_of(engine, "many") if r["worker"] == victim.identity}
                held[:] = [c for c in chunks_of(engine, "many") if c["state"] == "running" and c["worker"] == victim.identity]
                return any(0 < len(stored & set(c["items"])) < len(c["items"]) for c in held)

            wait_until(victim_is_mid_chunk, timeout=180, every=0.02)
            victim.kill()
            kept = stored_by(engine, "many").get(victim.identity, 0)
            assert 0 < kept < total  # the kill landed mid-run, inside a chunk (or the test proves nothing)
            victims_chunks = {c["chunk"] for c in held}

            wait_until(lambda: _status(engine, "many") != "running", timeout=240, every=0.2)
        # a request the kill cut off before its body arrived is no prompt
        requested = Counter(prompt_of(r) for r in stub.requests if "messages" in r)

    assert _status(engine, "many") == "completed"
    results = results_of(engine, "many")
    assert [r["item_index"] for r in results] == list(range(total))  # every item, once
    assert all(r["valid"] and r["output"] == keyword_classifier(prompt_of_result(r)) for r in results)
    by_worker = stored_by(engine, "many")
    assert by_worker[victim.identity] == kept  # what the killed worker stored is kept, never replaced
    assert sum(by_worker.values()) == total and all(by_worker.get(w.identity) for w in survivors)
    chunks = chunks_of(engine, "many")
    assert all(c["state"] == "done" for c in chunks)
    retaken = [c for c in chunks if c["chunk"] in victims_chunks]
    assert retaken and all(c["attempts"] >= 2 and c["worker"] != victim.identity for c in retaken)
    # every prompt was sent; only the killed worker's unstored items were sent again, once
    assert set(requested) == {prompt_of_result(r) for r in results}
    redone = {p for p, n in requested.items() if n > 1}
    assert max(requested.values()) <= 2
    redone_items = {r["item_index"] for r in results if prompt_of_result(r) in redone}
    assert redone_items <= {i for c in retaken for i in c["items"]}
    retries = [e for w in survivors for e in w.seen if e["event"] == "stalled_retried"]
    assert retries, "a survivor retried the killed worker's chunks"

    code, out, _ = cli_run("runs", "show", "many", "--db", pg_url, "-o", "json")
    detail = json.loads(out)
    assert detail["chunks"] == {"total": 9, "queued": 0, "running": 0, "done": 9, "stopped": 0}
    assert sorted((w["pid"], w["items"]) for w in detail["workers"]) == sorted(
        (w.proc.pid, by_worker[w.identity]) for w in workers
    )
    engine.dispose()


def prompt_of_result(result: dict) -> str:
    return f"Message: {result['input']['text']}"


def test_a_distributed_run_gives_what_a_local_run_gives(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    total = 30
    with StubServer(slow_classifier(0.02)) as stub:
        _apply(
            write_manifests, cli_run, pg_url, stub.base_url,
            {"local": run_manifest("alone", total), "spread": run_manifest("spread", total)},
        )
        with running_workers(pg_url, tmp_path, 2, "--concurrency", "3") as workers:
            code, out, err = cli_run("run", "spread", "--db", pg_url, "--distribute", "--wait", "--chunk-size", "4", "--json")
            assert code == 0, err
            events = [json.loads(line) for line in out.splitlines()]
        # the local one asks the model too (else it reuses the answers the workers stored in the cache)
        code, out, err = cli_run("run", "alone", "--db", pg_url, "--no-table", "--no-cache")
        assert code == 0, err
        assert len(stub.requests) == 2 * total
    assert events[0]["event"] == "distributed" and events[0]["chunks"] == 8
    assert events[-1]["event"] == "run" and events[-1]["status"] == "completed" and events[-1]["processed_now"] == total

    engine = engine_of(pg_url)

    def shown(run: str) -> list[tuple]:
        return [(r["item_index"], r["input"], r["output"], r["valid"], r["error"], r["attempts"]) for r in results_of(engine, run)]

    assert shown("spread") == shown("alone")
    local = json.loads(cli_run("runs", "show", "alone", "--db", pg_url, "-o", "json")[1])
    spread = json.loads(cli_run("runs", "show", "spread", "--db", pg_url, "-o", "json")[1])
    same = ("status", "error", "items_total", "items_succeeded", "items_failed", "accuracy", "input_tokens", "output_tokens",
            "cost_estimate", "config_sha256", "config_snapshot", "runner")
    assert {k: spread[k] for k in same} == {k: local[k] for k in same}
    assert "workers" not in local
    assert sum(w["items"] for w in spread["workers"]) == total
    assert {w["pid"] for w in spread["workers"]} <= {w.proc.pid for w in workers}
    code, out, _ = cli_run("runs", "show", "spread", "--db", pg_url)
    assert "chunks:           8 (8 done)" in out and "workers:" in out
    engine.dispose()


def test_sigterm_finishes_the_items_in_flight_and_requeues_the_rest(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    total = 20
    with StubServer(slow_classifier(0.4)) as stub:
        _apply(write_manifests, cli_run, pg_url, stub.base_url, {"slow": run_manifest("slow", total)})
        assert cli_run("run", "slow", "--db", pg_url, "--distribute", "--chunk-size", str(total))[0] == 0
        # while its items are with the queue, the run cannot also be executed in one process
        code, _, err = cli_run("run", "slow", "--db", pg_url)
        assert code == 1 and "is distributed to workers" in err
        engine = engine_of(pg_url)
        first = WorkerProcess(pg_url, tmp_path, "--concurrency", "2")
        try:
            wait_until(lambda: sum(stored_by(engine, "slow").values()) >= 2, timeout=180, every=0.05)
            asked = time.monotonic()
            code, err = first.terminate()
            took = time.monotonic() - asked
            assert code == 0, err
            assert took < 10  # it waited for two 0.4 s requests, not for the chunk's other items
            requeued = next(e for e in first.seen if e["event"] == "chunk_requeued")
            answered_before = len(stub.requests)
            kept = stored_by(engine, "slow")[first.identity]
            assert kept == answered_before == requeued["stored"]  # every answer it had asked for was stored
            assert requeued["left"] == total - kept
            (chunk,) = chunks_of(engine, "slow")
            assert chunk["state"] == "queued" and _status(engine, "slow") == "running"

            second = WorkerProcess(pg_url, tmp_path, "--concurrency", "4")
            try:
                wait_until(lambda: _status(engine, "slow") != "running", timeout=180, every=0.2)
                assert second.terminate()[0] == 0
            finally:
                second.kill()
        finally:
            first.kill()
        assert len(stub.requests) == total  # nothing was asked twice
    assert _status(engine, "slow") == "completed"
    assert stored_by(engine, "slow") == {first.identity: kept, second.identity: total - kept}
    engine.dispose()


def test_a_configuration_changed_since_distributing_stops_the_run(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    with StubServer(slow_classifier(0.0)) as stub:
        root = _apply(write_manifests, cli_run, pg_url, stub.base_url, {"run": run_manifest("changed", 6)})
        assert cli_run("run", "changed", "--db", pg_url, "--distribute", "--chunk-size", "2")[0] == 0
        config = (root / "config.yaml").read_text().replace("temperature: 0.0", "temperature: 0.5")
        (root / "config.yaml").write_text(config)
        assert cli_run("apply", str(root), "--db", pg_url, "--auto-approve", "--no-validate")[0] == 0
        worker = WorkerProcess(pg_url, tmp_path)
        try:
            code, out, err = cli_run("run", "changed", "--db", pg_url, "--distribute", "--wait", "--no-table")
        finally:
            worker.terminate()
            worker.kill()
        assert stub.requests == []
    assert code == 1
    assert "Run changed: interrupted" in out
    assert "differs from the one it was distributed with" in err and "6 of 6 items unfinished" in err
    # the chunks taken before the first stopped say why; the one taken after does not start
    stopped = [e["error"] for e in worker.seen if e["event"] == "chunk_stopped"]
    skipped = [e["reason"] for e in worker.seen if e["event"] == "chunk_skipped"]
    assert len(stopped) + len(skipped) == 3 and all("differs from the one it was distributed with" in e for e in stopped)
    assert all(e.startswith("not started: chunk ") for e in skipped)


def test_a_worker_taken_for_dead_stores_nothing_twice_and_stops_saying_so(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    import os
    import signal

    total = 30
    with StubServer(slow_classifier(0.3)) as stub:
        _apply(write_manifests, cli_run, pg_url, stub.base_url, {"paused": run_manifest("paused", total)})
        assert cli_run("run", "paused", "--db", pg_url, "--distribute", "--chunk-size", "10")[0] == 0
        engine = engine_of(pg_url)
        frozen = WorkerProcess(pg_url, tmp_path, "--concurrency", "2", "--stalled-after", "2")
        try:
            wait_until(lambda: stored_by(engine, "paused").get(frozen.identity, 0) >= 1, timeout=180, every=0.05)
            os.kill(frozen.proc.pid, signal.SIGSTOP)  # alive, but silent: no heartbeat
            other = WorkerProcess(pg_url, tmp_path, "--concurrency", "4", "--stalled-after", "2")
            try:
                other.wait_for(lambda e: e["event"] == "stalled_retried", timeout=180)
                os.kill(frozen.proc.pid, signal.SIGCONT)  # it wakes up holding chunks another worker took over
                frozen.proc.wait(timeout=120)
                err = frozen.kill()
                wait_until(lambda: _status(engine, "paused") != "running", timeout=180, every=0.2)
                assert other.terminate()[0] == 0
            finally:
                other.kill()
        finally:
            if frozen.proc.poll() is None:
                os.kill(frozen.proc.pid, signal.SIGCONT)
            frozen.kill()
    assert frozen.proc.returncode == 1
    assert f"worker {frozen.identity} was taken for dead: no heartbeat for 2 s" in err
    assert "hint: start it again; raise --stalled-after" in err and "Traceback" not in err
    assert _status(engine, "paused") == "completed"
    results = results_of(engine, "paused")
    assert [r["item_index"] for r in results] == list(range(total))
    assert set(stored_by(engine, "paused")) == {frozen.identity, other.identity}
    engine.dispose()


def test_one_worker_goes_through_many_runs_of_one_configuration(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    """More runs than a worker keeps contexts for (they share one agent): evicting the oldest must not
    close the agent the others still use."""
    from reconciler.runs.distributed.worker import KEPT_RUNS

    names = [f"batch-{i}" for i in range(KEPT_RUNS + 3)]
    with StubServer(slow_classifier(0.0)) as stub:
        _apply(write_manifests, cli_run, pg_url, stub.base_url, {n: run_manifest(n, 2) for n in names})
        engine = engine_of(pg_url)
        worker = WorkerProcess(pg_url, tmp_path)
        try:
            for name in names:  # one after another, so each run's context is made and kept in turn
                # --no-cache: the same inputs each time, and every run must ask its agent
                code, out, err = cli_run("run", name, "--db", pg_url, "--distribute", "--wait", "--no-table", "--no-cache")
                assert code == 0, (out, err)
            assert worker.terminate()[0] == 0
        finally:
            worker.kill()
        assert len(stub.requests) == 2 * len(names)
    assert {_status(engine, n) for n in names} == {"completed"}
    engine.dispose()


def test_a_second_sigterm_cancels_the_items_in_flight_and_requeues_them(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    import signal

    total = 8
    with StubServer(slow_classifier(3.0)) as stub:
        _apply(write_manifests, cli_run, pg_url, stub.base_url, {"stuck": run_manifest("stuck", total)})
        assert cli_run("run", "stuck", "--db", pg_url, "--distribute", "--chunk-size", str(total))[0] == 0
        engine = engine_of(pg_url)
        worker = WorkerProcess(pg_url, tmp_path, "--concurrency", "2")
        try:
            wait_until(lambda: len(stub.requests) >= 2, timeout=180, every=0.05)
            asked = time.monotonic()
            worker.proc.send_signal(signal.SIGTERM)
            worker.wait_for(lambda e: e["event"] == "stopping", timeout=30)
            code, err = worker.terminate(timeout=30)  # the second signal
            took = time.monotonic() - asked
        finally:
            worker.kill()
    assert code == 0, err
    assert took < 3.0  # it did not wait for the 3 s answers
    assert any(e["event"] == "stopping_now" for e in worker.seen)
    assert stored_by(engine, "stuck") == {}
    (chunk,) = chunks_of(engine, "stuck")
    assert chunk["state"] == "queued" and _status(engine, "stuck") == "running"
    engine.dispose()
