"""Drift: out-of-band edits to managed rows, reported apart from changes that come from git."""

from __future__ import annotations

import json

from sqlalchemy import create_engine, text

from reconciler.state.db import database_url
from tests.gitops.helpers import config


def sql(db_url: str, *statements: str) -> None:
    """An out-of-band edit, as another service or a person with psql would make it."""
    engine = create_engine(database_url(db_url))
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def test_drift_reports_out_of_band_edits_and_apply_reverts_them(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests(config({"triage": 0.2, "summary": 0.5}))
    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
    assert cli_run("drift", "--db", db_url, "--detailed-exitcode") == (0, "No drift. The database matches what reconciler last applied.\n", "")

    sql(
        db_url,
        "UPDATE agent_configs SET temperature = 0.7 WHERE name = 'triage'",
        "DELETE FROM agent_task_assignments WHERE agent_id = (SELECT id FROM agent_configs WHERE name = 'summary')",
    )
    code, out, _ = cli_run("drift", "--db", db_url, "--detailed-exitcode")
    assert code == 2
    assert out.splitlines()[:2] == [
        "  ~ agent triage: temperature 0.2 → 0.7 (drift: changed outside reconciler since apply #1)",
        "  - assignment summary-classify: deleted outside reconciler since apply #1",
    ]
    code, out, _ = cli_run("drift", "--db", db_url, "--json")
    assert code == 0
    assert json.loads(out)["drift"][0] == {
        "kind": "Agent", "name": "triage", "since_apply": 1, "deleted": False,
        "fields": [{"field": "temperature", "old": 0.2, "new": 0.7, "sensitive": False, "drift": True}],
    }
    # a git change and a drift side by side in the plan: only the drift is marked as such
    write_manifests({"agents.yaml": config({"triage": 0.2, "summary": 0.9})["agents.yaml"]})
    code, out, _ = cli_run("plan", str(root), "--db", db_url)
    assert "  ~ agent triage: temperature 0.7 → 0.2 (drift: changed outside reconciler since apply #1)" in out
    assert "  ~ agent summary: temperature 0.5 → 0.9\n" in out
    assert "  + assignment summary-classify" in out

    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
    assert cli_run("drift", "--db", db_url, "--detailed-exitcode")[0] == 0
    assert cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode")[0] == 0


def test_drift_can_be_limited_to_the_resources_of_some_manifests(cli_run, write_manifests, sqlite_url: str) -> None:
    root = write_manifests(config({"triage": 0.2}))
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    sql(sqlite_url, "UPDATE task_configs SET description = 'edited by hand'")
    just_agents = write_manifests({"a.yaml": config()["providers.yaml"] + "---" + config()["agents.yaml"]}, directory="agents-only")
    assert cli_run("drift", str(just_agents), "--db", sqlite_url, "--detailed-exitcode")[0] == 0
    code, out, _ = cli_run("drift", str(root), "--db", sqlite_url, "--detailed-exitcode")
    assert code == 2 and 'task classify: description null → "edited by hand"' in out


def test_drift_on_a_database_that_does_not_exist_yet(cli_run, sqlite_url: str) -> None:
    assert cli_run("drift", "--db", sqlite_url, "--detailed-exitcode")[0] == 0


def test_a_row_deleted_outside_reconciler_and_dropped_from_the_manifests_is_forgotten(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests(config({"triage": 0.2, "summary": 0.5}))
    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
    sql(db_url, "DELETE FROM agent_task_assignments WHERE agent_id = (SELECT id FROM agent_configs WHERE name = 'summary')")
    write_manifests({"assignments.yaml": config({"triage": 0.2})["assignments.yaml"]})
    code, out, _ = cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode")
    assert (code, out.splitlines()[0]) == (2, "  - assignment summary-classify")
    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
    assert cli_run("drift", "--db", db_url, "--detailed-exitcode")[0] == 0
    assert cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode")[0] == 0


def test_a_managed_row_renamed_outside_reconciler_is_drift_and_apply_renames_it_back(cli_run, write_manifests, db_url: str) -> None:
    """The seed service lets people rename an agent; the manifests still name it, so that is drift."""
    root = write_manifests(config({"triage": 0.2}))
    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
    sql(db_url, "UPDATE agent_configs SET name = 'triage-renamed' WHERE name = 'triage'", "UPDATE llm_providers SET name = 'renamed'")

    code, out, _ = cli_run("drift", "--db", db_url, "--detailed-exitcode")
    assert code == 2
    assert '  ~ agent triage: name "triage" → "triage-renamed" (drift: changed outside reconciler since apply #1)' in out
    code, out, _ = cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode")
    assert code == 2
    assert '  ~ agent triage: name "triage-renamed" → "triage" (drift: changed outside reconciler since apply #1)' in out
    assert "Plan: 0 to create, 2 to update, 0 to delete." in out  # the agent and the provider; nothing else moves
    code, out, _ = cli_run("plan", str(root), "--db", db_url, "--out", "saved.plan")
    sql(db_url, "UPDATE agent_configs SET name = 'renamed-again' WHERE name = 'triage-renamed'")
    code, _, err = cli_run("apply", "saved.plan", "--db", db_url, "--auto-approve")
    assert code == 1 and "the database changed after this plan was made" in err  # a rename stales a saved plan

    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
    assert cli_run("get", "agents", "--db", db_url, "-o", "json")[1].count('"name": "triage"') == 1
    assert cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode")[0] == 0
    assert cli_run("drift", "--db", db_url, "--detailed-exitcode")[0] == 0
