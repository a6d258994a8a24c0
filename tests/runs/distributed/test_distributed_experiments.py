"""Distributed experiments on a real PostgreSQL with real `reconciler worker` processes against a stub
OpenAI-compatible server: the same results and report as a local experiment of the same inputs, a
worker SIGKILLed mid-experiment loses and duplicates nothing, and the workers reuse and add answers
of the answer cache as a local experiment does."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from reconciler.state.tables import analysis_runs, experiment_arms, experiments, run_chunks, run_results
from tests.runs.distributed.helpers import WorkerProcess, engine_of, running_workers, wait_until
from tests.runs.experiment_helpers import BAD, TWO_AGENTS, add_experiment, experiment_spec, prompt_of, system_of, two_agents
from tests.stub_openai import Reply, StubServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.usefixtures("real_llm_requests")]

INPUTS = [{"text": f"message {i}{' please add' if i % 3 == 1 else '?' if i % 3 == 2 else ''}", "category": ("bug", "feature", "question")[i % 3]} for i in range(18)]


def slow_agents(latency: float):  # type: ignore[no-untyped-def]
    """The two agents of ``two_agents`` (careful and lazy), each answer after ``latency`` seconds."""

    def behaviour(request: dict[str, Any], n: int) -> dict[str, Any] | Reply:
        if "messages" not in request:  # its sender was killed before the body was sent
            return Reply(400)
        time.sleep(latency)
        return two_agents(request, n)

    return behaviour


def asked(stub: StubServer) -> Counter[tuple[str, str]]:
    """(system prompt, prompt) of every request the stub got with a body."""
    return Counter((system_of(r), prompt_of(r)) for r in stub.requests if "messages" in r)


def _setup(write_manifests, cli_run, db: str, base_url: str, specs: dict[str, dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    root = write_manifests({"config.yaml": TWO_AGENTS.replace("BASE", base_url)})
    code, _, err = cli_run("apply", str(root), "--db", db, "--auto-approve", "--no-validate")
    assert code == 0, err
    for name, spec in specs.items():
        add_experiment(write_manifests, cli_run, db, name, spec)


def _experiment(engine, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return dict(conn.execute(select(experiments).where(experiments.c.name == name)).mappings().one())


def _arm_results(engine, name: str) -> dict[str, list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    e, a, r = experiments.c, experiment_arms.c, run_results.c
    with engine.connect() as conn:
        arms = conn.execute(
            select(a.agent_name, a.run_id).join(experiments, e.id == a.experiment_id).where(e.name == name).order_by(a.arm_index)
        ).all()
        return {
            agent: [dict(x) for x in conn.execute(select(run_results).where(r.run_id == run_id).order_by(r.item_index)).mappings()]
            for agent, run_id in arms
        }


def _arm_rows(engine, name: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    e, a = experiments.c, experiment_arms.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(analysis_runs).join(experiment_arms, a.run_id == analysis_runs.c.id).join(experiments, e.id == a.experiment_id)
            .where(e.name == name).order_by(a.arm_index)
        ).mappings().all()
    return [dict(r) for r in rows]


def _shown(engine, name: str, *more: str) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    """Per arm, per stored answer: index, output, valid, attempts, reused and the ``more`` columns."""
    return {
        agent: [(r["item_index"], r["output"], r["valid"], r["attempts"], r["reused"], *(r[m] for m in more)) for r in rows]
        for agent, rows in _arm_results(engine, name).items()
    }


def _report(cli_run, db: str, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    code, out, err = cli_run("experiments", "show", name, "--db", db, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without what differs between two executions of the same answers: its name, timings."""
    arms = [{k: v for k, v in arm.items() if k != "latency_ms"} for arm in report["arms"]]
    return {**{k: v for k, v in report.items() if k not in {"name", "arms", "chunks", "chunk_stopped", "workers"}}, "arms": arms}


