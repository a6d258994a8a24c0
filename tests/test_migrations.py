"""The schema is versioned with Alembic, and a database created by the seed's REST service is
brought under reconciler in place: its rows stay, unmanaged, until adopted."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

import reconciler.state.db as db_module
from reconciler.state.db import HEAD_REVISION, database_url
from tests.test_validate import VALID

SEED_DDL = [
    """CREATE TABLE llm_providers (id CHAR(32) PRIMARY KEY, name VARCHAR(255) UNIQUE NOT NULL, type VARCHAR(32) NOT NULL,
       base_url VARCHAR(2048), api_key_encrypted BLOB, is_active BOOLEAN NOT NULL, validation_status VARCHAR(16) NOT NULL,
       validation_error TEXT, validated_at DATETIME, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)""",
    """CREATE TABLE agent_configs (id CHAR(32) PRIMARY KEY, name VARCHAR(255) UNIQUE NOT NULL, description TEXT,
       provider_id CHAR(32) NOT NULL REFERENCES llm_providers(id), model_name VARCHAR(255) NOT NULL, system_prompt TEXT NOT NULL,
       temperature FLOAT, max_tokens INTEGER, is_active BOOLEAN NOT NULL, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)""",
    """CREATE TABLE analysis_runs (id CHAR(32) PRIMARY KEY, agent_assignment_id CHAR(32), config_snapshot JSON,
       time_window_start DATETIME, time_window_end DATETIME, status VARCHAR(16) NOT NULL, started_at DATETIME, completed_at DATETIME,
       proposals_total INTEGER NOT NULL, proposals_approved INTEGER NOT NULL, proposals_rejected INTEGER NOT NULL,
       llm_tokens_used INTEGER NOT NULL, cost_estimate FLOAT NOT NULL)""",
]


def test_head_revision_constant_matches_alembic() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db_module.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


def test_seed_database_is_migrated_in_place(cli_run, write_manifests, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'seed.db'}"
    engine = create_engine(database_url(url))
    pid = uuid.uuid4().hex
    with engine.begin() as conn:
        for ddl in SEED_DDL:
            conn.execute(text(ddl))
        conn.execute(
            text("INSERT INTO llm_providers VALUES (:id, 'Ollama Local', 'ollama', 'http://localhost:11434', NULL, 1, 'connected', NULL, NULL, '2025-01-01', '2025-01-01')"),
            {"id": pid},
        )
        conn.execute(
            text("INSERT INTO agent_configs VALUES (:id, 'Message Classifier', NULL, :pid, 'llama3', 'Classify.', 0.7, 500, 1, '2025-01-01', '2025-01-01')"),
            {"id": uuid.uuid4().hex, "pid": pid},
        )
    code, out, err = cli_run("plan", str(write_manifests(VALID)), "--db", url)
    assert code == 0, err
    assert out.endswith("Plan: 4 to create, 0 to update, 0 to delete.\nUnmanaged (never touched): agent Message Classifier, provider Ollama Local\n")
    with engine.connect() as conn:
        assert not inspect(conn).has_table("alembic_version")  # plan wrote nothing
    code, out, err = cli_run("apply", str(write_manifests(VALID)), "--db", url, "--auto-approve")
    assert code == 0, err
    assert "Unmanaged (never touched): agent Message Classifier, provider Ollama Local" in out
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
        columns = {c["name"] for c in inspect(conn).get_columns("analysis_runs")}
        assert {"name", "config_sha256", "items_total"} <= columns
        assert "ix_analysis_runs_name" in {ix["name"] for ix in inspect(conn).get_indexes("analysis_runs")}
        assert conn.execute(text("SELECT count(*) FROM agent_configs")).scalar() == 2
        assert conn.execute(text("SELECT validation_status FROM llm_providers WHERE name = 'Ollama Local'")).scalar() == "connected"
    engine.dispose()


def test_a_database_of_the_first_revision_gains_provider_models(tmp_path: Path) -> None:
    """Revision 0003 adds the table where 0001 ran before it existed (0001 creates every current table)."""
    from alembic import command

    url = database_url(f"sqlite:///{tmp_path / 'old.db'}")
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db_module.__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("DROP TABLE provider_models"))  # as a database made by the release before
    engine.dispose()
    upgraded = db_module.open_engine(str(url), create=True)
    assert upgraded is not None
    with upgraded.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
        assert {c["name"] for c in inspect(conn).get_columns("provider_models")} == {"provider_id", "models", "listed_at"}
    upgraded.dispose()


def test_a_database_at_0003_gets_experiments_and_the_answer_cache(db_url: str) -> None:
    """0004 on a database made before experiments existed: the new tables and the column appear, rows stay."""
    from alembic import command

    from reconciler.state.db import make_engine, open_engine, schema_revision

    engine = make_engine(database_url(db_url))
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db_module.__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    with engine.begin() as conn:  # 0001 builds today's tables: take away what 0003 did not have then
        for table in ("experiment_arms", "experiments", "answer_cache"):
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("ALTER TABLE run_results DROP COLUMN reused"))
        conn.execute(text("INSERT INTO reconciler_applies (started_at, finished_at, \"user\", command, created, updated, deleted, plan) "
                          "VALUES ('2025-01-01', '2025-01-01', 'me', 'apply', 0, 0, 0, '{}')"))
    assert schema_revision(engine) == "0003"
    upgraded = open_engine(db_url, create=True)
    assert upgraded is not None and schema_revision(upgraded) == HEAD_REVISION
    with upgraded.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert {"experiments", "experiment_arms", "answer_cache"} <= tables
        assert "reused" in {c["name"] for c in inspect(conn).get_columns("run_results")}
        assert conn.execute(text("SELECT count(*) FROM reconciler_applies")).scalar() == 1
    upgraded.dispose()
    engine.dispose()


def _alembic(engine, action: str, revision: str) -> None:  # type: ignore[no-untyped-def]
    from alembic import command

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db_module.__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def _queue_objects(conn) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """procrastinate's tables, functions and types in the database."""
    return (
        conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'procrastinate%'")).scalar(),
        conn.execute(text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'procrastinate%'")).scalar(),
        conn.execute(text("SELECT count(*) FROM pg_type WHERE typname LIKE 'procrastinate%' AND typtype IN ('e', 'c')")).scalar(),
    )


def test_the_task_queue_schema_is_installed_on_postgresql_only(cli_run, write_manifests, db_url: str) -> None:
    assert cli_run("apply", str(write_manifests(VALID)), "--db", db_url, "--auto-approve", "--no-validate")[0] == 0
    engine = create_engine(database_url(db_url))
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert "run_chunks" in tables and "worker" in {c["name"] for c in inspect(conn).get_columns("run_results")}
        queue_tables = {t for t in tables if t.startswith("procrastinate")}
        if engine.dialect.name == "sqlite":
            assert queue_tables == set()
        else:
            assert queue_tables == {"procrastinate_jobs", "procrastinate_workers", "procrastinate_events", "procrastinate_periodic_defers"}
    engine.dispose()



@pytest.mark.postgres
def test_the_task_queue_revision_downgrades_and_upgrades_in_place(cli_run, write_manifests, pg_url: str) -> None:
    assert cli_run("apply", str(write_manifests(VALID)), "--db", pg_url, "--auto-approve", "--no-validate")[0] == 0
    engine = create_engine(database_url(pg_url))
    with engine.connect() as conn:
        installed = _queue_objects(conn)
    assert all(installed)
    _alembic(engine, "downgrade", "0004")
    with engine.connect() as conn:
        assert _queue_objects(conn) == (0, 0, 0)
        assert not inspect(conn).has_table("run_chunks")
        assert "worker" not in {c["name"] for c in inspect(conn).get_columns("run_results")}
        assert conn.execute(text("SELECT count(*) FROM agent_configs")).scalar() == 1  # the configuration is kept
    _alembic(engine, "upgrade", "head")  # a database of the release before, migrated in place
    with engine.connect() as conn:
        assert _queue_objects(conn) == installed
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
    engine.dispose()
