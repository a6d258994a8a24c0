"""The CI pipeline of examples/ci, played locally against a real git repository and database:
pull request -> plan exits 2 -> merge -> apply -> plan exits 0 -> out-of-band edit -> drift exits 2
-> self-heal -> drift exits 0."""

from __future__ import annotations

import json

import yaml

from tests.conftest import REPO
from tests.gitops.helpers import config
from tests.gitops.test_drift import sql

WORKFLOW = REPO / "examples" / "ci" / ".github" / "workflows" / "reconciler.yml"


def _run_lines(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_the_example_workflow_and_hooks_run_the_commands_this_test_plays() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    assert "reconciler validate manifests/" in _run_lines(jobs["plan"])
    assert "reconciler plan manifests/ --detailed-exitcode --format markdown" in _run_lines(jobs["plan"])
    assert "reconciler apply manifests/ --auto-approve" in _run_lines(jobs["apply"])
    assert "reconciler drift manifests/ --detailed-exitcode" in _run_lines(jobs["drift"])
    evaluate = _run_lines(jobs["evaluate"])
    assert 'reconciler apply manifests/ --git-ref "origin/${{ github.base_ref }}" --auto-approve --no-validate' in evaluate
    assert "reconciler plan manifests/ --evaluate --max-eval-cost 0 --format markdown" in evaluate
    assert jobs["evaluate"]["env"]["RECONCILER_DATABASE_URL"].startswith("sqlite:///")  # a scratch database, no secrets
    assert not any("secrets." in str(v) for v in jobs["evaluate"]["env"].values())
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert (hook["id"], hook["entry"], hook["pass_filenames"]) == ("reconciler-validate", "reconciler validate", False)
    example = yaml.safe_load((REPO / "examples" / "ci" / ".pre-commit-config.yaml").read_text())
    assert example["repos"][0]["hooks"][0]["id"] == hook["id"]


def test_pipeline_played_locally(cli_run, git_repo, db_url: str, monkeypatch) -> None:
    repo = git_repo()
    monkeypatch.chdir(repo.root)  # CI runs from the checkout
    repo.commit(config({"triage": 0.2}), "Add triage agent")

    # main is applied once (bootstrap), then a pull request changes the prompt config
    assert cli_run("apply", "manifests/", "--db", db_url, "--auto-approve")[0] == 0
    repo.git("checkout", "-q", "-b", "warmer-triage")
    repo.commit(config({"triage": 0.6, "summary": 0.3}), "Warm up triage, add summary")

    # pre-commit hook and the pull-request job
    assert cli_run("validate", "manifests/")[0] == 0
    code, comment, _ = cli_run("plan", "manifests/", "--db", db_url, "--detailed-exitcode", "--format", "markdown")
    assert code == 2
    assert comment.startswith("### reconciler plan\n\n**Plan: 2 to create, 1 to update, 0 to delete.**")
    assert "~ agent triage: temperature 0.2 → 0.6" in comment

    # a broken commit on the branch: the hook and the plan job fail with a located message
    repo.commit({"agents.yaml": "apiVersion: reconciler/v1\nkind: Agent\nmetadata: {name: triage}\nspec: {provider: nope, model_name: m}\n"}, "oops")
    code, _, err = cli_run("validate", "manifests/")
    assert code == 1 and "manifests/agents.yaml:4:" in err and "refers to Provider 'nope'" in err
    repo.git("revert", "--no-edit", "HEAD")

    # merged: the main-branch job applies, then a plan is empty
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--ff-only", "warmer-triage")
    code, out, err = cli_run("apply", "manifests/", "--db", db_url, "--auto-approve")
    assert code == 0, err
    assert "Apply complete (#2): 2 created, 1 updated, 0 deleted." in out
    assert cli_run("plan", "manifests/", "--db", db_url, "--detailed-exitcode")[0] == 0
    (latest,) = json.loads(cli_run("history", "--db", db_url, "-n", "1", "-o", "json")[1])
    assert (latest["git_commit"], latest["git_subject"], latest["git_dirty"]) == (repo.git("rev-parse", "HEAD"), 'Revert "oops"', False)

    # someone edits the database by hand: the scheduled drift job notices
    sql(db_url, "UPDATE agent_configs SET temperature = 1.9 WHERE name = 'summary'")
    code, out, _ = cli_run("drift", "manifests/", "--db", db_url, "--detailed-exitcode")
    assert code == 2 and "agent summary: temperature 0.3 → 1.9 (drift: changed outside reconciler since apply #2)" in out

    # self-heal (what `reconciler watch --self-heal` does on its interval), then no drift
    code, out, err = cli_run("watch", "manifests/", "--db", db_url, "--self-heal", "--once")
    assert code == 0, err
    assert "applied #3: 0 created, 1 updated, 0 deleted" in out
    assert cli_run("drift", "manifests/", "--db", db_url, "--detailed-exitcode")[0] == 0
    assert cli_run("plan", "manifests/", "--db", db_url, "--detailed-exitcode")[0] == 0
