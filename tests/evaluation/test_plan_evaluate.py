"""`plan --evaluate` and `apply --evaluate` end to end against a stub OpenAI server on 127.0.0.1: a
change that breaks the agent is caught by its task's gates and not applied, an improvement passes,
an unchanged configuration evaluated again calls no model, saved plans keep their evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.evaluation.helpers import BAD, GOOD, ITEMS, config, write_config
from tests.runs.experiment_helpers import two_agents
from tests.stub_openai import StubServer

pytestmark = pytest.mark.usefixtures("real_llm_requests")


def _apply(cli_run, root: Path, db: str, *extra: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    return cli_run("apply", str(root), "--db", db, "--auto-approve", "--no-validate", *extra)


def _signed_edit(data: dict, db: str) -> str:
    """A plan file edited by someone holding the database's secret key: signed again, so apply's own
    checks (not the signature) must catch the edit."""
    from reconciler.plan.saved import SIGNATURE, signed_document_text
    from reconciler.providers.secrets import load_secret_box
    from reconciler.state.db import database_url

    data = {k: v for k, v in data.items() if k != SIGNATURE}
    return signed_document_text(data, load_secret_box(create=False, database=database_url(db)))


def _history(cli_run, db: str) -> list[dict]:  # type: ignore[no-untyped-def]
    code, out, err = cli_run("history", "--db", db, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def test_a_change_that_breaks_the_agent_is_caught_and_not_applied(write_manifests, cli_run, db_url: str) -> None:
    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, GOOD)
        assert _apply(cli_run, root, db_url)[0] == 0
        write_config(write_manifests, stub.base_url, BAD)  # the careful prompt replaced: it now says bug to everything

        code, out, err = cli_run("plan", str(root), "--db", db_url, "--evaluate")
        assert code == 1
        assert len(stub.requests) == 2 * len(ITEMS)  # both configurations, every item once
        assert '~ agent classifier: system_prompt "Classify carefully." → "Say bug."' in out
        assert "✗ assignment classifier-classify (task classify, 6 labelled inputs)" in out
        assert "accuracy (95% CI)     100% (61%–100%) → 33% (10%–70%)" in out
        assert "regressed (4):" in out and "#1 Message: Please add dark mode — expected feature: before feature, after bug" in out
        assert "Evaluation: 1 assignment evaluated, 1 failed its gates." in out
        assert "Evaluating 1 assignment: 12 model calls (0 answers from the cache), estimated cost $0.0019." in err
        assert "error: assignment 'classifier-classify': gate min_accuracy failed: accuracy 33% is 27 points below the floor 60%" in err
        assert "gate max_drop failed: accuracy 100% → 33%: fell 67 points, 57 points more than the 10 points allowed" in err

        # the same plan again: every answer from the answer cache, no model called
        code, out, err = cli_run("plan", str(root), "--db", db_url, "--evaluate", "--json")
        assert code == 1 and len(stub.requests) == 2 * len(ITEMS)
        assert "Evaluating 1 assignment: 0 model calls (12 answers from the cache), estimated cost $0.0000." in err
        (evaluation,) = json.loads(out)["evaluations"]
        assert list(evaluation) == ["assignment", "task", "before", "after", "accuracy_diff", "mcnemar_p", "regressed", "improved", "gates", "passed"]
        before, after = evaluation["before"], evaluation["after"]
        assert (before["accuracy"], before["correct"], before["valid_rate"], before["reused"]) == (1.0, 6, 1.0, 6)
        assert (after["accuracy"], after["correct"], after["items"]) == (pytest.approx(2 / 6, abs=1e-6), 2, 6)
        assert before["config_sha256"] != after["config_sha256"] and len(after["config_sha256"]) == 64
        assert evaluation["mcnemar_p"] == pytest.approx(0.125)
        assert [i["index"] for i in evaluation["regressed"]] == [1, 2, 4, 5] and evaluation["improved"] == []
        first = {"index": 1, "prompt": "Message: Please add dark mode", "expected": "feature", "before": "feature", "after": "bug"}
        assert evaluation["regressed"][0] == first
        assert [(g["name"], g["passed"]) for g in evaluation["gates"]] == [("min_accuracy", False), ("max_drop", False)]
        assert evaluation["passed"] is False

        # apply --evaluate refuses: nothing written
        applies = len(_history(cli_run, db_url))
        code, out, err = _apply(cli_run, root, db_url, "--evaluate")
        assert code == 1 and "gate max_drop failed" in err and "--ignore-gates" in err
        assert len(stub.requests) == 2 * len(ITEMS)
    assert len(_history(cli_run, db_url)) == applies
    code, out, _ = cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode")
    assert code == 2 and "system_prompt" in out  # still to do


def test_an_improvement_passes_and_is_recorded(write_manifests, cli_run, sqlite_url: str) -> None:
    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, BAD)
        assert _apply(cli_run, root, sqlite_url)[0] == 0
        write_config(write_manifests, stub.base_url, GOOD)
        code, out, err = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--detailed-exitcode")
        assert code == 2, err
        assert "✓ assignment classifier-classify" in out and "improved (4):" in out
        assert "gate min_accuracy: passed — accuracy 100% ≥ 60%" in out and "gate max_drop: passed — accuracy 33% → 100%: no fall" in out
        assert "Evaluation: 1 assignment evaluated, every gate passed." in out
        calls = len(stub.requests)
        code, out, err = _apply(cli_run, root, sqlite_url, "--evaluate")
        assert code == 0, err
        assert len(stub.requests) == calls  # the apply's evaluation reused the plan's answers
    (last, *_) = _history(cli_run, sqlite_url)
    (recorded,) = last["plan"]["evaluations"]
    assert (recorded["assignment"], recorded["passed"], recorded["after"]["accuracy"]) == ("classifier-classify", True, 1.0)
    assert "gates_ignored" not in last["plan"]

    # `get assignments`: the accuracy last measured for the live configuration, and when
    code, out, err = cli_run("get", "assignments", "--db", sqlite_url, "-o", "json")
    (row,) = json.loads(out)
    assert (row["name"], row["accuracy"], row["measured_at"]) == ("classifier-classify", "100%", last["finished_at"])
    assert row["config_sha256"] == recorded["after"]["config_sha256"] and row["evaluation"]["apply_id"] == last["id"]
    code, out, _ = cli_run("get", "assignments", "--db", sqlite_url)
    assert code == 0 and "ACCURACY" in out and "100%" in out
    # applied without evaluating: the live configuration was never measured
    write_config(write_manifests, "http://127.0.0.1:9/v1", GOOD)
    assert _apply(cli_run, root, sqlite_url)[0] == 0
    (row,) = json.loads(cli_run("get", "assignments", "--db", sqlite_url, "-o", "json")[1])
    assert (row["accuracy"], row["measured_at"], row["evaluation"]) == ("-", "-", None)


def test_apply_evaluate_into_a_new_database_keeps_its_answers(write_manifests, cli_run, db_url: str) -> None:
    """The evaluation runs before the database exists (a failed gate must leave none behind), so
    its answers wait in memory and go into the answer cache the apply creates: the next evaluation
    calls no model for the configuration it already measured. A refused apply keeps nothing."""
    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, BAD, gate={"min_accuracy": 0.6})
        code, _, err = _apply(cli_run, root, db_url, "--evaluate")
        assert code == 1 and "gate min_accuracy failed" in err and len(stub.requests) == len(ITEMS)
        assert cli_run("history", "--db", db_url, "-o", "json")[1].strip() == "[]"  # nothing written

        write_config(write_manifests, stub.base_url, GOOD)
        code, _, err = _apply(cli_run, root, db_url, "--evaluate")
        assert code == 0, err
        assert "Evaluating 1 assignment: 6 model calls (0 answers from the cache)" in err
        assert len(stub.requests) == 2 * len(ITEMS)

        write_config(write_manifests, stub.base_url, GOOD + " Be brief.")  # before: the applied configuration, cached
        code, _, err = cli_run("plan", str(root), "--db", db_url, "--evaluate")
        assert code == 0, err
        assert "Evaluating 1 assignment: 6 model calls (6 answers from the cache)" in err
        assert len(stub.requests) == 3 * len(ITEMS)


def test_answers_that_cannot_be_cached_after_the_commit_are_a_warning(write_manifests, cli_run, sqlite_url: str, monkeypatch) -> None:
    """The apply has committed when the kept answers are stored: a database error there is a
    warning, and the apply still succeeds."""
    from sqlalchemy.exc import OperationalError

    from reconciler.runs import answer_cache

    def fail(engine, answers):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT INTO answer_cache", {}, Exception("disk I/O error"))

    monkeypatch.setattr(answer_cache, "store", fail)
    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, GOOD)
        code, out, err = _apply(cli_run, root, sqlite_url, "--evaluate")
    assert code == 0, err
    assert "Apply complete (#1)" in out
    assert "warning: the evaluation's answers were not cached: database error while storing the evaluation's answers" in err


def test_a_new_assignment_has_no_before(write_manifests, cli_run, sqlite_url: str) -> None:
    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, GOOD)
        code, out, err = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--json")
        assert code == 0, err
        assert len(stub.requests) == len(ITEMS)
    (evaluation,) = json.loads(out)["evaluations"]
    assert evaluation["before"] is None and evaluation["after"]["accuracy"] == 1.0
    assert evaluation["gates"][1] == {"name": "max_drop", "passed": True, "detail": "a new assignment: no applied configuration to compare with"}
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # plan created no database


def test_the_evaluated_configuration_is_what_runs_record_after_apply(write_manifests, cli_run, sqlite_url: str) -> None:
    """The candidate is built from the plan exactly as the apply writes it: its hash is the run's."""
    from reconciler.runs import metrics, store
    from reconciler.state.db import open_engine
    from reconciler.state.snapshot import load_snapshot

    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, GOOD)
        _, out, _ = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--json")
        evaluated = json.loads(out)["evaluations"][0]["after"]["config_sha256"]
        assert _apply(cli_run, root, sqlite_url)[0] == 0
    engine = open_engine(sqlite_url, create=False)
    resource = load_snapshot(engine).resources[("Assignment", "classifier-classify")]
    config = store.resolve_assignment(engine, __import__("uuid").UUID(resource.row_id), "check")
    assert metrics.snapshot_sha256(metrics.config_snapshot(config.provider, config.agent, config.task)) == evaluated


