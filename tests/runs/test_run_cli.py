"""Runs end to end through the CLI with a FunctionModel: apply, run, results, snapshot, resume."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, update

from reconciler.state.tables import analysis_runs, run_results
from tests.runs.conftest import CLASSIFY_TASK, CONFIG, RUN, keyword_classifier


def _setup(write_manifests, cli_run, db: str, run: str = RUN) -> Path:  # type: ignore[no-untyped-def]
    root = write_manifests({"config.yaml": CONFIG, "run.yaml": run})
    code, out, err = cli_run("apply", str(root), "--db", db, "--auto-approve")
    assert code == 0, err
    return root


def test_apply_creates_pending_run_then_run_completes(write_manifests, cli_run, fake_model, db_url: str) -> None:
    prompts = fake_model(keyword_classifier)
    _setup(write_manifests, cli_run, db_url)
    code, out, err = cli_run("runs", "list", "--db", db_url, "-o", "json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["name"], row["status"], row["items"]) == ("sample", "pending", 4)

    code, out, err = cli_run("run", "sample", "--db", db_url)
    assert code == 0, err
    assert "Run sample: completed — 4/4 valid, 0 failed, accuracy 100%" in out
    assert "Message: The app crashes on login" in out  # the results table
    assert sorted(prompts) == sorted(
        ["Message: The app crashes on login", "Message: Please add dark mode", "Message: How do I reset my password?", "Message: Export is broken"]
    )

    code, out, _ = cli_run("runs", "results", "sample", "--db", db_url, "-o", "json")
    results = json.loads(out)
    assert [r["output"]["category"] for r in results] == ["bug", "feature", "question", "bug"]
    assert all(r["valid"] and r["correct"] and r["attempts"] == 1 for r in results)

    code, out, _ = cli_run("runs", "results", "sample", "--db", db_url, "-o", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 and rows[0]["expected"] == "bug"

    code, out, _ = cli_run("runs", "show", "sample", "--db", db_url, "-o", "json")
    detail = json.loads(out)
    assert detail["status"] == "completed" and detail["started_at"] and detail["completed_at"]
    assert detail["config_snapshot"]["agent"]["system_prompt"] == "Classify the message."
    assert detail["config_snapshot"]["provider"] == {"name": "local", "type": "llamacpp", "base_url": None, "model_path": None, **(
        {"model_file": detail["config_snapshot"]["provider"]["model_file"]} if "model_file" in detail["config_snapshot"]["provider"] else {}
    )}
    assert detail["config_snapshot"]["task"]["response_schema"]["required"] == ["category", "confidence"]
    assert len(detail["config_sha256"]) == 64
    assert detail["accuracy"] == 1.0 and detail["cost_estimate"] == 0.0

    code, out, _ = cli_run("runs", "show", "sample", "--db", db_url)
    assert "config_snapshot:" in out and "status:" in out

    # running again does nothing new: every item is finished
    code, out, _ = cli_run("run", "sample", "--db", db_url, "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0] == {"event": "start", "items": 4, "todo": 0}
    assert events[-1]["status"] == "completed" and events[-1]["processed_now"] == 0


def test_runs_with_same_configuration_share_the_hash(write_manifests, cli_run, fake_model, sqlite_url: str) -> None:
    fake_model(keyword_classifier)
    second = RUN.replace("name: sample", "name: sample-2") + "    - {text: one more, category: bug}\n"
    root = write_manifests({"config.yaml": CONFIG, "run.yaml": RUN, "run2.yaml": second})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    for name in ("sample", "sample-2"):
        assert cli_run("run", name, "--db", sqlite_url)[0] == 0
    shas = [json.loads(cli_run("runs", "show", n, "--db", sqlite_url, "-o", "json")[1])["config_sha256"] for n in ("sample", "sample-2")]
    assert shas[0] == shas[1]


def test_started_run_is_immutable_but_pending_run_can_change(write_manifests, cli_run, fake_model, db_url: str) -> None:
    fake_model(keyword_classifier)
    root = _setup(write_manifests, cli_run, db_url)
    (root / "run.yaml").write_text(RUN.replace("concurrency: 3", "concurrency: 2"))
    code, out, err = cli_run("plan", str(root), "--db", db_url)
    assert code == 0, err
    assert "~ run sample: concurrency 3 → 2" in out
    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
    assert cli_run("run", "sample", "--db", db_url)[0] == 0

    (root / "run.yaml").write_text(RUN.replace("Message: {text}", "Text: {text}"))
    code, out, err = cli_run("plan", str(root), "--db", db_url)
    assert code == 1
    assert "run 'sample' has already started, so its spec cannot change" in err
    assert "give the changed run a new name" in err

    # removing the manifest never deletes the run or its results
    (root / "run.yaml").unlink()
    code, out, err = cli_run("apply", str(root), "--db", db_url, "--auto-approve")
    assert code == 0, err
    assert "run" not in out.split("Plan:")[0] if "Plan:" in out else "No changes" in out
    assert json.loads(cli_run("runs", "list", "--db", db_url, "-o", "json")[1])[0]["status"] == "completed"


def test_resume_processes_only_unfinished_items(write_manifests, cli_run, fake_model, sqlite_url: str) -> None:
    prompts = fake_model(keyword_classifier)
    _setup(write_manifests, cli_run, sqlite_url)
    assert cli_run("run", "sample", "--db", sqlite_url)[0] == 0
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:  # as if the process had been killed after two items
        run_id = conn.execute(select(analysis_runs.c.id)).scalar_one()
        conn.execute(run_results.delete().where(run_results.c.item_index >= 2))
        conn.execute(update(analysis_runs).values(status="running", runner="elsewhere:1", heartbeat_at=None))
    prompts.clear()
    code, out, err = cli_run("run", "sample", "--db", sqlite_url, "--no-cache")  # the cache would answer them
    assert code == 0, err
    assert sorted(prompts) == ["Message: Export is broken", "Message: How do I reset my password?"]
    with engine.connect() as conn:
        indexes = conn.execute(select(run_results.c.item_index).where(run_results.c.run_id == run_id)).scalars().all()
    assert sorted(indexes) == [0, 1, 2, 3]


def test_invalid_answers_make_a_partial_run_with_reasons(write_manifests, cli_run, fake_model, sqlite_url: str) -> None:
    fake_model(lambda p: {"category": "urgent", "confidence": 5} if "Export" in p else keyword_classifier(p))
    _setup(write_manifests, cli_run, sqlite_url)
    code, out, err = cli_run("run", "sample", "--db", sqlite_url)
    assert code == 100, err  # every item finished, some failed
    assert "Run sample: partial — 3/4 valid, 1 failed, accuracy 75%" in out
    results = json.loads(cli_run("runs", "results", "sample", "--db", sqlite_url, "-o", "json")[1])
    bad = results[3]
    assert not bad["valid"] and bad["attempts"] == 3
    assert "'urgent' is not one of" in bad["error"]
    # --retry-failed processes the failed item again (and only it), replacing its row
    fake_model(keyword_classifier)
    code, out, err = cli_run("run", "sample", "--db", sqlite_url, "--retry-failed")
    assert "Run sample: completed — 4/4 valid" in out


def test_on_apply_trigger_starts_the_run(write_manifests, cli_run, fake_model, sqlite_url: str) -> None:
    fake_model(keyword_classifier)
    root = write_manifests({"config.yaml": CONFIG, "run.yaml": RUN + "  trigger: on_apply\n"})
    code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")
    assert code == 0, err
    assert "Starting 1 run with trigger: on_apply: sample" in out
    assert "Run sample: completed" in out


def test_apply_collects_no_garbage_until_its_commit_and_collects_for_its_runs(
    write_manifests, cli_run, fake_model, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`apply` reads, plans and writes with the collector off (``gcpolicy.no_collection``); the
    on_apply runs it starts after the commit call models with it on again."""
    import gc

    import reconciler.cli.core as core

    seen: list[tuple[str, bool]] = []
    shown = core.echo_plan
    monkeypatch.setattr(core, "echo_plan", lambda text: seen.append(("plan", gc.isenabled())) or shown(text))

    def answer(prompt: str) -> dict[str, object]:
        seen.append(("run", gc.isenabled()))
        return keyword_classifier(prompt)

    fake_model(answer)
    root = write_manifests({"config.yaml": CONFIG, "run.yaml": RUN + "  trigger: on_apply\n"})
    code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")
    assert code == 0 and "Run sample: completed" in out, err
    assert seen[0] == ("plan", False) and seen[1:] == [("run", True)] * 4
    assert gc.isenabled()


