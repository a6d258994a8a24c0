"""Experiments end to end against a stub OpenAI server on 127.0.0.1: arms with their own snapshots,
interleaved in one pool, the report's figures, repeats, the answer cache, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binomtest

from tests.runs.experiment_helpers import BAD, GOOD, ITEMS, TWO_AGENTS, add_experiment, experiment_spec, system_of, two_agents
from tests.stub_openai import StubServer

BASE_URL_PLACEHOLDER = "BASE"

pytestmark = pytest.mark.usefixtures("real_llm_requests")


def _apply(write_manifests, cli_run, db: str, base_url: str, extra: dict[str, str] | None = None) -> Path:  # type: ignore[no-untyped-def]
    root = write_manifests({"config.yaml": TWO_AGENTS.replace("BASE", base_url), **(extra or {})})
    code, _, err = cli_run("apply", str(root), "--db", db, "--auto-approve")
    assert code == 0, err
    return root


def _report(cli_run, db: str, name: str = "shootout") -> dict:  # type: ignore[no-untyped-def]
    code, out, err = cli_run("experiments", "show", name, "--db", db, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def test_two_arms_interleaved_with_their_own_snapshots(write_manifests, cli_run, db_url: str) -> None:
    with StubServer(two_agents) as stub:
        _apply(write_manifests, cli_run, db_url, stub.base_url)
        add_experiment(write_manifests, cli_run, db_url, "shootout", experiment_spec(concurrency=1))
        code, out, err = cli_run("run", "shootout", "--db", db_url)
        assert code == 0, err
        # one pool, arms alternating item by item
        assert [BAD in system_of(r) for r in stub.requests] == [False, True] * len(ITEMS)
    assert "Experiment shootout: completed (task classify, 6 inputs, baseline classifier)" in out
    assert "lazy vs classifier:" in out and "regressed (4):" in out

    report = _report(cli_run, db_url)
    assert list(report) == ["name", "status", "task", "baseline", "repeats", "error", "arms", "comparisons"]
    good, lazy = report["arms"]
    assert list(good) == [
        "agent", "config_sha256", "items", "valid", "failed", "correct", "accuracy", "accuracy_ci95", "latency_ms",
        "input_tokens", "output_tokens", "cost_usd", "cost_per_1k_items_usd", "reused", "consistency", "pass_k",
    ]
    assert (good["agent"], good["items"], good["valid"], good["failed"], good["correct"], good["accuracy"]) == ("classifier", 6, 6, 0, 6, 1.0)
    assert (lazy["agent"], lazy["correct"], lazy["accuracy"]) == ("lazy", 2, pytest.approx(2 / 6, abs=1e-6))
    ci = binomtest(2, 6).proportion_ci(method="wilson")
    assert lazy["accuracy_ci95"] == [pytest.approx(ci.low, abs=1e-6), pytest.approx(ci.high, abs=1e-6)]
    assert good["config_sha256"] != lazy["config_sha256"] and len(good["config_sha256"]) == 64
    assert set(good["latency_ms"]) == {"mean", "p50", "p95"} and good["latency_ms"]["p50"] > 0
    assert good["input_tokens"] == 60 and good["output_tokens"] == 30  # the stub's usage: 10 in, 5 out per call
    assert good["cost_usd"] == pytest.approx((60 * 0.15 + 30 * 0.6) / 1e6) and good["cost_per_1k_items_usd"] == pytest.approx(good["cost_usd"] / 6 * 1000)
    assert (good["reused"], good["consistency"], good["pass_k"]) == (0, None, None)
    (comparison,) = report["comparisons"]
    assert comparison == {
        "agent": "lazy", "baseline": "classifier", "accuracy_diff": pytest.approx(-4 / 6, abs=1e-6),
        "mcnemar_p": pytest.approx(binomtest(0, 4).pvalue), "both_right": 2, "only_agent_right": 0,
        "only_baseline_right": 4, "both_wrong": 0, "agreement": pytest.approx(2 / 6, abs=1e-6),
        "improved": [], "regressed": [1, 2, 4, 5],
    }
    # each arm's snapshot is its own agent's configuration
    shown = json.loads(cli_run("experiments", "list", "--db", db_url, "-o", "json")[1])
    assert [(e["name"], e["status"], e["agents"], e["inputs"]) for e in shown] == [("shootout", "completed", "classifier, lazy", 6)]

    # again: nothing left to do
    with StubServer(two_agents) as stub:
        code, out, err = cli_run("run", "shootout", "--db", db_url, "--json")
        assert code == 0 and stub.requests == []
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0] == {"event": "start", "items": 12, "todo": 0}
    assert events[-1]["event"] == "experiment" and events[-1]["status"] == "completed"


def test_text_markdown_and_plot(write_manifests, cli_run, sqlite_url: str, tmp_path: Path) -> None:
    with StubServer(two_agents) as stub:
        _apply(write_manifests, cli_run, sqlite_url, stub.base_url)
        add_experiment(write_manifests, cli_run, sqlite_url, "shootout", experiment_spec())
        assert cli_run("run", "shootout", "--db", sqlite_url, "--no-table")[0] == 0
    code, text, err = cli_run("experiments", "show", "shootout", "--db", sqlite_url)
    assert code == 0, err
    assert "classifier (baseline)" in text and "100% (61%–100%)" in text and "33% (10%–70%)" in text
    assert "accuracy -67 points, McNemar exact p = 0.125: not distinguishable from noise at this size (p ≥ 0.05)" in text
    assert "#1 Message: Please add dark mode — expected feature: classifier feature, lazy bug" in text
    code, md, err = cli_run("experiments", "show", "shootout", "--db", sqlite_url, "-o", "markdown")
    assert code == 0, err
    assert md.startswith("### Experiment `shootout`: completed")
    assert "| agent | items | valid |" in md and "<details><summary>Regressed: 4 items</summary>" in md
    plot = tmp_path / "out" / "shootout.png"
    code, _, err = cli_run("experiments", "show", "shootout", "--db", sqlite_url, "--plot", str(plot))
    assert code == 0, err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert f"Plot written to {plot}" in err
    code, _, err = cli_run("experiments", "show", "shootout", "--db", sqlite_url, "--plot", str(tmp_path / "x.txt"))
    assert code == 1 and "give a .png, .svg or .pdf file" in err


def test_plot_without_matplotlib_says_what_to_install(write_manifests, cli_run, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    with StubServer(two_agents) as stub:
        _apply(write_manifests, cli_run, sqlite_url, stub.base_url)
    add_experiment(write_manifests, cli_run, sqlite_url, "shootout", experiment_spec())
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    code, out, err = cli_run("experiments", "show", "shootout", "--db", sqlite_url, "--plot", "x.png")
    assert code == 1
    assert "--plot needs matplotlib, which is not installed" in err and "pip install 'reconciler[plot]'" in err
    assert "Traceback" not in err


def test_pending_experiment_shows_empty_arms(write_manifests, cli_run, sqlite_url: str) -> None:
    _apply(write_manifests, cli_run, sqlite_url, "http://127.0.0.1:9/v1")
    add_experiment(write_manifests, cli_run, sqlite_url, "shootout", experiment_spec())
    report = _report(cli_run, sqlite_url)
    assert report["status"] == "pending"
    assert [(a["agent"], a["valid"], a["accuracy"], a["config_sha256"]) for a in report["arms"]] == [("classifier", 0, None, None), ("lazy", 0, None, None)]
    assert report["comparisons"][0]["mcnemar_p"] is None


def test_repeats_consistency_pass_k_and_the_cache_by_repeat(write_manifests, cli_run, sqlite_url: str) -> None:
    calls: dict[str, int] = {}

    def flaky(request: dict, n: int) -> dict:
        """The careful agent is right except on every third call for an item; the lazy one says bug."""
        if BAD in system_of(request):
            return {"category": "bug", "confidence": 50}
        prompt = [m["content"] for m in request["messages"] if m["role"] == "user"][-1]
        calls[prompt] = calls.get(prompt, 0) + 1
        from tests.runs.conftest import keyword_classifier

        right = keyword_classifier(prompt)
        return {"category": "question" if right["category"] != "question" else "bug", "confidence": 10} if calls[prompt] == 3 else right

    with StubServer(flaky) as stub:
        _apply(write_manifests, cli_run, sqlite_url, stub.base_url)
        add_experiment(write_manifests, cli_run, sqlite_url, "repeated", experiment_spec(repeats=3, concurrency=1))
        code, out, err = cli_run("run", "repeated", "--db", sqlite_url)
        assert code == 0, err
        assert len(stub.requests) == 2 * 3 * len(ITEMS)
        report = _report(cli_run, sqlite_url, "repeated")
        good, lazy = report["arms"]
        assert (good["items"], good["valid"], good["correct"]) == (18, 18, 12)
        assert good["accuracy"] == pytest.approx(12 / 18, abs=1e-6)  # over every answer
        assert good["consistency"] == pytest.approx(2 / 3, abs=1e-6)  # each item: 2 of 3 repeats give its usual answer
        assert good["pass_k"] == 0.0  # no item right in all 3
        assert lazy["consistency"] == 1.0 and lazy["pass_k"] == pytest.approx(2 / 6, abs=1e-6)
        comparison = report["comparisons"][0]
        assert (comparison["only_baseline_right"], comparison["both_right"]) == (4, 2)  # right by majority of repeats

        # the same configuration asked again: all 36 answers reused, repeat by repeat
        add_experiment(write_manifests, cli_run, sqlite_url, "repeated-again", experiment_spec(repeats=3))
        code, out, err = cli_run("run", "repeated-again", "--db", sqlite_url)
        assert code == 0, err
        assert len(stub.requests) == 36
        again = _report(cli_run, sqlite_url, "repeated-again")
        assert [a["reused"] for a in again["arms"]] == [18, 18]
        assert again["arms"][0]["correct"] == 12 and again["arms"][0]["consistency"] == good["consistency"]
        assert again["arms"][0]["input_tokens"] == good["input_tokens"]  # reused answers keep what they cost

        # a fourth repeat is a new sample: only it goes to the model
        add_experiment(write_manifests, cli_run, sqlite_url, "four", experiment_spec(repeats=4))
        assert cli_run("run", "four", "--db", sqlite_url)[0] == 0
        assert len(stub.requests) == 36 + 2 * len(ITEMS)


def test_an_agent_not_assigned_to_the_task_is_refused_with_the_assignment_to_add(write_manifests, cli_run, sqlite_url: str) -> None:
    from tests.runs.experiment_helpers import experiment_manifest

    lazy_assignment = "---\napiVersion: reconciler/v1\nkind: Assignment\nmetadata: {name: lazy-classify}\nspec: {agent: lazy, task: classify}\n"
    unassigned = TWO_AGENTS.replace(BASE_URL_PLACEHOLDER, "http://127.0.0.1:9/v1").replace(lazy_assignment, "")
    assert unassigned != TWO_AGENTS.replace(BASE_URL_PLACEHOLDER, "http://127.0.0.1:9/v1")
    root = write_manifests({"config.yaml": unassigned, "experiment.yaml": experiment_manifest("shootout", experiment_spec())})
    code, out, err = cli_run("validate", str(root))
    assert code == 1
    assert 'experiment.yaml:1:' in err and 'Experiment "shootout" spec.agents.1: agent \'lazy\' is not assigned to task \'classify\'' in err
    assert "kind: Assignment\n    metadata: {name: lazy-classify}\n    spec: {agent: lazy, task: classify}" in err
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 1

    # the assignment removed from the database after the experiment was applied: refused when it starts
    (root / "config.yaml").write_text(TWO_AGENTS.replace(BASE_URL_PLACEHOLDER, "http://127.0.0.1:9/v1"))
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    (root / "config.yaml").write_text(unassigned)
    (root / "experiment.yaml").unlink()
    code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")
    assert code == 0, err
    code, out, err = cli_run("run", "shootout", "--db", sqlite_url)
    assert code == 1
    assert "experiment 'shootout': agent 'lazy' is not assigned to task 'classify'" in err
    assert "kind: Assignment\n    metadata: {name: lazy-classify}\n    spec: {agent: lazy, task: classify}" in err
    assert _report(cli_run, sqlite_url)["status"] == "pending"


def test_resume_refuses_a_changed_arm_configuration(write_manifests, cli_run, sqlite_url: str) -> None:
    with StubServer(lambda request, n: two_agents(request, n) if n <= 4 else {"category": "nope"}) as stub:
        root = _apply(write_manifests, cli_run, sqlite_url, stub.base_url)
        add_experiment(write_manifests, cli_run, sqlite_url, "shootout", experiment_spec(concurrency=1, max_retries=0))
        assert cli_run("run", "shootout", "--db", sqlite_url)[0] == 100  # items after the 4th answer failed
        text = cli_run("experiments", "show", "shootout", "--db", sqlite_url)[1]
        assert "failed answers of classifier (4):" in text and "#2 Message: How do I reset my password? — no valid output" in text
        markdown = cli_run("experiments", "show", "shootout", "--db", sqlite_url, "-o", "markdown")[1]
        assert "<details><summary>Failed answers of <code>lazy</code>: 4</summary>" in markdown
        (root / "config.yaml").write_text(TWO_AGENTS.replace("BASE", stub.base_url).replace(BAD, "Say bug, always."))
        assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
        code, out, err = cli_run("run", "shootout", "--db", sqlite_url, "--retry-failed")
    assert code == 1
    assert "experiment 'shootout': agent 'lazy' started with another configuration" in err
    assert "create a new Experiment" in err


def test_provider_down_stops_the_experiment_and_resume_finishes_it(write_manifests, cli_run, db_url: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _apply(write_manifests, cli_run, db_url, f"http://127.0.0.1:{port}/v1")
    add_experiment(write_manifests, cli_run, db_url, "shootout", experiment_spec())
    code, out, err = cli_run("run", "shootout", "--db", db_url)
    assert code == 1
    assert "stopped: a provider looks down: 5 transient failures in a row (last: cannot reach the provider" in err
    assert "run `reconciler run shootout` again to resume" in err
    assert _report(cli_run, db_url)["status"] == "interrupted"
    with StubServer(two_agents, port=port) as stub:
        code, out, err = cli_run("run", "shootout", "--db", db_url)
        assert code == 0, err
        assert len(stub.requests) == 12
    assert [a["valid"] for a in _report(cli_run, db_url)["arms"]] == [6, 6]


def test_run_name_that_is_both_kinds(write_manifests, cli_run, sqlite_url: str) -> None:
    from tests.runs.conftest import RUN

    with StubServer(two_agents) as stub:
        _apply(write_manifests, cli_run, sqlite_url, stub.base_url, {"run.yaml": RUN.replace("name: sample", "name: shootout")})
        add_experiment(write_manifests, cli_run, sqlite_url, "shootout", experiment_spec())
        code, out, err = cli_run("run", "shootout", "--db", sqlite_url)
        assert code == 1 and "both a Run and an Experiment are named 'shootout'" in err and "reconciler run experiment/shootout" in err
        assert cli_run("run", "experiment/shootout", "--db", sqlite_url, "--no-table")[0] == 0
        assert cli_run("run", "run/shootout", "--db", sqlite_url, "--no-table")[0] == 0
    assert GOOD


def _stored_by_arm(db: str) -> dict[str, list[int]]:
    from sqlalchemy import select

    from reconciler.state.db import open_engine
    from reconciler.state.tables import experiment_arms, run_results

    engine = open_engine(db, create=False)
    assert engine is not None
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(experiment_arms.c.agent_name, run_results.c.item_index).select_from(
                    run_results.join(experiment_arms, experiment_arms.c.run_id == run_results.c.run_id)
                )
            ).all()
    finally:
        engine.dispose()
    out: dict[str, list[int]] = {}
    for agent, index in rows:
        out.setdefault(agent, []).append(index)
    return {agent: sorted(indexes) for agent, indexes in out.items()}


def test_killed_experiment_is_interrupted_and_resumes_exactly(write_manifests, cli_run, db_url: str, tmp_path: Path) -> None:
    """SIGKILL the process running an experiment: it is listed as interrupted with comparable partial
    arms, and running it again sends only the answers not stored, none twice."""
    import signal
    import threading
    import time

    from tests.runs.conftest import spawn_run

    gate = threading.Event()  # five answers come at once, the rest wait for the kill

    def behaviour(request: dict, n: int) -> dict:
        if n > 5:
            gate.wait(120)
        return two_agents(request, n)

    with StubServer(behaviour) as stub:
        _apply(write_manifests, cli_run, db_url, stub.base_url)
        add_experiment(write_manifests, cli_run, db_url, "shootout", experiment_spec(concurrency=2))
        proc = spawn_run("shootout", db_url, tmp_path)
        try:
            deadline = time.monotonic() + 120
            while sum(map(len, _stored_by_arm(db_url).values())) < 5:  # stored within a second (the sink's max_age)
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
            assert _report(cli_run, db_url)["status"] == "running"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        gate.set()
        stored = _stored_by_arm(db_url)
        assert sorted(map(len, stored.values())) == [2, 3]  # interleaved: the arms stay within an item of each other
        listed = json.loads(cli_run("experiments", "list", "--db", db_url, "-o", "json")[1])[0]
        assert listed["status"] == "interrupted" and f":{proc.pid})" in listed["error"] and "reconciler run shootout" in listed["error"]
        assert _report(cli_run, db_url)["status"] == "interrupted"

        before = len(stub.requests)
        code, out, err = cli_run("run", "shootout", "--db", db_url, "--json")
        assert code == 0, err
        assert len(stub.requests) - before == 12 - 5  # only what was not stored
    assert _stored_by_arm(db_url) == {"classifier": list(range(6)), "lazy": list(range(6))}  # nothing lost, nothing twice
    report = _report(cli_run, db_url)
    assert report["status"] == "completed" and [a["correct"] for a in report["arms"]] == [6, 2]
