"""The state fingerprint a saved plan carries: `apply PLANFILE` refuses the plan when the database
changed in any way the plan read, and accepts it when it did not.

On SQLite the fingerprint hashes the rows as the driver returned them (``snapshot._HashedRows``),
so it must come out the same whether the file is read through the standard library's ``sqlite3``
(a plain URL: `plan`, `apply`) or through SQLAlchemy (a URL with an option): a plan saved one way is
applied the other. Any change to a row read changes it, even one the snapshot does not show (a JSON
column's spacing): stricter than the snapshot, never looser. On PostgreSQL, whose row order is not
stable, it is a canonical encoding of the snapshot: a row rewritten unchanged does not stale a plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.state.snapshot import StateSnapshot, fingerprint_of, load_state
from tests.test_bulk_insert import engine_url
from tests.test_plan_apply import apply, plan, sql
from tests.test_validate import AGENT, VALID


def _saved(cli_run, root: Path, url: str, plan_file: Path) -> str:
    code, _, err = plan(cli_run, root, url, "--out", str(plan_file))
    assert code == 0, err
    return str(json.loads(plan_file.read_text())["state_fingerprint"])


def _planned_change(cli_run, write_manifests, url: str, tmp_path: Path) -> tuple[Path, Path, str]:
    """The manifests applied, then one changed and planned into a file: (manifests, plan file, its fingerprint)."""
    root = write_manifests(VALID)
    assert apply(cli_run, root, url)[0] == 0
    write_manifests({"agents.yaml": AGENT + "  temperature: 0.1\n"})
    plan_file = tmp_path / "plan.json"
    return root, plan_file, _saved(cli_run, root, url, plan_file)


def _apply_saved(cli_run, plan_file: Path, url: str) -> tuple[int, str]:
    code, _, err = cli_run("apply", str(plan_file), "--db", url, "--no-validate")
    return code, err


def test_a_plan_saved_through_sqlite3_applies_through_sqlalchemy_and_back(cli_run, write_manifests, sqlite_url: str, tmp_path: Path) -> None:
    root = write_manifests(VALID)
    plan_file = tmp_path / "plan.json"
    # made on a database that does not exist yet (the empty state), applied through SQLAlchemy,
    # which creates the schema first: no rows read is the empty state's fingerprint
    assert _saved(cli_run, root, sqlite_url, plan_file) == StateSnapshot.empty().fingerprint == fingerprint_of({})
    assert _apply_saved(cli_run, plan_file, engine_url(sqlite_url)) == (0, "")
    for made, applied, temperature in ((sqlite_url, engine_url(sqlite_url), "0.1"), (engine_url(sqlite_url), sqlite_url, "0.2")):
        write_manifests({"agents.yaml": AGENT + f"  temperature: {temperature}\n"})
        fingerprint = _saved(cli_run, root, made, plan_file)
        assert fingerprint == load_state(sqlite_url).fingerprint == load_state(engine_url(sqlite_url)).fingerprint
        code, err = _apply_saved(cli_run, plan_file, applied)
        assert code == 0, err
        assert sql(sqlite_url, "SELECT temperature FROM agent_configs") == [(float(temperature),)]


# (what changes, the SQL that changes it): each a change to a row the plan read
CHANGES = {
    "a column": "UPDATE agent_configs SET model_name = 'other'",
    "a flag": "UPDATE agent_task_assignments SET is_active = 0",
    "what was applied": "UPDATE reconciler_resources SET applied = json_set(applied, '$.model_name', 'x') WHERE kind = 'Agent'",
    "a label": """UPDATE reconciler_resources SET labels = '{"team": "b"}' WHERE kind = 'Agent'""",
    "only a JSON column's spacing": "UPDATE reconciler_resources SET applied = replace(applied, ',', ', ') WHERE kind = 'Task'",
    "a row deleted": "DELETE FROM agent_task_assignments",
    "an unmanaged row": (
        # another id: the first hex digit changed (to '1' where it was '0', else a row would collide with itself)
        "INSERT INTO task_configs SELECT (CASE WHEN substr(id, 1, 1) = '0' THEN '1' ELSE '0' END) || substr(id, 2),"
        " 'by-hand', description, response_schema, is_active, created_at, updated_at FROM task_configs"
    ),
    "a row renamed": "UPDATE agent_configs SET name = 'renamed'",
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_any_change_to_what_the_plan_read_refuses_it_both_ways(cli_run, write_manifests, sqlite_url: str, tmp_path: Path, change: str) -> None:
    _, plan_file, before = _planned_change(cli_run, write_manifests, sqlite_url, tmp_path)
    unchanged = load_state(sqlite_url)
    sql(sqlite_url, CHANGES[change])
    assert load_state(sqlite_url).fingerprint == load_state(engine_url(sqlite_url)).fingerprint != before
    if change == "only a JSON column's spacing":  # the snapshot does not show it; the fingerprint is stricter
        assert load_state(sqlite_url).resources == unchanged.resources
    history = sql(sqlite_url, "SELECT count(*) FROM reconciler_applies")
    for url in (sqlite_url, engine_url(sqlite_url)):
        code, err = _apply_saved(cli_run, plan_file, url)
        assert code == 1 and "the database changed after this plan was made" in err, url
    assert sql(sqlite_url, "SELECT count(*) FROM reconciler_applies") == history


def test_a_change_to_a_table_the_plan_does_not_read_keeps_it(cli_run, write_manifests, sqlite_url: str, tmp_path: Path) -> None:
    _, plan_file, before = _planned_change(cli_run, write_manifests, sqlite_url, tmp_path)
    sql(sqlite_url, "INSERT INTO answer_cache VALUES ('c', 'm', 0, 'null', 0, 0, NULL, '2026-01-01 00:00:00.000000')")
    sql(sqlite_url, "UPDATE reconciler_applies SET user = 'someone else'")
    assert load_state(sqlite_url).fingerprint == before
    code, err = _apply_saved(cli_run, plan_file, engine_url(sqlite_url))
    assert code == 0, err


@pytest.mark.postgres
def test_on_postgresql_the_fingerprint_is_of_the_snapshot_not_the_row_order(cli_run, write_manifests, pg_url: str, tmp_path: Path) -> None:
    root, plan_file, before = _planned_change(cli_run, write_manifests, pg_url, tmp_path)
    order = "SELECT kind, name FROM reconciler_resources"
    rows = sql(pg_url, order)
    # rewritten unchanged: the first row's new version goes to the end of the table
    sql(pg_url, "UPDATE reconciler_resources SET labels = labels WHERE kind = :k AND name = :n", k=rows[0][0], n=rows[0][1])
    assert sql(pg_url, order) != rows and sorted(sql(pg_url, order)) == sorted(rows)
    assert load_state(pg_url).fingerprint == before
    code, err = _apply_saved(cli_run, plan_file, pg_url)
    assert code == 0, err
    write_manifests({"agents.yaml": AGENT + "  temperature: 0.2\n"})
    _saved(cli_run, root, pg_url, plan_file)
    sql(pg_url, "UPDATE agent_configs SET model_name = 'other'")
    code, err = _apply_saved(cli_run, plan_file, pg_url)
    assert code == 1 and "the database changed after this plan was made" in err