def test_on_apply_run_that_cannot_start_is_reported_after_the_apply(write_manifests, cli_run, fake_model, sqlite_url: str) -> None:
    fake_model(keyword_classifier)
    inactive = CONFIG.replace("metadata: {name: classifier}\nspec: {", "metadata: {name: classifier}\nspec: {is_active: false, ")
    root = write_manifests({"config.yaml": inactive, "run.yaml": RUN + "  trigger: on_apply\n"})
    code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")
    assert code == 1
    assert "Apply complete (#1): 5 created" in out
    assert "error: run 'sample' cannot start: agent 'classifier' is inactive" in err and "Traceback" not in err
    assert json.loads(cli_run("runs", "show", "sample", "--db", sqlite_url, "-o", "json")[1])["status"] == "pending"


def test_run_file_applies_and_runs(write_manifests, cli_run, fake_model, sqlite_url: str) -> None:
    fake_model(keyword_classifier)
    root = write_manifests({"config.yaml": CONFIG})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    run_dir = write_manifests({"run.yaml": RUN}, directory="adhoc")
    code, out, err = cli_run("run", str(run_dir / "run.yaml"), "--db", sqlite_url)
    assert code == 0, err
    assert "Run sample: completed" in out
    code, out, _ = cli_run("history", "--db", sqlite_url, "-o", "json")
    assert [h["command"] for h in json.loads(out)] == ["run", "apply"]