def test_max_eval_cost_refuses_before_any_call(write_manifests, cli_run, sqlite_url: str) -> None:
    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, GOOD)
        code, _, err = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--max-eval-cost", "0.0001")
        assert code == 1 and stub.requests == []
    assert "the evaluation would cost about $0.0009 (6 calls, 0 answers from the cache), more than --max-eval-cost $0.0001; nothing was called" in err
    code, _, err = cli_run("plan", str(root), "--db", sqlite_url, "--max-eval-cost", "1")
    assert code == 2 and "--max-eval-cost is for --evaluate" in err


def test_max_eval_cost_counts_only_the_calls_the_cache_cannot_answer(write_manifests, cli_run, sqlite_url: str) -> None:
    """The estimate subtracts the answers the cache has (looked up before calling): a fully cached
    evaluation costs nothing and passes a tiny --max-eval-cost that refuses the cold one."""
    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, BAD)
        assert _apply(cli_run, root, sqlite_url)[0] == 0
        write_config(write_manifests, stub.base_url, GOOD)
        code, _, err = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--max-eval-cost", "0.0001")
        assert code == 1 and stub.requests == []
        assert "the evaluation would cost about $0.0019 (12 calls, 0 answers from the cache), more than --max-eval-cost" in err

        code, _, err = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate")  # fills the answer cache
        assert code == 0, err
        assert len(stub.requests) == 2 * len(ITEMS)

        code, out, err = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--max-eval-cost", "0.0001")
        assert code == 0, err
        assert "Evaluating 1 assignment: 0 model calls (12 answers from the cache), estimated cost $0.0000." in err
        assert "✓ assignment classifier-classify" in out and len(stub.requests) == 2 * len(ITEMS)

        write_config(write_manifests, stub.base_url, GOOD + " Be brief.")  # a new candidate: only its answers are called for
        code, _, err = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--max-eval-cost", "0.0001")
        assert code == 1 and len(stub.requests) == 2 * len(ITEMS)
        assert "(6 calls, 6 answers from the cache), more than --max-eval-cost" in err


