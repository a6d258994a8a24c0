"""plan/apply --git-ref: manifests as of a commit, without touching the working tree."""

from __future__ import annotations

import json

from tests.gitops.helpers import config


def test_plan_and_apply_an_older_commit_without_checkout(cli_run, git_repo, db_url: str) -> None:
    repo = git_repo()
    first = repo.commit(config({"triage": 0.2}), "Add triage agent")
    repo.commit(config({"triage": 0.7}), "Warm up triage")
    repo.write({"agents.yaml": "this: [is not valid"})  # uncommitted garbage in the working tree

    code, out, err = cli_run("apply", "manifests", "--repo", str(repo.root), "--git-ref", "HEAD~1", "--db", db_url, "--auto-approve")
    assert code == 0, err
    assert "Apply complete (#1): 4 created" in out
    code, out, err = cli_run("plan", "manifests", "--repo", str(repo.root), "--git-ref", "main", "--db", db_url, "--json")
    plan = json.loads(out)
    assert plan["git"]["ref"] == "main" and plan["sources"] == ["manifests"]
    assert [(c["kind"], c["name"], c["source"]) for c in plan["changes"]] == [("Agent", "triage", "manifests/agents.yaml:1:1")]
    code, out, _ = cli_run("history", "--db", db_url, "-o", "json")
    (record,) = json.loads(out)
    assert (record["git_commit"], record["git_author"], record["git_subject"], record["git_dirty"]) == (
        first, "Ada Lovelace <ada@example.org>", "Add triage agent", False,
    )
    code, out, _ = cli_run("history", "--db", db_url)
    assert first[:10] in out and "Add triage agent" in out and "Ada Lovelace" in out
    assert (repo.root / "manifests" / "agents.yaml").read_text() == "this: [is not valid"


def test_bad_ref_path_and_commit_give_clear_errors(cli_run, git_repo, sqlite_url: str) -> None:
    repo = git_repo()
    repo.commit(config(), "good")
    repo.commit({"agents.yaml": "apiVersion: reconciler/v1\nkind: Agent\nmetadata: {name: Bad_Name}\nspec: {}\n"}, "bad")
    args = ("--repo", str(repo.root), "--db", sqlite_url)

    code, _, err = cli_run("plan", "manifests", "--git-ref", "no-such-branch", *args)
    assert code == 1 and "git ref 'no-such-branch' does not exist" in err
    code, _, err = cli_run("plan", "elsewhere", "--git-ref", "HEAD", *args)
    assert code == 1 and err.startswith("elsewhere: error: does not exist at HEAD")
    code, _, err = cli_run("apply", "manifests", "--git-ref", "HEAD", "--auto-approve", *args)
    assert code == 1
    assert err.startswith("manifests/agents.yaml:3:")  # the path in the repository, not a temporary copy
    assert "reconciler-ref-" not in err and "Traceback" not in err
    code, _, err = cli_run("plan", "manifests", "--repo", "/", "--git-ref", "HEAD", "--db", sqlite_url)
    assert code == 1 and "not inside a git repository" in err
    assert cli_run("plan", "manifests", "--git-ref", "HEAD~1", *args)[0] == 0