def test_a_distributed_experiment_gives_what_a_local_experiment_gives(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    spec = experiment_spec(inputs=INPUTS, repeats=2, concurrency=3)
    with StubServer(slow_agents(0.01)) as stub:
        _setup(write_manifests, cli_run, pg_url, stub.base_url, {"spread": spec, "alone": spec})
        with running_workers(pg_url, tmp_path, 2, "--concurrency", "3") as workers:
            code, out, err = cli_run("run", "experiment/spread", "--db", pg_url, "--distribute", "--wait", "--chunk-size", "5", "--json")
            assert code == 0, err
            events = [json.loads(line) for line in out.splitlines()]
        distributed_calls = len(stub.requests)
        # the local one of the same inputs asks the model too (--no-cache), as the distributed one did
        code, out, err = cli_run("run", "experiment/alone", "--db", pg_url, "--no-cache", "--json")
        assert code == 0, err
        local = json.loads(out.splitlines()[-1])
    answers = len(INPUTS) * 2 * 2  # inputs x repeats x agents
    assert distributed_calls == answers and len(stub.requests) == 2 * answers
    # per arm of 36 answers: 8 chunks of 5 (the last of one) each, queued with the arms interleaved
    assert events[0]["event"] == "distributed" and events[0]["kind"] == "Experiment" and events[0]["chunks"] == 16
    summary = events[-1]
    assert summary["event"] == "experiment" and summary["status"] == "completed" and summary["processed_now"] == answers
    assert {k: summary[k] for k in ("status", "error")} == {k: local[k] for k in ("status", "error")}
    same = ("items_total", "items_succeeded", "items_failed", "items_unfinished", "accuracy", "input_tokens", "output_tokens", "cost_estimate",
            "config_sha256", "error", "status", "name")
    assert [{k: a[k] for k in same} for a in summary["arms"]] == [{k: a[k] for k in same} for a in local["arms"]]

    engine = engine_of(pg_url)

    def shown(name: str) -> dict[str, list[tuple]]:
        return _shown(engine, name, "input", "error")

    assert shown("spread") == shown("alone")
    assert all(len(rows) == len(INPUTS) * 2 for rows in shown("spread").values())
    arm_columns = ("status", "error", "items_total", "items_succeeded", "items_failed", "accuracy", "input_tokens", "output_tokens",
                   "cost_estimate", "config_sha256", "config_snapshot", "runner")
    assert [{k: r[k] for k in arm_columns} for r in _arm_rows(engine, "spread")] == [
        {k: r[k] for k in arm_columns} for r in _arm_rows(engine, "alone")
    ]
    for name in ("spread", "alone"):
        row = _experiment(engine, name)
        assert (row["status"], row["runner"], row["error"]) == ("completed", None, None) and row["completed_at"] is not None
    distributed, alone = _report(cli_run, pg_url, "spread"), _report(cli_run, pg_url, "alone")
    assert _comparable(distributed) == _comparable(alone)
    assert distributed["chunks"] == {"total": 16, "queued": 0, "running": 0, "done": 16, "stopped": 0}
    assert sum(w["items"] for w in distributed["workers"]) == answers
    assert {w["pid"] for w in distributed["workers"]} <= {w.proc.pid for w in workers}
    assert "workers" not in alone
    code, out, _ = cli_run("experiments", "show", "spread", "--db", pg_url)
    assert "chunks:           16 (16 done)" in out and "workers:" in out
    engine.dispose()


def test_the_arms_are_queued_interleaved_and_a_queued_experiment_is_not_run_locally(write_manifests, cli_run, pg_url: str) -> None:
    with StubServer(slow_agents(0.0)) as stub:
        _setup(write_manifests, cli_run, pg_url, stub.base_url, {"queued": experiment_spec(inputs=INPUTS)})
        code, out, err = cli_run("run", "experiment/queued", "--db", pg_url, "--distribute", "--chunk-size", "6")
        assert code == 0, err
        assert "Experiment queued: distributed 36 of 36 answers in 6 chunks on queue 'runs' (2 arms interleaved)" in out
        code, _, err = cli_run("run", "experiment/queued", "--db", pg_url)
        assert code == 1 and "experiment 'queued' is distributed to workers" in err
        code, out, _ = cli_run("run", "experiment/queued", "--db", pg_url, "--distribute")
        assert code == 0 and "already distributed: 6 chunks still open" in out
    assert stub.requests == []
    engine = engine_of(pg_url)
    e, a, c = experiments.c, experiment_arms.c, run_chunks.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.chunk, a.arm_index, c["items"], c.job_id, c.state)
            .join(experiment_arms, a.run_id == c.run_id).join(experiments, e.id == a.experiment_id)
            .where(e.name == "queued").order_by(c.job_id)
        ).mappings().all()
    # the queue hands them out in job order: item 0-5 of each arm, then 6-11 of each, ...
    assert [(r["chunk"], r["arm_index"], r["items"][0]) for r in rows] == [(n, n % 2, 6 * (n // 2)) for n in range(6)]
    assert {r["state"] for r in rows} == {"queued"}
    assert _experiment(engine, "queued")["status"] == "running"
    engine.dispose()


def test_a_worker_killed_mid_experiment_loses_and_duplicates_nothing(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    inputs = INPUTS + [{**x, "text": x["text"] + " again"} for x in INPUTS]  # 36 inputs, 72 answers
    with StubServer(slow_agents(0.3)) as stub:  # a chunk takes 6 rounds of 0.3 s: results are stored every second, mid-chunk
        _setup(write_manifests, cli_run, pg_url, stub.base_url, {"killed": experiment_spec(inputs=inputs, concurrency=2)})
        code, _, err = cli_run("run", "experiment/killed", "--db", pg_url, "--distribute", "--chunk-size", "12")
        assert code == 0, err
        engine = engine_of(pg_url)
        with running_workers(pg_url, tmp_path, 3, "--concurrency", "2", "--stalled-after", "3") as workers:
            victim, survivors = workers[0], workers[1:]
            held: list[tuple[Any, set[int]]] = []

            def victim_is_mid_chunk() -> bool:
                with engine.connect() as conn:
                    chunks = conn.execute(select(run_chunks).where(run_chunks.c.state == "running", run_chunks.c.worker == victim.identity)).all()
                    held[:] = []
                    for chunk in chunks:
                        stored = set(conn.execute(
                            select(run_results.c.item_index).where(run_results.c.run_id == chunk.run_id, run_results.c.worker == victim.identity)
                        ).scalars())
                        held.append((chunk._mapping, stored))
                return any(0 < len(stored & set(chunk["items"])) < len(chunk["items"]) for chunk, stored in held)

            wait_until(victim_is_mid_chunk, timeout=180, every=0.02)
            victim.kill()
            wait_until(lambda: _experiment(engine, "killed")["status"] != "running", timeout=240, every=0.2)
        requests = asked(stub)

    assert _experiment(engine, "killed")["status"] == "completed"
    results = _arm_results(engine, "killed")
    assert [[r["item_index"] for r in rows] for rows in results.values()] == [list(range(len(inputs)))] * 2  # every answer, once
    by_worker = Counter(r["worker"] for rows in results.values() for r in rows)
    assert 0 < by_worker[victim.identity] < 2 * len(inputs)  # the kill landed mid-experiment
    assert sum(by_worker.values()) == 2 * len(inputs) and all(by_worker[w.identity] for w in survivors)
    assert all(r["valid"] for rows in results.values() for r in rows)
    # every answer was asked for; only the killed worker's unstored answers were asked again, once
    assert len(requests) == 2 * len(inputs) and max(requests.values()) <= 2
    with engine.connect() as conn:
        states = conn.execute(
            select(run_chunks.c.state, run_chunks.c.attempts, run_chunks.c.chunk)
            .join(experiment_arms, experiment_arms.c.run_id == run_chunks.c.run_id)
        ).all()
    assert {s.state for s in states} == {"done"} and len(states) == 6
    victims_chunks = {chunk["chunk"] for chunk, _ in held}
    assert all(s.attempts >= 2 for s in states if s.chunk in victims_chunks)
    report = _report(cli_run, pg_url, "killed")
    assert report["status"] == "completed" and [a["valid"] for a in report["arms"]] == [len(inputs)] * 2
    assert sorted((w["pid"], w["items"]) for w in report["workers"]) == sorted((w.proc.pid, by_worker[w.identity]) for w in workers)
    engine.dispose()


def test_workers_reuse_and_add_answers_of_the_answer_cache_as_a_local_experiment_does(
    write_manifests, cli_run, pg_url: str, tmp_path: Path
) -> None:
    spec = experiment_spec(inputs=INPUTS[:9])
    answers = 9 * 2
    with StubServer(slow_agents(0.0)) as stub:
        _setup(write_manifests, cli_run, pg_url, stub.base_url, {"first": spec, "again": spec, "local": spec, "uncached": spec})
        worker = WorkerProcess(pg_url, tmp_path, "--concurrency", "4")
        try:
            code, out, err = cli_run("run", "experiment/first", "--db", pg_url, "--distribute", "--wait", "--chunk-size", "4", "--json")
            assert code == 0, err
            assert len(stub.requests) == answers  # nothing cached yet: every answer asked for, and stored in the cache
            code, out, err = cli_run("run", "experiment/again", "--db", pg_url, "--distribute", "--wait", "--chunk-size", "4", "--json")
            assert code == 0, err
            again = json.loads(out.splitlines()[-1])
            assert len(stub.requests) == answers  # the repeated one asked for nothing
            code, out, err = cli_run("run", "experiment/local", "--db", pg_url, "--json")
            assert code == 0, err
            local = json.loads(out.splitlines()[-1])
            assert len(stub.requests) == answers  # nor does a local one
            code, out, err = cli_run("run", "experiment/uncached", "--db", pg_url, "--distribute", "--wait", "--no-cache", "--json")
            assert code == 0, err
            assert len(stub.requests) == 2 * answers  # --no-cache: the workers asked for every answer
            assert worker.terminate()[0] == 0
        finally:
            worker.kill()
    assert [a["reused"] for a in again["arms"]] == [a["reused"] for a in local["arms"]] == [9, 9]
    engine = engine_of(pg_url)

    def shown(name: str) -> dict[str, list[tuple]]:
        return _shown(engine, name, "input_tokens", "output_tokens")

    assert shown("again") == shown("local")
    assert all(r[4] for rows in shown("again").values() for r in rows)  # every answer reused
    outputs = {agent: [r[:3] for r in rows] for agent, rows in shown("first").items()}
    assert {agent: [r[:3] for r in rows] for agent, rows in shown("again").items()} == outputs
    assert {agent: [r[:3] for r in rows] for agent, rows in shown("uncached").items()} == outputs
    assert not any(r[4] for rows in shown("uncached").values() for r in rows)
    assert _comparable(_report(cli_run, pg_url, "again")) == _comparable(_report(cli_run, pg_url, "local"))
    engine.dispose()


def test_wait_exits_as_run_does_when_answers_failed(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    def behaviour(request: dict[str, Any], n: int) -> dict[str, Any] | Reply:
        if "messages" not in request:
            return Reply(400)
        if BAD in system_of(request):  # the lazy agent answers outside the schema: its answers fail
            return {"category": "nonsense", "confidence": 50}
        return two_agents(request, n)

    spec = experiment_spec()
    with StubServer(behaviour) as stub:
        _setup(write_manifests, cli_run, pg_url, stub.base_url, {"wrong": spec, "wrong-here": spec})
        with running_workers(pg_url, tmp_path, 1):
            code, out, err = cli_run("run", "experiment/wrong", "--db", pg_url, "--distribute", "--wait", "--no-table")
        assert code == 100, err  # every answer finished, some failed: as `run` exits
        assert "Experiment wrong, agent lazy: failed" in out
        code, _, err = cli_run("run", "experiment/wrong-here", "--db", pg_url, "--no-table", "--no-cache")
        assert code == 100, err
    engine = engine_of(pg_url)
    distributed, local = _experiment(engine, "wrong"), _experiment(engine, "wrong-here")
    assert distributed["status"] == local["status"] == "partial"
    assert distributed["error"] == local["error"].replace("wrong-here", "wrong") == "6 of 12 answers failed; see `reconciler experiments show wrong`"
    assert [(r["status"], r["error"]) for r in _arm_rows(engine, "wrong")] == [
        (r["status"], (r["error"] or "").replace("wrong-here", "wrong") or None) for r in _arm_rows(engine, "wrong-here")
    ]
    assert _shown(engine, "wrong", "error") == _shown(engine, "wrong-here", "error")
    engine.dispose()


def test_a_provider_down_stops_every_arm_and_the_experiment_resumes(write_manifests, cli_run, pg_url: str, tmp_path: Path) -> None:
    down = {"on": True}

    def behaviour(request: dict[str, Any], n: int) -> dict[str, Any] | Reply:
        if "messages" not in request or down["on"]:
            return Reply(503)
        return two_agents(request, n)

    with StubServer(behaviour) as stub:
        _setup(write_manifests, cli_run, pg_url, stub.base_url, {"outage": experiment_spec(inputs=INPUTS)})
        with running_workers(pg_url, tmp_path, 1, "--concurrency", "2"):
            code, out, err = cli_run("run", "experiment/outage", "--db", pg_url, "--distribute", "--wait", "--chunk-size", "3", "--no-table")
            assert code == 1, (out, err)  # answers unfinished: an error, as `run` exits
            engine = engine_of(pg_url)
            row = _experiment(engine, "outage")
            assert row["status"] == "interrupted" and row["runner"] is None
            assert row["error"].startswith("stopped: provider 'stub' (openai) looks down: 5 transient failures in a row")
            assert row["error"].endswith("36 of 36 answers unfinished; run `reconciler run outage` again to resume")
            with engine.connect() as conn:
                states = Counter(conn.execute(select(run_chunks.c.state).join(experiment_arms, experiment_arms.c.run_id == run_chunks.c.run_id)).scalars())
            assert states == {"stopped": 12}  # one stopped by the breaker, every other arm's and its own not started
            assert all(r["status"] == "interrupted" for r in _arm_rows(engine, "outage"))
            sent = len(stub.requests)
            down["on"] = False
            code, out, err = cli_run("run", "experiment/outage", "--db", pg_url, "--distribute", "--wait", "--no-table")
            assert code == 0, (out, err)
    assert sent < 36  # the breaker kept the rest from being sent
    assert _experiment(engine, "outage")["status"] == "completed"
    assert [[r["item_index"] for r in rows] for rows in _arm_results(engine, "outage").values()] == [list(range(18))] * 2
    engine.dispose()