def test_run_file_with_unknown_assignment(write_manifests, cli_run, sqlite_url: str) -> None:
    root = write_manifests({"config.yaml": CONFIG})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    run_dir = write_manifests({"run.yaml": RUN.replace("assignment: classifier-classify", "assignment: nope")}, directory="adhoc")
    code, out, err = cli_run("run", str(run_dir / "run.yaml"), "--db", sqlite_url)
    assert code == 1
    assert "run.yaml:5:" in err and "refers to Assignment 'nope', which is not in the database" in err


@pytest.mark.parametrize(
    ("kind", "name"),
    [("Assignment", "classifier-classify"), ("Agent", "classifier"), ("Provider", "local")],
    ids=["assignment", "agent", "provider"],
)
def test_inactive_parts_refuse_to_run(write_manifests, cli_run, fake_model, sqlite_url: str, kind: str, name: str) -> None:
    fake_model(keyword_classifier)
    marker = f"kind: {kind}\nmetadata: {{name: {name}}}\nspec: {{"
    config = CONFIG.replace(marker, marker + "is_active: false, ")
    assert config != CONFIG
    root = write_manifests({"config.yaml": config, "run.yaml": RUN})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    code, out, err = cli_run("run", "sample", "--db", sqlite_url)
    assert code == 1
    assert f"{kind.lower()} '{name}' is inactive" in err
    assert "Traceback" not in err


def test_unknown_run_name(cli_run, write_manifests, sqlite_url: str) -> None:
    _setup(write_manifests, cli_run, sqlite_url)
    code, _, err = cli_run("run", "nope", "--db", sqlite_url)
    assert code == 1 and "no run or experiment named 'nope'" in err


def test_agent_test_command(write_manifests, cli_run, fake_model, sqlite_url: str) -> None:
    prompts = fake_model(lambda p: "plain words" if "hello" in p else keyword_classifier(p))
    root = write_manifests({"config.yaml": CONFIG})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    # the agent's only task checks the answer, and the command says which task that was
    code, out, err = cli_run("test", "classifier", "--prompt", "Please add a button", "--db", sqlite_url)
    assert code == 0, err
    assert json.loads(out) == {"category": "feature", "confidence": 80}
    assert "model gemma3-270m" in err and "provider local (llamacpp)" in err and "task classify (the agent's only task)" in err
    # an answer outside the schema is an error, not a rambling success
    code, out, err = cli_run("test", "classifier", "--prompt", "hello", "--db", sqlite_url)
    assert code == 1 and "no valid output after 2 attempts" in err
    # plain text only when asked for
    code, out, err = cli_run("test", "classifier", "--prompt", "hello", "--no-task", "--db", sqlite_url)
    assert code == 0, err
    assert out.strip() == "plain words" and "plain text, no task" in err
    code, out, err = cli_run("test", "classifier", "--prompt", "Please add a button", "--task", "classify", "--db", sqlite_url, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert json.loads(data["response"]) == {"category": "feature", "confidence": 80}
    assert (data["provider_type"], data["model_name"], data["task_name"], data["task_choice"]) == ("llamacpp", "gemma3-270m", "classify", "given")
    assert len(prompts) == 5  # 1 + 2 (the invalid answer, retried once) + 1 + 1


def test_agent_test_with_several_tasks_asks_which(write_manifests, cli_run, fake_model, sqlite_url: str) -> None:
    prompts = fake_model(keyword_classifier)
    second = CLASSIFY_TASK.replace("name: classify}", "name: triage}").replace("name: classifier-classify}", "name: classifier-triage}")
    second = second.replace("{agent: classifier, task: classify}", "{agent: classifier, task: triage}")
    root = write_manifests({"config.yaml": CONFIG, "second.yaml": second})
    code, _, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")
    assert code == 0, err
    code, out, err = cli_run("test", "classifier", "--prompt", "Please add a button", "--db", sqlite_url)
    assert code == 1 and out == ""
    assert "error: agent 'classifier' is assigned to 2 tasks (classify, triage): say which one checks the answer" in err
    assert "hint: pass --task classify (or another of them), or --no-task for a plain-text answer" in err
    assert prompts == []  # nothing was sent
    code, out, err = cli_run("test", "classifier", "--prompt", "Please add a button", "--task", "triage", "--db", sqlite_url)
    assert code == 0 and "task triage" in err and "only task" not in err
    code, _, err = cli_run("test", "classifier", "--prompt", "x", "--task", "triage", "--no-task", "--db", sqlite_url)
    assert code != 0 and "--task and --no-task exclude each other" in err


def test_resume_refuses_a_changed_configuration(write_manifests, cli_run, fake_model, sqlite_url: str) -> None:
    fake_model(lambda p: {"category": "urgent", "confidence": 5} if "Export" in p else keyword_classifier(p))
    root = _setup(write_manifests, cli_run, sqlite_url)
    assert cli_run("run", "sample", "--db", sqlite_url)[0] == 100
    (root / "config.yaml").write_text(CONFIG.replace("Classify the message.", "Classify it."))
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    code, out, err = cli_run("run", "sample", "--db", sqlite_url, "--retry-failed")
    assert code == 1
    assert "started with another configuration" in err and "create a new Run" in err