def test_a_saved_plan_keeps_its_evaluation(write_manifests, cli_run, sqlite_url: str, tmp_path: Path) -> None:
    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, GOOD)
        assert _apply(cli_run, root, sqlite_url)[0] == 0
        write_config(write_manifests, stub.base_url, BAD)
        saved = tmp_path / "plan.json"
        code, _, err = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--out", str(saved))
        assert code == 1  # the gate failed; the plan is saved with its evaluation all the same
        calls = len(stub.requests)
        data = json.loads(saved.read_text())
        assert data["evaluations"][0]["passed"] is False

        code, _, err = cli_run("apply", str(saved), "--db", sqlite_url, "--no-validate")
        assert code == 1 and "gate max_drop failed" in err and "--ignore-gates" in err

        edited = tmp_path / "edited.json"  # a plan file changed after it was evaluated
        change = next(c for c in data["changes"] if c["kind"] == "Agent")
        change["desired"]["system_prompt"] = "Something else."
        edited.write_text(json.dumps(data))
        code, _, err = cli_run("apply", str(edited), "--db", sqlite_url, "--no-validate", "--ignore-gates")
        assert code == 1 and "the saved plan's signature does not match" in err
        edited.write_text(_signed_edit(data, sqlite_url))
        code, _, err = cli_run("apply", str(edited), "--db", sqlite_url, "--no-validate", "--ignore-gates")
        assert code == 1 and "the configuration this plan evaluated" in err and "its evaluation does not hold" in err

        code, _, err = cli_run("apply", str(saved), "--db", sqlite_url, "--no-validate", "--ignore-gates")
        assert code == 0, err
        assert len(stub.requests) == calls  # applying a saved evaluation calls no model
    (last, *_) = _history(cli_run, sqlite_url)
    assert last["command"] == "apply-plan" and last["plan"]["gates_ignored"] is True
    assert last["plan"]["evaluations"][0]["passed"] is False


