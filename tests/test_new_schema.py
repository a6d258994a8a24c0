"""A new database's schema made without Alembic (state.schema.create_new_schema) is the schema the
migrations 0001..HEAD make, on SQLite and PostgreSQL, and Alembic takes it on from there."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from reconciler.state.db import HEAD_REVISION, database_url, make_engine, open_engine, schema_revision, upgrade_schema
from reconciler.state.schema import create_new_schema


def _schema(url: str, pg_server: Any | None) -> Any:
    """Everything the schema is: SQLite's own DDL of every table and index; on PostgreSQL the
    ``pg_dump --schema-only`` text (tables, types, enums, functions, triggers, constraints) and
    what the inspector reports of each table. With the version Alembic records."""
    engine = create_engine(database_url(url))
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        insp = inspect(conn)
        tables: dict[str, Any] = {
            name: (
                [{**c, "type": repr(c["type"])} for c in insp.get_columns(name)],
                insp.get_pk_constraint(name),
                insp.get_foreign_keys(name),
                sorted(insp.get_indexes(name), key=lambda i: str(i["name"])),
                sorted(insp.get_unique_constraints(name), key=lambda u: str(u["name"])),
            )
            for name in insp.get_table_names()
        }
        if conn.dialect.name == "sqlite":
            ddl = sorted(conn.exec_driver_sql("SELECT type, name, tbl_name, sql FROM sqlite_master").all(), key=repr)
        else:
            assert pg_server is not None
            where = ["-h", pg_server.host, "-p", str(pg_server.port), "-U", pg_server.user, str(engine.url.database)]
            pg_dump = [os.path.join(pg_server.bindir, "pg_dump"), "--schema-only", "--no-owner", *where]
            dump = subprocess.run(pg_dump, capture_output=True, text=True, check=True).stdout
            ddl = [line for line in dump.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))]
            tables["enums"] = insp.get_enums()
    engine.dispose()
    return version, tables, ddl


def _second_database(db_url: str, request: pytest.FixtureRequest) -> tuple[str, Any | None]:
    if not db_url.startswith("postgresql"):
        return db_url.replace("state.db", "other.db"), None
    server, name = request.getfixturevalue("pg_server"), f"schema_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name)
    request.addfinalizer(lambda: server.drop_database(name))
    return url, server


def test_a_new_database_gets_the_schema_the_migrations_make(db_url: str, request: pytest.FixtureRequest) -> None:
    other, server = _second_database(db_url, request)
    migrated = make_engine(database_url(db_url))
    upgrade_schema(migrated)  # Alembic, 0001..HEAD
    migrated.dispose()
    fresh = make_engine(database_url(other))
    assert create_new_schema(fresh, HEAD_REVISION) is True
    assert schema_revision(fresh) == HEAD_REVISION
    assert create_new_schema(fresh, HEAD_REVISION) is False  # tables there: nothing written
    fresh.dispose()
    theirs, ours = _schema(db_url, server), _schema(other, server)
    assert ours[0] == theirs[0] == [(HEAD_REVISION,)]
    assert ours[1] == theirs[1]
    assert ours[2] == theirs[2]
    assert "llm_providers" in ours[1] and (server is None or "procrastinate_jobs" in ours[1])


def test_alembic_takes_over_a_new_database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_engine creates a new database without Alembic; a later upgrade (here: from the revision
    before HEAD, as after a release adding a migration) runs on it."""
    import alembic.command

    engine = open_engine(db_url, create=True)
    assert engine is not None and schema_revision(engine) == HEAD_REVISION
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0005'"))
        conn.execute(text("ALTER TABLE run_chunks DROP COLUMN use_cache"))
    engine.dispose()
    upgrades = []
    monkeypatch.setattr(alembic.command, "upgrade", lambda cfg, rev, _real=alembic.command.upgrade: upgrades.append(rev) or _real(cfg, rev))
    engine = open_engine(db_url, create=True)
    assert engine is not None and schema_revision(engine) == HEAD_REVISION
    assert upgrades == ["head"]
    with engine.connect() as conn:
        assert "use_cache" in {c["name"] for c in inspect(conn).get_columns("run_chunks")}
    engine.dispose()


def test_a_database_with_other_tables_goes_through_alembic(sqlite_url: str, tmp_path: Path) -> None:
    engine = create_engine(database_url(sqlite_url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    assert create_new_schema(make_engine(database_url(sqlite_url)), HEAD_REVISION) is False
    opened = open_engine(sqlite_url, create=True)
    assert opened is not None and schema_revision(opened) == HEAD_REVISION
    with opened.connect() as conn:
        assert {"notes", "llm_providers", "alembic_version"} <= set(inspect(conn).get_table_names())
    opened.dispose()
    engine.dispose()
