"""Guard rails through plan/apply on real databases (SQLite and PostgreSQL). The guard functions on
values: tests/plan/test_guards.py."""

from __future__ import annotations

from tests.gitops.helpers import config


def test_prevent_destroy_and_mass_delete_through_apply(cli_run, write_manifests, db_url: str) -> None:
    three = {"a": 0.1, "b": 0.2, "c": 0.3}
    root = write_manifests(config(three, protected={"agent/a"}))
    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0

    write_manifests({"agents.yaml": "---".join(config({"b": 0.2, "c": 0.3})["agents.yaml"].split("---")), "assignments.yaml": config({"b": 0.2, "c": 0.3})["assignments.yaml"]})
    code, out, err = cli_run("apply", str(root), "--db", db_url, "--auto-approve")
    assert code == 1
    assert "Agent 'a' is protected by the annotation reconciler/prevent-destroy" in err
    assert "Traceback" not in err

    # a manifests directory that lost most files: refused, then allowed explicitly
    only_provider = write_manifests({"providers.yaml": config()["providers.yaml"]}, directory="partial")
    code, _, err = cli_run("plan", str(only_provider), "--db", db_url)
    assert code == 1 and "protected by the annotation" in err and "--allow-mass-delete" in err
    assert "would delete 7 of the 8 resources" in err
    keep_a = ("--exclude", "agent/a", "--exclude", "assignment/a-classify", "--exclude", "task/classify")
    code, out, err = cli_run("apply", str(only_provider), "--db", db_url, "--auto-approve", "--allow-mass-delete", *keep_a)
    assert code == 0, err
    assert "Apply complete (#2): 0 created, 0 updated, 4 deleted." in out
    assert cli_run("get", "agents", "a", "--db", db_url)[0] == 0


def test_target_applies_only_the_target(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests(config({"a": 0.1, "b": 0.2}))
    code, out, err = cli_run("apply", str(root), "--db", db_url, "--auto-approve", "--target", "agent/b")
    assert code == 0, err
    assert out.splitlines()[:3] == ["  + provider openai", "  + agent b", ""]
    code, out, _ = cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode")
    assert code == 2 and "+ agent a" in out and "+ agent b" not in out
    code, _, err = cli_run("plan", str(root), "--db", db_url, "--target", "agent/zzz")
    assert (code, "matches nothing" in err) == (1, True)
    code, out, _ = cli_run("plan", str(root), "--db", db_url, "--exclude", "task/zzz", "--out", "saved.json")
    assert code == 0 and "--exclude 'task/zzz' matches nothing" in out
    code, _, err = cli_run("apply", "saved.json", "--db", db_url, "--target", "agent/a")
    assert code == 1 and "a saved plan is applied exactly as it was made" in err
