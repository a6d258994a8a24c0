"""The state read is plain SQL text through a row source, and gives what SQLAlchemy's types give.

``state.snapshot`` reads the bookkeeping's JSON columns as the driver returns them (text on
SQLite, decoded here), and the kinds' column readers take row values by position: each is
checked against a plain SQLAlchemy read of the same rows (its JSON type, its mappings by column
name), on every kind the quick-start manifests hold (providers with a secret, tasks, agents,
assignments, runs, experiments) and on a database the seed service made (no bookkeeping). The
two row sources, a standard-library ``sqlite3`` connection (plan on SQLite) and an SQLAlchemy
connection (PostgreSQL, apply's transactions), must give the same snapshot."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, fields
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from reconciler.kinds import KINDS
from reconciler.kinds.base import RowSource, id_text, id_texts
from reconciler.state.db import open_engine, open_sqlite_state, plain_sqlite_url
from reconciler.state.jsoncodec import loads
from reconciler.state.rows import ConnectionRows, SqliteRows, json_texts
from reconciler.state.snapshot import BOOKKEEPING_TABLE, ActualResource, StateSnapshot, _actual, _bookkeeping, load_state, read_snapshot
from reconciler.state.tables import reconciler_resources
from reconciler.workflow import ApplyRequest, apply_manifests
from tests.seed.helpers import fill_like_the_service

# JSON texts another writer (or an older release) may have left in the bookkeeping
ODD_JSON = [
    ("labels", None),
    ("labels", "{}"),
    ("labels", '{"team": "é\\u00e9 \\"quoted\\"", "n": "1"}'),
    ("annotations", "null"),
    ("annotations", '{ "spaced" : "out" }'),
    ("applied", '{"big": 123456789012345678901234567890, "small": 1e-07, "list": [1, 2.5, null, true]}'),
]


@pytest.fixture
def applied_db(db_url: str, quick_start: Path) -> str:
    outcome = apply_manifests(ApplyRequest([str(quick_start)], db_url, validate_providers=False, start_runs=False))
    assert outcome.applied and {c.kind for c in outcome.plan.changes} == {str(k.name) for k in KINDS}
    return db_url


@pytest.fixture(params=["applied", "seed"])
def any_db(request: pytest.FixtureRequest, db_url: str) -> str:
    """A database reconciler applied the quick-start manifests and a provider with a secret and a
    row name of its own to (with odd JSON in its bookkeeping, NULLs, a row renamed outside
    reconciler, and on PostgreSQL a NUMERIC temperature), or one the seed service made."""
    if request.param == "seed":
        fill_like_the_service(db_url)
        return db_url
    url: str = request.getfixturevalue("applied_db")
    _odd_bookkeeping(url)
    engine = open_engine(url, create=False)
    assert engine is not None
    with engine.begin() as conn:
        conn.execute(text("UPDATE agent_configs SET description = NULL, temperature = NULL, max_tokens = NULL"))
        conn.execute(text("UPDATE task_configs SET description = NULL"))
        conn.execute(text("UPDATE llm_providers SET name = 'Renamed outside' WHERE name = 'local'"))
        if engine.dialect.name == "postgresql":  # psycopg reads it as a Decimal, SQLAlchemy's Float type as a float
            conn.execute(text("ALTER TABLE agent_configs ALTER COLUMN temperature TYPE numeric(4, 2)"))
            conn.execute(text("UPDATE agent_configs SET temperature = 0.25 WHERE name = 'zero-shot-classifier'"))
    engine.dispose()
    return url


def _odd_bookkeeping(db_url: str) -> None:
    engine = open_engine(db_url, create=False)
    assert engine is not None
    with engine.begin() as conn:
        keys = conn.execute(select(reconciler_resources.c.kind, reconciler_resources.c.name).order_by("kind", "name")).all()
        for (column, value), (kind, name) in zip(ODD_JSON, keys, strict=False):
            value_sql = ":v" if value is None or engine.dialect.name == "sqlite" else "CAST(:v AS json)"
            conn.execute(
                text(f"UPDATE reconciler_resources SET {column} = {value_sql} WHERE kind = :k AND name = :n"), {"v": value, "k": kind, "n": name}
            )
    engine.dispose()


def _sources(url: str) -> Iterator[tuple[str, Any, RowSource]]:
    """(name, SQLAlchemy connection, row source): the SQLAlchemy connection's own, and on SQLite
    the standard-library connection plan reads through (in the same state)."""
    engine = open_engine(url, create=False)
    assert engine is not None
    try:
        with engine.connect() as conn:
            yield "sqlalchemy", conn, ConnectionRows(conn)
            plain = plain_sqlite_url(url)
            if plain is not None:
                stdlib = open_sqlite_state(*plain)
                assert stdlib is not None
                try:
                    yield "sqlite3", conn, SqliteRows(stdlib)
                finally:
                    stdlib.close()
    finally:
        engine.dispose()


def test_bookkeeping_read_as_sqlalchemy_reads_it(applied_db: str) -> None:
    _odd_bookkeeping(applied_db)
    for name, conn, source in _sources(applied_db):
        ours = sorted(((b.kind, b.name), (b.row_id, b.applied, b.labels, b.annotations, b.secret_digest, b.apply_id)) for b in _bookkeeping(source))
        theirs = sorted(
            ((r.kind, r.name), (str(r.row_id), r.applied, r.labels, r.annotations, r.secret_digest, r.apply_id))
            for r in conn.execute(select(reconciler_resources))
        )
        assert ours == theirs, name
        assert any(v[2] is None for _, v in ours) and any(v[1].get("big") == 123456789012345678901234567890 for _, v in ours)


@pytest.mark.parametrize("kind", [k for k in KINDS if not k.history], ids=lambda k: str(k.name))
def test_column_readers_read_what_the_columns_hold(any_db: str, kind: Any) -> None:
    for source_name, conn, source in _sources(any_db):
        names: dict[str, dict[Any, str]] = {}  # as read_snapshot builds them: kind -> raw id -> name
        for k in KINDS:
            if not k.history:
                names[str(k.name)] = {r.raw_id: r.name for r in k.read(source, names)}
        by_text = {kind_name: {id_text(raw): name for raw, name in of_kind.items()} for kind_name, of_kind in names.items()}
        rows = {id_text(r.raw_id): r for r in kind.read(source, names)}
        expected = conn.execute(select(kind.table)).mappings().all()
        assert len(rows) == len(expected) > 0
        for row in expected:
            got = rows[str(row["id"])]
            checked = 0
            for field_name, value in got.essence.items():
                ref = kind.references.get(field_name)
                if ref is not None:
                    assert value == by_text[str(ref.kind)][str(row[ref.column])], (source_name, field_name)
                    checked += 1
                elif field_name in kind.table.c:
                    assert (value, type(value)) == (row[field_name], type(row[field_name])), (source_name, field_name)
                    checked += 1
            assert checked >= len(kind.references) + 1  # every reference, and at least one column


def _snapshots(url: str) -> dict[str, StateSnapshot]:
    found = {name: read_snapshot(source) for name, _conn, source in _sources(url)}
    found["load_state"] = load_state(url)  # what plan reads: sqlite3 on SQLite, an engine on PostgreSQL
    return found


def test_both_row_sources_give_the_same_snapshot(any_db: str) -> None:
    snapshots = _snapshots(any_db)
    assert len(snapshots) == (3 if any_db.startswith("sqlite") else 2)
    reference = snapshots.pop("sqlalchemy")
    assert reference.resources and {r.kind for r in reference.resources.values()} >= {"Provider", "Task", "Agent", "Assignment"}
    for name, snapshot in snapshots.items():
        assert snapshot.fingerprint == reference.fingerprint, name
        assert snapshot.resources == reference.resources and snapshot.vanished == reference.vanished, name
        assert snapshot.columns == reference.columns, name
        ciphertexts = {k: r.secret_ciphertext for k, r in snapshot.resources.items()}
        assert ciphertexts == {k: r.secret_ciphertext for k, r in reference.resources.items()} and any(ciphertexts.values()), name
    if ("Provider", "hosted") in reference.resources:  # the applied database
        rows = reference.resources.values()
        assert {r.row_name for r in rows if r.managed and r.kind == "Provider"} == {"Renamed outside", "Hosted (OpenAI)"}
        assert any(r.managed and r.labels for r in rows) and {"Run", "Experiment"} <= {r.kind for r in rows}


def test_the_bookkeeping_table_name_is_the_tables_one() -> None:
    assert BOOKKEEPING_TABLE == reconciler_resources.name
    assert all(k.table.name == k.table_name for k in KINDS)


@pytest.mark.parametrize(
    "raws",
    [
        ["0b1e2c3d1e154ef29e6597b3090e0a12", "FFFFFFFF1E154EF29E6597B3090E0A12"],
        ["0b1e2c3d1e154ef29e6597b3090e0a12", "0b1e2c3d-1e15-4ef2-9e65-97b3090e0a12"],
        [uuid.UUID(int=5), uuid.UUID(int=6)],
        ["é" * 32],  # 32 characters, not 32 bytes
        [],
    ],
    ids=["hex-any-case", "dashed-among-them", "uuid", "not-ascii", "none"],
)
def test_a_column_of_row_ids_reads_as_each_one_does(raws: list[Any]) -> None:
    try:
        expected: list[Any] = [id_text(raw) for raw in raws]
    except ValueError as exc:  # not a UUID: the same error either way
        expected = [type(exc)]
    try:
        found: list[Any] = id_texts(raws)
    except ValueError as exc:
        found = [type(exc)]
    assert found == expected


# A column of JSON texts as SQLite returns them: the one-by-one decoding they must match, NULLs
# and NUMERIC-affinity numbers left as they are
JSON_COLUMNS = {
    "plain": ["{}", '{"a": [1, 2.5, null, true]}', '"text"', "[]"],
    "with-nulls-and-numbers": [None, "{}", 5, 2.5, '{"b": "é"}'],
    "a-long-number": ['{"a": 1}', '{"big": 123456789012345678901234567890}'],
    "nan": ['{"a": 1}', '{"x": NaN, "y": Infinity}'],
    "digits-in-a-string": ['{"id": "1234567890123456789012"}'],
}


@pytest.mark.parametrize("values", list(JSON_COLUMNS.values()), ids=list(JSON_COLUMNS))
def test_a_json_column_decodes_as_each_value_does(values: list[Any]) -> None:
    expected = [loads(v) if isinstance(v, str) else v for v in values]
    found = json_texts(values)
    assert json.dumps(found) == json.dumps(expected)  # NaN compares unequal to itself: compared as text
    assert [type(v) for v in found] == [type(v) for v in expected]


def test_a_json_column_neither_parser_reads_is_an_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        json_texts(['{"a": 1}', "{not json"])


def test_resources_are_made_as_the_dataclass_makes_them() -> None:
    values = ("Provider", "p", "id", {"e": 1}, True, {"a": 1}, {"l": "x"}, {"n": "y"}, 3, "sha256:d", b"token", "Row name")
    fast, slow = _actual(*values), ActualResource(*values)
    assert type(fast) is ActualResource and vars(fast) == vars(slow) and list(vars(fast)) == [f.name for f in fields(ActualResource)]
    assert fast == slow and repr(fast) == repr(slow) and "token" not in repr(fast)
    with pytest.raises(FrozenInstanceError):
        fast.name = "other"  # type: ignore[misc]
