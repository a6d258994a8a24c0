"""The state read without SQLAlchemy's per-value processing gives what SQLAlchemy's types give.

``state.snapshot`` reads the bookkeeping's JSON columns as text on SQLite and decodes them itself,
and the kinds' column readers take row values by position: each is checked here against a plain
SQLAlchemy read of the same rows (its JSON type, its mappings by column name), on every kind the
quick-start manifests hold (providers, tasks, agents, assignments, runs, experiments)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from reconciler.kinds import KINDS
from reconciler.kinds.base import id_text
from reconciler.state.db import open_engine
from reconciler.state.snapshot import _bookkeeping, read_snapshot
from reconciler.state.tables import reconciler_resources
from reconciler.workflow import ApplyRequest, apply_manifests

REPO = Path(__file__).resolve().parents[1]

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
def applied_db(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    root = tmp_path / "manifests"
    shutil.copytree(REPO / "manifests", root)
    monkeypatch.setenv("OPENAI_API_KEY", os.environ.get("OPENAI_API_KEY", "sk-test-not-used"))
    outcome = apply_manifests(ApplyRequest([str(root)], db_url, validate_providers=False, start_runs=False))
    assert outcome.applied and {c.kind for c in outcome.plan.changes} == {str(k.name) for k in KINDS}
    return db_url


def _odd_bookkeeping(db_url: str) -> None:
    engine = open_engine(db_url, create=False)
    assert engine is not None
    with engine.begin() as conn:
        keys = conn.execute(select(reconciler_resources.c.kind, reconciler_resources.c.name).order_by("kind", "name")).all()
        for (column, value), (kind, name) in zip(ODD_JSON, keys, strict=False):
            value_sql = ":v" if value is None or engine.dialect.name == "sqlite" else "CAST(:v AS json)"
            conn.execute(text(f"UPDATE reconciler_resources SET {column} = {value_sql} WHERE kind = :k AND name = :n"), {"v": value, "k": kind, "n": name})


def test_bookkeeping_read_as_sqlalchemy_reads_it(applied_db: str) -> None:
    _odd_bookkeeping(applied_db)
    engine = open_engine(applied_db, create=False)
    assert engine is not None
    with engine.connect() as conn:
        ours = sorted(((b.kind, b.name), (b.row_id, b.applied, b.labels, b.annotations, b.secret_digest, b.apply_id)) for b in _bookkeeping(conn))
        theirs = sorted(
            ((r.kind, r.name), (str(r.row_id), r.applied, r.labels, r.annotations, r.secret_digest, r.apply_id))
            for r in conn.execute(select(reconciler_resources))
        )
        assert ours == theirs
        assert any(v[2] is None for _, v in ours) and any(v[1].get("big") == 123456789012345678901234567890 for _, v in ours)


@pytest.mark.parametrize("kind", [k for k in KINDS if not k.history], ids=lambda k: str(k.name))
def test_column_readers_read_what_the_columns_hold(applied_db: str, kind: Any) -> None:
    engine = open_engine(applied_db, create=False)
    assert engine is not None
    with engine.connect() as conn:
        names: dict[str, dict[Any, str]] = {}  # as read_snapshot builds them: kind -> raw id -> name
        for k in KINDS:
            names[str(k.name)] = {r.raw_id: r.name for r in k.read(conn, names)}
        by_text = {kind_name: {id_text(raw): name for raw, name in of_kind.items()} for kind_name, of_kind in names.items()}
        rows = {id_text(r.raw_id): r for r in kind.read(conn, names)}
        expected = conn.execute(select(kind.table)).mappings().all()
        assert len(rows) == len(expected) > 0
        for row in expected:
            got = rows[str(row["id"])]
            checked = 0
            for field_name, value in got.essence.items():
                ref = kind.references.get(field_name)
                if ref is not None:
                    assert value == by_text[str(ref.kind)][str(row[ref.column])], field_name
                    checked += 1
                elif field_name in kind.table.c:
                    assert (value, type(value)) == (row[field_name], type(row[field_name])), field_name
                    checked += 1
            assert checked >= len(kind.references) + 1  # every reference, and at least one column