def test_a_saved_plan_refuses_a_change_it_did_not_evaluate(write_manifests, cli_run, sqlite_url: str, tmp_path: Path) -> None:
    """A saved plan edited to change an assignment it never evaluated, whose task has an evaluation, is
    refused: its evaluation does not cover that change."""
    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, GOOD)
        assert _apply(cli_run, root, sqlite_url)[0] == 0
        write_config(write_manifests, stub.base_url, BAD)
        unevaluated = tmp_path / "unevaluated.json"  # the prompt change, planned without --evaluate
        code, _, err = cli_run("plan", str(root), "--db", sqlite_url, "--out", str(unevaluated))
        assert code == 0, err
        spec = "metadata: {name: classify}\nspec:\n"
        write_manifests({"config.yaml": config(stub.base_url, GOOD).replace(spec, spec + "  description: triage\n")})
        saved = tmp_path / "plan.json"  # a task description changes no request: nothing to evaluate
        code, _, err = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--out", str(saved))
        assert code == 0, err
        data = json.loads(saved.read_text())
        assert data["evaluations"] == [] and data["evaluation_tasks"] == ["classify"]
        assert [c["kind"] for c in data["changes"]] == ["Task"]
        data["changes"] += [c for c in json.loads(unevaluated.read_text())["changes"] if c["kind"] == "Agent"]
        saved.write_text(_signed_edit(data, sqlite_url))
        history = _history(cli_run, sqlite_url)

        code, _, err = cli_run("apply", str(saved), "--db", sqlite_url, "--no-validate", "--ignore-gates")
        assert code == 1, err
        assert "assignment 'classifier-classify': this plan changes its configuration" in err
        assert "its task 'classify' has one" in err and "reconciler plan ... --evaluate --out FILE" in err
        assert _history(cli_run, sqlite_url) == history  # nothing written
        assert stub.requests == []
        code, out, _ = cli_run("plan", str(root), "--db", sqlite_url, "--detailed-exitcode")
        assert code == 2 and "description" in out and "system_prompt" not in out  # the prompt change was not applied


