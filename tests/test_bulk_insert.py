"""state.bulk.insert_rows writes the rows SQLAlchemy's ``conn.execute(insert(table), rows)`` writes,
byte for byte, on SQLite and PostgreSQL: the same apply made both ways gives identical tables; and
so does `apply` on a plain SQLite file, which writes through ``sqlite3`` (``state.write.SqliteWriter``)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Table, create_engine, insert, text

import reconciler.apply as apply_module
import reconciler.plan.diff as diff_module
import reconciler.state.bulk as bulk_module
import reconciler.state.history as history_module
from reconciler.providers.secrets import SecretBox
from reconciler.state.bulk import insert_rows
from reconciler.state.db import database_url, open_engine
from reconciler.state.tables import metadata, reconciler_resources

REPO = Path(__file__).resolve().parent.parent
KEYED_PROVIDERS = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: keyed, labels: {tier: "paid"}, annotations: {note: "ünïcode ✓ 'quoted' \\"too\\""}}
spec: {type: openai, base_url: "https://llm.example.com/v1", api_key: {from_env: BULK_TEST_API_KEY}}
---
apiVersion: reconciler/v1
kind: Provider
metadata: {name: keyless}
spec: {type: ollama, base_url: "http://127.0.0.1:9"}
"""


def sqlalchemy_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """What apply wrote with before insert_rows: SQLAlchemy's own executemany."""
    if rows:
        conn.execute(insert(table), rows)


def raw_tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table as the database holds it: SQLite's stored values and their storage
    classes, PostgreSQL's text form of each value."""
    engine = create_engine(database_url(url))
    with engine.connect() as conn:
        out = {table.name: raw_rows(conn, table) for table in metadata.sorted_tables}
    engine.dispose()
    return out


def raw_rows(conn: Connection, table: Table) -> list[tuple[Any, ...]]:
    if conn.dialect.name == "sqlite":
        cols = ", ".join(f'"{c.name}", typeof("{c.name}")' for c in table.columns)
    else:
        cols = ", ".join(f'CAST("{c.name}" AS TEXT)' for c in table.columns)
    return sorted(conn.exec_driver_sql(f'SELECT {cols} FROM "{table.name}"').all(), key=repr)


