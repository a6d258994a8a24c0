"""plan and apply against real databases (SQLite file and PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from reconciler.state.db import database_url
from tests.test_validate import AGENT, ASSIGNMENT, PROVIDER, TASK, VALID


def sql(db_url: str, statement: str, **params: object) -> list:
    engine = create_engine(database_url(db_url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def apply(cli_run, root: Path, db_url: str, *extra: str) -> tuple[int, str, str]:
    # no provider probes here: validation after apply is tested in tests/providers/
    return cli_run("apply", str(root), "--db", db_url, "--auto-approve", "--no-validate", *extra)


def plan(cli_run, root: Path, db_url: str, *extra: str) -> tuple[int, str, str]:
    return cli_run("plan", str(root), "--db", db_url, *extra)


def test_create_then_plan_is_empty(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests(VALID)
    code, out, _ = plan(cli_run, root, db_url, "--detailed-exitcode")
    assert code == 2
    assert out == (
        "  + provider ollama-local\n  + task classify\n  + agent triage\n  + assignment triage-classify\n\n"
        "Plan: 4 to create, 0 to update, 0 to delete.\n"
    )
    code, out, err = apply(cli_run, root, db_url)
    assert code == 0, err
    assert out.endswith("Apply complete (#1): 4 created, 0 updated, 0 deleted.\n")
    assert plan(cli_run, root, db_url, "--detailed-exitcode") == (0, "No changes. The database matches the manifests.\n", "")
    code, out, _ = apply(cli_run, root, db_url)
    assert (code, out) == (0, "No changes. The database matches the manifests.\n")
    rows = sql(db_url, "SELECT a.name, p.name, a.temperature FROM agent_configs a JOIN llm_providers p ON p.id = a.provider_id")
    assert [tuple(r) for r in rows] == [("triage", "ollama-local", 0.7)]


def test_get_assignments_joins_names_and_provider(cli_run, write_manifests, db_url: str) -> None:
    apply(cli_run, write_manifests(VALID), db_url)
    code, out, _ = cli_run("get", "assignments", "--db", db_url, "-o", "json")
    rows = json.loads(out)
    assert code == 0
    assert [{k: r[k] for k in ("name", "agent_name", "task_name", "provider_name", "provider_type", "is_active", "managed")} for r in rows] == [
        {"name": "triage-classify", "agent_name": "triage", "task_name": "classify", "provider_name": "ollama-local",
         "provider_type": "ollama", "is_active": True, "managed": True}
    ]
    code, _, err = cli_run("get", "agent", "nope", "--db", db_url)
    assert code == 1 and "no agent named 'nope' in the database" in err


def test_update_shows_field_changes_and_unified_diff(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests(VALID)
    apply(cli_run, root, db_url)
    changed = AGENT.replace("  system_prompt: Classify.\n", "  system_prompt: |\n    Classify the message.\n    Answer in JSON.\n  temperature: 0.2\n")
    write_manifests({"agents.yaml": changed})
    code, out, _ = plan(cli_run, root, db_url)
    assert out == (
        "  ~ agent triage:\n"
        "      system_prompt:\n"
        "          --- old\n"
        "          +++ new\n"
        "          @@ -1 +1,2 @@\n"
        "          -Classify.\n"
        "          +Classify the message.\n"
        "          +Answer in JSON.\n"
        "      temperature 0.7 → 0.2\n"
        "\nPlan: 0 to create, 1 to update, 0 to delete.\n"
    )
    write_manifests({"agents.yaml": AGENT + "  temperature: 0.2\n"})
    code, out, _ = plan(cli_run, root, db_url)
    assert out.splitlines()[0] == "  ~ agent triage: temperature 0.7 → 0.2"
    assert apply(cli_run, root, db_url)[0] == 0
    assert plan(cli_run, root, db_url, "--detailed-exitcode")[0] == 0


def test_prune_and_no_prune(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests(VALID)
    apply(cli_run, root, db_url)
    (root / "tasks.yaml").write_text(TASK)
    (root / "agents.yaml").unlink()
    code, out, _ = plan(cli_run, root, db_url, "--no-prune")
    assert out == "No changes. The database matches the manifests.\nPrune is off (--no-prune): resources removed from the manifests are kept.\n"
    code, out, _ = plan(cli_run, root, db_url)
    assert out == "  - assignment triage-classify\n  - agent triage\n\nPlan: 0 to create, 0 to update, 2 to delete.\n"
    assert apply(cli_run, root, db_url)[0] == 0
    assert sql(db_url, "SELECT count(*) FROM agent_configs")[0][0] == 0
    assert sql(db_url, "SELECT count(*) FROM agent_task_assignments")[0][0] == 0


def _insert_unmanaged_agent(db_url: str, name: str, provider: str) -> None:
    sql(
        db_url,
        "INSERT INTO agent_configs (id, name, provider_id, model_name, system_prompt, is_active, created_at, updated_at) "
        "SELECT :id, :name, id, 'gpt-4', 'hi', :active, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM llm_providers WHERE name = :provider",
        id=uuid.uuid4().hex if db_url.startswith("sqlite") else str(uuid.uuid4()),
        name=name,
        provider=provider,
        active=True,
    )


def test_unmanaged_rows_are_reported_and_never_touched(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests(VALID)
    apply(cli_run, root, db_url)
    _insert_unmanaged_agent(db_url, "legacy-bot", "ollama-local")
    code, out, _ = plan(cli_run, root, db_url)
    assert out == "No changes. The database matches the manifests.\nUnmanaged (never touched): agent legacy-bot\n"
    # removing the provider it uses from the manifests is refused, naming the row that refers to it
    (root / "providers.yaml").unlink()
    (root / "agents.yaml").unlink()
    (root / "tasks.yaml").write_text(TASK)
    code, _, err = plan(cli_run, root, db_url)
    assert code == 1
    assert "cannot delete Provider 'ollama-local': Agent 'legacy-bot' still refers to it (a row reconciler does not manage)" in err
    # a manifest naming the unmanaged row is a conflict, not a silent takeover
    root2 = write_manifests({**VALID, "legacy.yaml": AGENT.replace("name: triage}", "name: legacy-bot}")}, "m2")
    code, _, err = plan(cli_run, root2, db_url)
    assert code == 1
    assert "Agent \"legacy-bot\": Agent 'legacy-bot' already exists in the database but is not managed by reconciler" in err
    assert "reconciler adopt agent/legacy-bot" in err


def test_saved_plan_applies_exactly_and_refuses_when_stale(cli_run, write_manifests, db_url: str, tmp_path: Path) -> None:
    root = write_manifests(VALID)
    plan_file = tmp_path / "plan.json"
    code, out, _ = plan(cli_run, root, db_url, "--out", str(plan_file))
    assert code == 0 and f"Saved the plan to {plan_file}" in out
    saved = json.loads(plan_file.read_text())
    assert saved["summary"] == {"create": 4, "update": 0, "delete": 0}
    # the manifests change after the plan was made: applying the saved plan still does what it showed
    write_manifests({"agents.yaml": AGENT + "  temperature: 0.1\n"})
    code, out, err = cli_run("apply", str(plan_file), "--db", db_url)
    assert code == 0, err
    assert sql(db_url, "SELECT temperature FROM agent_configs")[0][0] == 0.7
    # a plan made before someone else changed the database is refused, and nothing changes
    plan(cli_run, root, db_url, "--out", str(plan_file))
    sql(db_url, "UPDATE agent_configs SET model_name = 'other'")
    code, _, err = cli_run("apply", str(plan_file), "--db", db_url)
    assert code == 1
    assert "the database changed after this plan was made" in err
    assert sql(db_url, "SELECT temperature, model_name FROM agent_configs")[0] == (0.7, "other")
    assert sql(db_url, "SELECT count(*) FROM reconciler_applies")[0][0] == 1


def test_not_a_saved_plan(cli_run, tmp_path: Path, sqlite_url: str) -> None:
    bogus = tmp_path / "plan.json"
    bogus.write_text("{not json")
    code, _, err = cli_run("apply", str(bogus), "--db", sqlite_url)
    assert code == 1
    assert "plan.json: error: not a saved reconciler plan" in err


def test_json_plan_is_stable_and_documented(cli_run, write_manifests, sqlite_url: str) -> None:
    root = write_manifests(VALID)
    apply(cli_run, root, sqlite_url)
    write_manifests({"agents.yaml": AGENT + "  temperature: 0.2\n"})
    code, out, _ = plan(cli_run, root, sqlite_url, "--json")
    data = json.loads(out)
    assert sorted(data) == [
        "changes", "created_at", "enum_values_missing", "format_version", "git", "prune", "sources", "state_fingerprint", "summary",
        "unmanaged", "warnings",
    ]
    change = data["changes"][0]
    assert {k: change[k] for k in ("action", "kind", "name", "fields")} == {
        "action": "update", "kind": "Agent", "name": "triage",
        "fields": [{"field": "temperature", "old": 0.7, "new": 0.2, "sensitive": False, "drift": False}],
    }


def test_apply_without_terminal_needs_auto_approve(cli_run, write_manifests, tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "state.db"
    code, out, err = cli_run("apply", str(write_manifests(VALID)), "--db", f"sqlite:///{db}")
    assert code == 1
    assert "refusing to apply without confirmation: there is no terminal to ask on" in err
    assert not db.exists()


def test_history_records_git_commit(cli_run, write_manifests, sqlite_url: str) -> None:
    root = write_manifests(VALID)
    env = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com", "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "Add triage agent"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, env={**env, "PATH": "/usr/bin:/bin"})
    assert apply(cli_run, root, sqlite_url)[0] == 0
    code, out, _ = cli_run("history", "--db", sqlite_url, "-o", "json")
    (entry,) = json.loads(out)
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert (entry["git_commit"], entry["git_dirty"], entry["git_author"], entry["git_subject"]) == (head, False, "Ada <ada@example.com>", "Add triage agent")
    assert (entry["created"], entry["updated"], entry["deleted"]) == (4, 0, 0)
    assert "@" in entry["user"]
    code, out, _ = cli_run("history", "--db", sqlite_url)
    assert head[:10] in out and "Add triage agent" in out


def test_lock_timeout_names_the_holder(cli_run, write_manifests, db_url: str) -> None:
    from reconciler.state.db import open_engine
    from reconciler.state.lock import apply_lock

    root = write_manifests(VALID)
    apply(cli_run, root, db_url)
    write_manifests({"agents.yaml": AGENT + "  temperature: 0.2\n"})
    engine = open_engine(db_url, create=False)
    with apply_lock(engine, 1, command="apply"):
        code, _, err = apply(cli_run, root, db_url, "--lock-timeout", "0.3")
    engine.dispose()
    assert code == 1
    assert "another apply holds the state lock (" in err and "gave up after waiting 0.3 s" in err
    assert "apply" in err and "@" in err
    assert sql(db_url, "SELECT temperature FROM agent_configs")[0][0] == 0.7


def test_unreachable_database(cli_run, write_manifests) -> None:
    code, _, err = cli_run("plan", str(write_manifests(VALID)), "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert code == 1
    assert "database error while opening the database (postgresql+psycopg://nobody@127.0.0.1:1/none)" in err
    assert "Traceback" not in err


@pytest.mark.postgres
def test_read_only_database_changes_nothing(cli_run, write_manifests, pg_url: str) -> None:
    root = write_manifests(VALID)
    apply(cli_run, root, pg_url)
    dbname = pg_url.rsplit("/", 1)[1]
    sql(pg_url, f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    write_manifests({"agents.yaml": AGENT + "  temperature: 0.2\n"})
    code, _, err = apply(cli_run, root, pg_url)
    assert code == 1
    assert "read-only transaction" in err
    assert sql(pg_url, "SELECT temperature FROM agent_configs")[0][0] == 0.7


def test_plan_and_apply_never_import_heavy_modules(write_manifests, sqlite_url: str) -> None:
    root = write_manifests(VALID)
    probe = (
        "import sys\nfrom reconciler.cli import main\n"
        "for argv in (['validate', R], ['apply', R, '--db', D, '--auto-approve', '--no-validate'], ['plan', R, '--db', D]):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code in (0, None), e.code\n"
        "print(sorted(m for m in ('pydantic_ai', 'openai', 'httpx', 'xllamacpp', 'watchfiles', 'procrastinate') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", f"R = {str(root)!r}; D = {sqlite_url!r}\n" + probe],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_read_only_sqlite_database_changes_nothing(cli_run, write_manifests, tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    root = write_manifests(VALID)
    apply(cli_run, root, f"sqlite:///{path}")
    write_manifests({"agents.yaml": AGENT + "  temperature: 0.2\n"})
    code, out, err = apply(cli_run, root, f"sqlite:///file:{path}?mode=ro&uri=true")
    assert code == 1
    assert "attempt to write a readonly database" in err
    assert "hint: the database is read-only" in err
    assert sql(f"sqlite:///{path}", "SELECT temperature FROM agent_configs")[0][0] == 0.7


def test_history_table_reads_no_plans_and_json_shows_them(cli_run, write_manifests, db_url: str) -> None:
    """The table view shows the counts only, so the plans (6 MB for an apply of 10,000 resources)
    are not read for it; everything else is the same as with them."""
    from reconciler.state.db import open_engine
    from reconciler.state.queries import list_history

    root = write_manifests(VALID)
    assert apply(cli_run, root, db_url)[0] == 0
    engine = open_engine(db_url, create=False)
    assert engine is not None
    try:
        (full,), (light,) = list_history(engine), list_history(engine, plans=False)
    finally:
        engine.dispose()
    assert full["plan"]["changes"] and "plan" not in light
    assert light == {k: v for k, v in full.items() if k != "plan"}
    code, out, _ = cli_run("history", "--db", db_url, "-o", "json")
    assert code == 0 and json.loads(out)[0]["plan"] == full["plan"]
