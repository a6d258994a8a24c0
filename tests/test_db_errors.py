"""Database errors carry a hint that fits them: raised by real SQLite files and a real PostgreSQL
server, translated by ``translate_db_errors`` (what every command uses)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text

from reconciler.errors import StateError
from reconciler.state.columns import reflect_columns
from reconciler.state.db import CONNECTION_HINT, database_url, make_engine, translate_db_errors
from reconciler.state.tables import llm_providers, utcnow
from tests.providers.servers import closed_port
from tests.seed.helpers import fill_like_the_service


def _provider(**values: object) -> dict[str, object]:
    now = utcnow()
    return {"id": uuid.uuid4(), "name": "p", "type": "ollama", "is_active": True, "validation_status": "pending",
            "created_at": now, "updated_at": now, **values}


def _error(url: str, statement, params=None, *, writable: bool = False) -> StateError:  # type: ignore[no-untyped-def]
    engine = make_engine(database_url(url))
    try:
        with pytest.raises(StateError) as info, translate_db_errors(engine.url, "testing"), engine.begin() as conn:
            stmt = statement(reflect_columns(conn).writable(llm_providers) if writable else llm_providers)
            conn.execute(stmt, params) if params is not None else conn.execute(stmt)
        return info.value
    finally:
        engine.dispose()


def _hint(err: StateError) -> str:
    return err.problems[0].hint


def test_a_connection_failure_points_at_the_server_and_db(cli_run, tmp_path: Path) -> None:
    code, _, err = cli_run("get", "agents", "--db", f"postgresql://postgres@127.0.0.1:{closed_port()}/nope")
    assert code == 1 and "Traceback" not in err
    assert f"hint: {CONNECTION_HINT}" in err
    code, _, err = cli_run("get", "agents", "--db", f"sqlite:///{tmp_path}")  # a directory: SQLite cannot open it
    assert code == 1 and "unable to open database file" in err and f"hint: {CONNECTION_HINT}" in err


def test_a_file_that_is_not_a_database_says_so(cli_run, tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("not sqlite at all, just text that is long enough to have a header" * 10)
    code, _, err = cli_run("get", "agents", "--db", f"sqlite:///{tmp_path / 'notes.db'}")
    assert code == 1 and "hint: --db points at a file that is not a SQLite database" in err


def test_constraint_errors_name_the_column_and_what_it_expects(db_url: str) -> None:
    fill_like_the_service(db_url)
    not_null = _error(db_url, insert, _provider(type=None), writable=True)
    assert _hint(not_null) == "column llm_providers.type does not allow NULL in this database: give the field a value in the manifest"
    unique = _error(db_url, insert, _provider(name="Ollama Local"), writable=True)
    assert "two rows with one name?" in _hint(unique) and CONNECTION_HINT not in _hint(unique)


@pytest.mark.postgres
def test_enum_and_type_errors_say_what_the_column_expects(pg_url: str) -> None:
    fill_like_the_service(pg_url)
    mismatch = _error(pg_url, insert, _provider())  # reconciler's own table: text where the enum is expected
    assert 'column "type" is of type providertype but expression is of type character varying' in mismatch.problems[0].message
    assert _hint(mismatch).startswith("the database types this column differently from reconciler's tables")
    lacking = _error(pg_url, insert, _provider(type="llamacpp"), writable=True)
    assert 'invalid input value for enum providertype: "llamacpp"' in lacking.problems[0].message
    assert "`reconciler apply --extend-enums` adds missing ones" in _hint(lacking)
    too_long = _error(pg_url, insert, _provider(name="x" * 300), writable=True)
    assert _hint(too_long) == "a column holds fewer characters than this value: shorten it in the manifest"
    missing = _error(pg_url, lambda t: text("SELECT * FROM reconciler_resources"))
    assert "tables are not the ones reconciler expects" in _hint(missing)


def test_a_missing_table_on_sqlite(sqlite_url: str) -> None:
    fill_like_the_service(sqlite_url)
    missing = _error(sqlite_url, lambda t: select(text("1")).select_from(text("reconciler_resources")))
    assert "no such table" in missing.problems[0].message and "tables are not the ones reconciler expects" in _hint(missing)
