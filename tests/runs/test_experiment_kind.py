"""The Experiment kind through validate, plan and apply: located errors, pending until run, immutable
once started, never pruned, `trigger: on_apply`, and `run FILE`."""

from __future__ import annotations

import json

import pytest

from tests.runs.experiment_helpers import TWO_AGENTS, experiment_manifest, experiment_spec, two_agents
from tests.stub_openai import StubServer

OFFLINE = TWO_AGENTS.replace("BASE", "http://127.0.0.1:9/v1")


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (experiment_spec(agents=["classifier", "ghost"]), "spec.agents.1: refers to Agent 'ghost', which is not defined in the manifests"),
        (experiment_spec(baseline="nobody"), "spec: baseline 'nobody' is not one of the agents (classifier, lazy)"),
        (experiment_spec(agents=["lazy", "lazy"], baseline=None), "spec: agents are listed once each; repeated: lazy"),
        (experiment_spec(inputs_file="data.jsonl"), "spec: give exactly one of inputs or inputs_file"),
        (experiment_spec(agents=[]), "spec.agents: list should have at least 1 item after validation, not 0"),
        (experiment_spec(repeats=0), "spec.repeats: found 0; input should be greater than or equal to 1"),
        (experiment_spec(expected="label"), "spec.expected: expected output field 'label' is not a property of the response_schema of Task 'classify'"),
        (experiment_spec(prompt_template="Message: {body}"), "spec.prompt_template: {body} is not a field of input 0 (fields: category, text)"),
        (experiment_spec(task="triage"), "spec.task: refers to Task 'triage', which is not defined in the manifests"),
    ],
    ids=["unknown-agent", "baseline-not-an-agent", "agent-twice", "two-input-sources", "no-agents", "no-repeats",
         "expected-not-in-schema", "template-field", "unknown-task"],
)
def test_validate_locates_experiment_mistakes(cli_run, write_manifests, spec: dict, error: str) -> None:
    root = write_manifests({"config.yaml": OFFLINE, "experiment.yaml": experiment_manifest("shootout", spec)})
    code, out, err = cli_run("validate", str(root))
    assert code == 1
    assert 'experiment.yaml:1:' in err and f'error: Experiment "shootout" {error}' in err, err


def test_validate_accepts_an_experiment(cli_run, write_manifests) -> None:
    spec = experiment_spec(expected={"input": "category", "output": "category"}, repeats=3, baseline=None)
    code, out, err = cli_run("validate", str(write_manifests({"config.yaml": OFFLINE, "experiment.yaml": experiment_manifest("shootout", spec)})))
    assert (code, err) == (0, "")


@pytest.mark.usefixtures("real_llm_requests")
def test_plan_apply_pending_then_immutable_and_never_pruned(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests({"config.yaml": OFFLINE, "experiment.yaml": experiment_manifest("shootout", experiment_spec())})
    code, out, err = cli_run("plan", str(root), "--db", db_url)
    assert code == 0 and "+ experiment shootout" in out
    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
    listed = json.loads(cli_run("experiments", "list", "--db", db_url, "-o", "json")[1])
    assert [(e["name"], e["status"], e["inputs"]) for e in listed] == [("shootout", "pending", 6)]

    # a pending experiment can still change
    (root / "experiment.yaml").write_text(experiment_manifest("shootout", experiment_spec(repeats=2)))
    code, out, err = cli_run("plan", str(root), "--db", db_url)
    assert code == 0 and "~ experiment shootout: repeats 1 → 2" in out
    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
    assert cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode")[0] == 0  # in sync

    with StubServer(two_agents) as stub:
        (root / "config.yaml").write_text(TWO_AGENTS.replace("BASE", stub.base_url))
        assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
        code, out, err = cli_run("run", "shootout", "--db", db_url, "--no-table")
        assert code == 0, err
    (root / "experiment.yaml").write_text(experiment_manifest("shootout", experiment_spec(repeats=3)))
    code, out, err = cli_run("plan", str(root), "--db", db_url)
    assert code == 1
    assert "experiment 'shootout' has already started, so its spec cannot change" in err
    assert "give the changed experiment a new name (e.g. shootout-2)" in err

    (root / "experiment.yaml").unlink()  # removing the manifest keeps the experiment and its answers
    code, out, err = cli_run("apply", str(root), "--db", db_url, "--auto-approve")
    assert code == 0, err
    assert "experiment" not in out
    report = json.loads(cli_run("experiments", "show", "shootout", "--db", db_url, "-o", "json")[1])
    assert report["status"] == "completed" and [a["valid"] for a in report["arms"]] == [12, 12]


@pytest.mark.usefixtures("real_llm_requests")
def test_trigger_on_apply_starts_the_experiment(cli_run, write_manifests, sqlite_url: str) -> None:
    with StubServer(two_agents) as stub:
        spec = experiment_spec(trigger="on_apply")
        root = write_manifests({"config.yaml": TWO_AGENTS.replace("BASE", stub.base_url), "experiment.yaml": experiment_manifest("shootout", spec)})
        code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--no-validate")
        assert code == 0, err
        assert "Starting 1 run with trigger: on_apply: experiment/shootout" in out
        assert "Experiment shootout: completed (task classify, 6 inputs, baseline classifier)" in out
        assert len(stub.requests) == 12
        # applied again: it has started, so it is not started twice
        code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--no-validate")
        assert code == 0 and "No changes" in out and len(stub.requests) == 12


@pytest.mark.usefixtures("real_llm_requests")
def test_run_file_applies_and_runs_an_experiment(cli_run, write_manifests, sqlite_url: str) -> None:
    with StubServer(two_agents) as stub:
        assert cli_run("apply", str(write_manifests({"config.yaml": TWO_AGENTS.replace("BASE", stub.base_url)})), "--db", sqlite_url,
                       "--auto-approve", "--no-validate")[0] == 0
        other = write_manifests({"experiment.yaml": experiment_manifest("shootout", experiment_spec())}, directory="experiments")
        code, out, err = cli_run("run", str(other / "experiment.yaml"), "--db", sqlite_url)
        assert code == 0, err
        assert "Experiment shootout: completed" in out and len(stub.requests) == 12
        config_in_file = write_manifests({"mixed.yaml": OFFLINE}, directory="mixed")
        code, out, err = cli_run("run", str(config_in_file / "mixed.yaml"), "--db", sqlite_url)
        assert code == 1 and "`reconciler run FILE` takes only Run or Experiment manifests" in err


@pytest.mark.usefixtures("real_llm_requests")
def test_watch_starts_an_on_apply_experiment_once(cli_run, write_manifests, sqlite_url: str) -> None:
    with StubServer(two_agents) as stub:
        spec = experiment_spec(trigger="on_apply")
        root = write_manifests({"config.yaml": TWO_AGENTS.replace("BASE", stub.base_url), "experiment.yaml": experiment_manifest("shootout", spec)})
        code, out, err = cli_run("watch", str(root), "--db", sqlite_url, "--once", "--no-validate", "--json")
        assert code == 0, out + err
        events = [json.loads(line) for line in out.splitlines()]
        finished = next(e for e in events if e["event"] == "run" and e["phase"] == "finished")
        assert (finished["run"], finished["status"]) == ("experiment/shootout", "completed")
        assert [a["items_succeeded"] for a in finished["summary"]["arms"]] == [6, 6]
        assert len(stub.requests) == 12
        code, out, err = cli_run("watch", str(root), "--db", sqlite_url, "--once", "--no-validate")
        assert code == 0 and "startup: in sync" in out and len(stub.requests) == 12