def test_watch_evaluates_before_applying(write_manifests, cli_run, sqlite_url: str) -> None:
    """A gated change is not applied and reported once; a later fix applies normally."""
    from reconciler.gitops.watch import WatchConfig, Watcher
    from reconciler.plan.evaluate import EvaluateOptions

    with StubServer(two_agents) as stub:
        root = write_config(write_manifests, stub.base_url, GOOD)
        w = Watcher(WatchConfig((str(root),), sqlite_url, validate_providers=False, evaluate=EvaluateOptions()))
        first = w.reconcile("startup")
        assert first is not None and first.outcome == "applied"
        write_config(write_manifests, stub.base_url, BAD)
        gated = w.reconcile("files")
        assert gated is not None and gated.outcome == "gated" and gated.failed
        assert gated.to_dict()["outcome"] == "gated" and gated.retry_in is None
        assert "an evaluated change failed a gate; applied nothing; waiting for the manifests to change" in gated.render_text()
        assert "gate min_accuracy failed: accuracy 33% is 27 points below the floor 60%" in gated.render_text()
        calls = len(stub.requests)
        assert w.reconcile("files") is None and len(stub.requests) == calls  # the same manifests: said once, not evaluated again
        checked = w.check()
        assert checked is not None and checked.outcome == "in-sync"  # the live configuration stays as it was
        write_config(write_manifests, stub.base_url, "Classify carefully, please.")
        fixed = w.reconcile("files")
        assert fixed is not None and fixed.outcome == "applied", fixed.render_text()
        assert fixed.changes == ('~ agent classifier: system_prompt "Classify carefully." → "Classify carefully, please."',)
        w.close()
    history = _history(cli_run, sqlite_url)
    assert [h["command"] for h in history] == ["watch", "watch"]
    assert history[0]["plan"]["evaluations"][0]["passed"] is True


def test_the_ci_evaluate_job_played_locally(cli_run, git_repo, monkeypatch, tmp_path: Path) -> None:
    """examples/ci's evaluate job: main's configuration in a scratch database, the pull request planned
    against it with --evaluate; a prompt that breaks the agent fails the job with the diff as a comment."""
    from tests.evaluation.helpers import config

    repo = git_repo()
    monkeypatch.chdir(repo.root)
    scratch = f"sqlite:///{tmp_path / 'scratch' / 'base.db'}"
    with StubServer(two_agents) as stub:
        repo.commit({"config.yaml": config(stub.base_url, GOOD)}, "classifier")
        repo.git("checkout", "-q", "-b", "shorter-prompt")
        repo.commit({"config.yaml": config(stub.base_url, BAD)}, "a shorter prompt")
        code, _, err = cli_run("apply", "manifests/", "--git-ref", "main", "--db", scratch, "--auto-approve", "--no-validate")
        assert code == 0, err
        code, comment, err = cli_run("plan", "manifests/", "--db", scratch, "--evaluate", "--max-eval-cost", "0.01", "--format", "markdown")
    assert code == 1
    assert comment.startswith("### reconciler plan\n\n**Plan: 0 to create, 1 to update, 0 to delete.**")
    assert "**❌ assignment classifier-classify (task classify, 6 labelled inputs)**: accuracy -67 points, McNemar exact p = 0.125" in comment
    assert "| accuracy (95% CI) | 100% (61%–100%) | 33% (10%–70%) |" in comment
    assert "- ❌ `max_drop`: accuracy 100% → 33%: fell 67 points, 57 points more than the 10 points allowed" in comment
    assert "<details><summary>Regressed: 4 items</summary>" in comment
    assert "gate min_accuracy failed" in err