class _Frozen(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _Frozen:
        return cls(2026, 1, 2, 3, 4, 5, tzinfo=tz)


def engine_url(url: str) -> str:
    """A SQLite URL `apply` writes through SQLAlchemy (one with an option), for the same file."""
    return f"{url}?timeout=30" if url.startswith("sqlite") else url


def _apply(cli_run, monkeypatch: pytest.MonkeyPatch, url: str, writer: Any, manifests: Path) -> dict[str, list[tuple[Any, ...]]]:
    """A first apply of the repository's manifests and ``manifests`` with ``writer`` doing the
    inserts (None: a plain SQLite URL, written through sqlite3), with row ids, timestamps and
    ciphertexts made deterministic."""
    ids = (uuid.UUID(int=i) for i in itertools.count(1))
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with monkeypatch.context() as m:
        if writer is not None:
            m.setattr(bulk_module, "insert_rows", writer)
            url = engine_url(url)
        m.setattr(apply_module.uuid, "uuid4", lambda: next(ids))
        m.setattr(apply_module, "utcnow", lambda: moment)
        m.setattr(history_module, "utcnow", lambda: moment)
        m.setattr(diff_module, "datetime", _Frozen)  # the plan's created_at, in the history record
        m.setattr(SecretBox, "encrypt", lambda self, value: b"\x00cipher\xff" + value.encode())
        m.setenv("BULK_TEST_API_KEY", "sk-test")
        engine = open_engine(url, create=True)  # the schema first: the ids above are the rows'
        assert engine is not None
        engine.dispose()
        code, _, err = cli_run("apply", str(REPO / "manifests"), str(manifests), "--db", url, "--auto-approve", "--no-validate")
    assert code == 0, err
    return raw_tables(url)


def _enum_columns(url: str) -> None:
    """Type two columns as PostgreSQL enums, as the seed service's SQLModel does."""
    engine = create_engine(database_url(url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TYPE providertype AS ENUM ('ollama', 'openai', 'llamacpp')"))
        conn.execute(text("ALTER TABLE llm_providers ALTER COLUMN type TYPE providertype USING type::providertype"))
        conn.execute(text("CREATE TYPE validationstatus AS ENUM ('pending', 'validating', 'connected', 'error')"))
        conn.execute(text("ALTER TABLE llm_providers ALTER COLUMN validation_status TYPE validationstatus USING validation_status::validationstatus"))
    engine.dispose()


def test_an_apply_writes_the_same_bytes_as_sqlalchemy(cli_run, write_manifests, monkeypatch, db_url: str, request) -> None:
    _both_ways(cli_run, write_manifests, monkeypatch, db_url, request, enums=False)


@pytest.mark.postgres
def test_enum_typed_columns_too(cli_run, write_manifests, monkeypatch, pg_url: str, request) -> None:
    """A seed database's enum columns: the INSERT casts to the enum types (DbColumns.writable)."""
    _both_ways(cli_run, write_manifests, monkeypatch, pg_url, request, enums=True)


def _both_ways(cli_run, write_manifests, monkeypatch, db_url: str, request, *, enums: bool) -> None:
    manifests = write_manifests({"keyed.yaml": KEYED_PROVIDERS})
    writers: list[Any] = [sqlalchemy_insert, insert_rows]
    urls = [db_url, db_url.replace("state.db", "other.db")]
    if db_url.startswith("postgresql"):
        server, name = request.getfixturevalue("pg_server"), f"bulk_{uuid.uuid4().hex[:12]}"
        urls[1] = server.create_database(name)
        request.addfinalizer(lambda: server.drop_database(name))
    else:  # and the plain SQLite URL's way, without SQLAlchemy
        writers.append(None)
        urls.append(db_url.replace("state.db", "third.db"))
    assert len(set(urls)) == len(urls)
    tables = {}
    for url, writer in zip(urls, writers, strict=True):
        engine = open_engine(url, create=True)
        assert engine is not None
        engine.dispose()
        if enums:
            _enum_columns(url)
        tables[writer] = _apply(cli_run, monkeypatch, url, writer, manifests)
    theirs = tables[sqlalchemy_insert]
    for writer, ours in tables.items():
        for name in theirs:
            assert ours[name] == theirs[name], (writer, name)
        assert len(ours["llm_providers"]) == 3 and len(ours["reconciler_resources"]) >= 10 and ours["experiments"] and ours["analysis_runs"]


ODD_JSON = [
    None,
    {},
    [],
    {"nested": {"list": [1, 2.5, None, True, "x"]}, "ünï": "✓"},
    {"big": 2**70, "negative": -(2**64)},  # beyond 64 bits: the standard library's encoder
    {"float": 1e-7, "exp": 1.5e300, "escape": 'tab\t newline\n quote" \u2028'},
    "just text",
    12,
]


def test_odd_values_are_stored_as_sqlalchemy_stores_them(db_url: str) -> None:
    """JSON the fast encoder refuses or changes, None, text with quotes, timestamps in other zones."""
    engine = open_engine(db_url, create=True)
    assert engine is not None
    odd = ODD_JSON if engine.dialect.name == "postgresql" else [*ODD_JSON, {"nan": float("nan")}]  # PostgreSQL refuses NaN in JSON
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    rows = [
        {
            "kind": "Agent",
            "name": f"row-{i}-'quoted' \"and\" ✓",
            "row_id": uuid.UUID(int=i),
            "applied": value,
            "labels": value if i % 2 else {"a": "b"},
            "annotations": None,
            "secret_digest": None if i % 3 else "sha256:" + "0" * 64,
            "apply_id": i if i % 2 else None,
            "updated_at": datetime(2026, 3, 4, 5, 6, 7, i, tzinfo=zones[i % 3]),
        }
        for i, value in enumerate(odd)
    ]
    same_time = [{**r, "name": r["name"] + " same", "updated_at": rows[0]["updated_at"]} for r in rows]
    stored = []
    for writer in (sqlalchemy_insert, insert_rows):
        with engine.connect() as conn, conn.begin() as tx:
            writer(conn, reconciler_resources, rows)
            writer(conn, reconciler_resources, same_time)
            stored.append(sorted(conn.execute(text("SELECT * FROM reconciler_resources")).all(), key=repr))
            stored.append(raw_rows(conn, reconciler_resources))
            tx.rollback()
    engine.dispose()
    assert stored[0] == stored[2] and stored[1] == stored[3]
    assert len(stored[1]) == 2 * len(odd)


def test_a_left_out_column_gets_its_scalar_default_and_a_computed_one_is_refused(sqlite_url: str) -> None:
    from reconciler.state.tables import agent_configs, llm_providers  # the kinds build their tables on first use

    engine = open_engine(sqlite_url, create=True)
    assert engine is not None
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    provider = {"id": uuid.UUID(int=1), "name": "p", "type": "ollama", "created_at": moment, "updated_at": moment}
    with engine.connect() as conn, conn.begin():
        insert_rows(conn, llm_providers, [provider])
        row = conn.execute(text("SELECT is_active, validation_status FROM llm_providers")).one()
        assert tuple(row) == (1, "pending")
        with pytest.raises(ValueError, match=r"give agent_configs\.created_at, whose default is computed"):
            agent = {"id": uuid.UUID(int=2), "name": "a", "provider_id": uuid.UUID(int=1), "model_name": "m", "updated_at": moment}
            insert_rows(conn, agent_configs, [agent])
        with pytest.raises(ValueError, match="do not all have the same columns"):
            insert_rows(conn, llm_providers, [provider, {**provider, "base_url": "http://x"}])
    engine.dispose()
