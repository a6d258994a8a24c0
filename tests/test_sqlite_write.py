"""`apply` on a plain SQLite file writes through the standard library's ``sqlite3`` (``state.write.
SqliteWriter``, the schema from ``state.sqlite_schema``) and imports neither SQLAlchemy nor Alembic;
what it stores, how it reports errors and what `history` shows are what the SQLAlchemy path gives."""

from __future__ import annotations

import itertools
import json
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, bindparam, create_engine, delete, insert, update

import reconciler.apply as apply_module
import reconciler.plan.diff as diff_module
import reconciler.state.db as db_module
import reconciler.state.history as history_module
from reconciler.kinds import KINDS
from reconciler.providers.secrets import SecretBox
from reconciler.state import jsoncodec, sqlite_schema
from reconciler.state.db import HEAD_REVISION, SqliteFile, database_url, make_engine, prepare_sqlite_file, writable_sqlite_file
from reconciler.state.schema import create_new_schema, sqlite_schema_text
from reconciler.state.tables import metadata, reconciler_applies, reconciler_resources
from reconciler.state.write import SqliteWriter
from tests.test_bulk_insert import KEYED_PROVIDERS, ODD_JSON, _Frozen, engine_url
from tests.test_new_schema import _schema
from tests.test_plan_imports import _probe

REPO = Path(__file__).resolve().parent.parent


def test_the_generated_schema_is_the_one_sqlalchemy_makes() -> None:
    expected = sqlite_schema_text()
    assert Path(sqlite_schema.__file__).read_text(encoding="utf-8") == expected, (
        "reconciler/state/sqlite_schema.py is out of date with reconciler.state.tables: regenerate it with `python -m reconciler.state.schema`"
    )
    assert sqlite_schema.REVISION == HEAD_REVISION


def test_a_new_file_gets_the_schema_create_new_schema_makes(tmp_path: Path) -> None:
    theirs, ours = tmp_path / "sqlalchemy.db", tmp_path / "new" / "sqlite3.db"
    engine = make_engine(database_url(f"sqlite:///{theirs}"))
    assert create_new_schema(engine, HEAD_REVISION) is True
    engine.dispose()
    file = writable_sqlite_file(f"sqlite:///{ours}")
    assert file == SqliteFile(f"sqlite:///{ours}", ours, new=True) and not ours.parent.exists()
    prepare_sqlite_file(file)
    prepare_sqlite_file(file)  # tables there: nothing written
    assert _schema(f"sqlite:///{ours}", None) == _schema(f"sqlite:///{theirs}", None)
    assert writable_sqlite_file(str(ours)) == SqliteFile(f"sqlite:///{ours}", ours, new=False)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert writable_sqlite_file(str(empty)) == SqliteFile(f"sqlite:///{empty}", empty, new=True)


def test_which_databases_take_the_engines_way(tmp_path: Path) -> None:
    """A migration, a seed's tables, an unreadable file, a URL with options or another server: SQLAlchemy."""
    older = tmp_path / "older.db"
    prepare_sqlite_file(SqliteFile(f"sqlite:///{older}", older, new=True))
    with sqlite3.connect(older) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0005'")
    seed = tmp_path / "seed.db"
    with sqlite3.connect(seed) as conn:
        conn.execute("CREATE TABLE llm_providers (id CHAR(32) PRIMARY KEY)")
    text = tmp_path / "notes.db"
    text.write_text("not sqlite at all, just text that is long enough to have a header" * 10)
    for db in (str(older), str(seed), str(text), str(tmp_path), f"sqlite:///{tmp_path / 'x.db'}?timeout=3", "postgresql://u@127.0.0.1/db"):
        assert writable_sqlite_file(db) is None, db


# -- every column apply writes, stored as SQLAlchemy's own statements store it ---------------------

ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
WRITTEN = [k.table_name for k in KINDS] + [reconciler_resources.name]  # and reconciler_applies, by insert_returning_id


def _values(table: Table, column: str, i: int) -> list[Any]:
    """Odd values of the column's type, different in every row ``i`` (unique columns stay unique)."""
    kind = sqlite_schema.COLUMNS[table.name][column][0]
    text = f"row-{i} 'quoted' \"double\" ✓ {column}"
    return {
        "uuid": [uuid.UUID(int=i + 1), uuid.uuid4()],
        "datetime": [datetime(2026, 3, 4, 5, 6, 7, i, tzinfo=ZONES[i % 3]), datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC), date(2024, 2, 29)],
        "json": [*ODD_JSON, {"nan": float("nan")}, {"i": i}],
        "bool": [True, False, 1],
        "float": [0.5 + i, i, 1e300, -0.0],
        "binary": [b"\x00cipher\xff" * (i + 1), bytes([i])],
        "plain": [text, f"{i}"] if table.c[column].type.python_type is str else [i, 2**62 + i, -i],
    }[kind]


def _rows(table: Table, n: int, *, all_columns: bool, shift: int = 0) -> list[dict[str, Any]]:
    """``n`` rows; without ``all_columns`` only the ones that must be given (the rest: defaults or NULL)."""
    spec = sqlite_schema.COLUMNS[table.name]
    rows = []
    for i in range(n):
        row = {}
        for c in table.columns:
            if c.name == "id" and table is reconciler_applies:
                continue
            needed = not c.nullable and spec[c.name][1] != "scalar"
            if not (all_columns or needed):
                continue
            choices = _values(table, c.name, i)
            if c.nullable and not c.primary_key and (i + shift) % 4 == 3:
                row[c.name] = None
            elif c.primary_key or c.unique:
                row[c.name] = choices[0]
            else:
                row[c.name] = choices[(i + shift) % len(choices)]
        rows.append(row)
    return rows


def _raw(conn: sqlite3.Connection, table: Table) -> list[tuple[Any, ...]]:
    cols = ", ".join(f'"{c.name}", typeof("{c.name}")' for c in table.columns)
    return sorted(conn.execute(f'SELECT {cols} FROM "{table.name}"').fetchall(), key=repr)


def _databases(tmp_path: Path) -> tuple[Any, sqlite3.Connection]:
    """An SQLAlchemy connection and a sqlite3 one, each on a new database of its own (no foreign keys checked)."""
    theirs, ours = tmp_path / "sqlalchemy.db", tmp_path / "sqlite3.db"
    engine = make_engine(database_url(f"sqlite:///{theirs}"))
    create_new_schema(engine, HEAD_REVISION)
    engine.dispose()
    prepare_sqlite_file(SqliteFile(f"sqlite:///{ours}", ours, new=True))
    conn = create_engine(f"sqlite:///{theirs}", json_serializer=jsoncodec.dumps).connect()  # the engine's JSON, no foreign keys
    return conn, sqlite3.connect(ours, isolation_level=None)


def test_every_column_apply_writes_is_stored_as_sqlalchemy_stores_it(tmp_path: Path) -> None:
    sa, raw = _databases(tmp_path)
    writer = SqliteWriter(raw)
    stored = {}
    for name in WRITTEN:
        table = metadata.tables[name]
        full, required = _rows(table, 8, all_columns=True), [{**r, **_key(table, 100 + i)} for i, r in enumerate(_rows(table, 3, all_columns=False))]
        for rows in (full, required):
            sa.execute(insert(table), rows)
            writer.insert(name, rows)
        if "id" in table.c:  # apply's updates: by id, one executemany per column set, with a stamp
            changed = [{**r, "_id": full[i]["id"]} for i, r in enumerate(_rows(table, 8, all_columns=True, shift=1))]
            for r in changed:
                r.pop("id")
            stamp = {"updated_at": datetime(2027, 1, 1, 1, 1, 1, 1, tzinfo=ZONES[1])} if "updated_at" in table.c else {}
            some = [{k: v for k, v in r.items() if k not in stamp} for r in changed[:5]]
            stmt = update(table).where(table.c.id == bindparam("_id")).values(**{c: bindparam(c) for c in some[0] if c != "_id"}, **stamp)
            sa.execute(stmt, some)
            writer.update(name, some, stamp)
            gone = [r["id"] for r in full[5:7]]
            sa.execute(delete(table).where(table.c.id.in_(gone)))
            writer.delete(name, "id", gone)
        else:  # the bookkeeping: by kind and name
            sa.execute(delete(table).where(table.c.kind == full[1]["kind"], table.c.name.in_([full[1]["name"], full[2]["name"]])))
            writer.delete(name, "name", [full[1]["name"], full[2]["name"]], where={"kind": full[1]["kind"]})
        sa.commit()
        stored[name] = (_raw(raw, table), sa.exec_driver_sql(f"SELECT * FROM {name}").all())
    for i, row in enumerate(_rows(reconciler_applies, 4, all_columns=True)):
        with_defaults = {k: v for k, v in row.items() if k != "command"} if i % 2 else row
        theirs = sa.execute(insert(reconciler_applies).returning(reconciler_applies.c.id), with_defaults).scalar_one()
        assert writer.insert_returning_id(reconciler_applies.name, with_defaults) == theirs == i + 1
    sa.commit()
    ours_conn = sqlite3.connect(tmp_path / "sqlalchemy.db")
    for table in [*(metadata.tables[n] for n in WRITTEN), reconciler_applies]:
        assert _raw(raw, table) == _raw(ours_conn, table), table.name
        assert len(_raw(raw, table)) >= 4
    ours_conn.close()
    sa.close()
    raw.close()


def _outcome(convert: Callable[[Any], Any], values: list[Any]) -> Any:
    """What converting ``values`` one at a time gives: the values, or the error raised first."""
    try:
        return [convert(v) for v in values]
    except Exception as exc:  # noqa: BLE001 - compared with the column's own error
        return (type(exc), str(exc))


SHARED = {"a": [1.5, None]}
ONE_MOMENT = datetime(2026, 3, 4, 5, 6, 7, 8, tzinfo=UTC)
COLUMN_CASES: dict[str, list[list[Any]]] = {  # every way _column takes, and the values that leave it
    "uuid": [[uuid.UUID(int=1), uuid.UUID(int=2)], [uuid.UUID(int=1), None], [None, None], [uuid.UUID(int=3), "not a uuid"]],
    "datetime": [[ONE_MOMENT] * 3, [ONE_MOMENT, date(2024, 2, 29), None], [ONE_MOMENT, "noon"]],
    "json": [
        [SHARED] * 3,
        [{}, {}, {"a": None}],
        [*ODD_JSON, {"nan": float("nan")}, [None, float("inf")]],
        [{"a": None}, {"b": None, "t": "G\x7f\xf0 bits in text"}],
        [{"a": 1}, {"when": ONE_MOMENT}],
    ],
    "bool": [[True, False, None], [True, True], [True, 1, 0.0], [True, "yes"], [False, 2]],
    "float": [[0.5, -0.0, 1e300], [0.5, 2], [0.5, 1, None], [1.5, "x"]],
    "binary": [[b"\x00a", None, b"b"]],
    "plain": [[1, "a", None]],
}


@pytest.mark.parametrize("column_type", list(COLUMN_CASES))
def test_a_column_is_converted_as_each_of_its_values_would_be(column_type: str) -> None:
    """``write._column`` converts a column at a time (a value every row shares once, the common types
    in one pass): the same values, of the same types, or the same error as one value at a time."""
    from reconciler.state.write import CONVERTERS, _column

    convert = CONVERTERS[column_type] or (lambda v: v)
    for values in COLUMN_CASES[column_type]:
        expected = _outcome(convert, values)
        got = _outcome(lambda column: _column(column_type, column), [values])
        got = got[0] if isinstance(got, list) else got
        assert got == expected, values
        if isinstance(expected, list):
            assert [type(v) for v in got] == [type(v) for v in expected], values


def _key(table: Table, i: int) -> dict[str, Any]:
    """Primary and unique key values of row ``i`` (rows of the two batches must not collide)."""
    out = {}
    for c in table.columns:
        if (c.primary_key or c.unique) and not (c.name == "id" and table is reconciler_applies):
            out[c.name] = _values(table, c.name, i)[0]
    if table.name == "agent_task_assignments":
        out.update(agent_id=uuid.UUID(int=1000 + i), task_id=uuid.UUID(int=2000 + i))
    return out


def test_a_left_out_column_with_a_computed_default_and_ragged_rows_are_refused(tmp_path: Path) -> None:
    _, raw = _databases(tmp_path)
    writer = SqliteWriter(raw)
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    agent = {"id": uuid.UUID(int=2), "name": "a", "provider_id": uuid.UUID(int=1), "model_name": "m", "updated_at": moment}
    with pytest.raises(ValueError, match=r"give agent_configs\.created_at, whose default is computed"):
        writer.insert("agent_configs", [agent])
    provider = {"id": uuid.UUID(int=1), "name": "p", "type": "ollama", "created_at": moment, "updated_at": moment}
    with pytest.raises(ValueError, match="do not all have the same columns"):
        writer.insert("llm_providers", [provider, {**provider, "base_url": "http://x"}])
    with pytest.raises(TypeError, match="Not a boolean value"):
        writer.insert("llm_providers", [{**provider, "is_active": "yes"}])
    raw.close()


# -- whole applies, both ways --------------------------------------------------------------------


AGENT_CHANGE = ("temperature: 0.0", "temperature: 0.4")


def _applies(cli_run, monkeypatch: pytest.MonkeyPatch, url: str, root: Path, steps: list[Callable[[], None]]) -> tuple[Any, ...]:
    """Apply ``root`` after each step (the first against a database not there yet), with row ids,
    timestamps and ciphertexts made deterministic; then every table as stored, and `history`."""
    ids = (uuid.UUID(int=i) for i in itertools.count(1))
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    outputs = []
    with monkeypatch.context() as m:
        m.setattr(apply_module.uuid, "uuid4", lambda: next(ids))
        m.setattr(apply_module, "utcnow", lambda: moment)
        m.setattr(history_module, "utcnow", lambda: moment)
        m.setattr(diff_module, "datetime", _Frozen)
        m.setattr(SecretBox, "encrypt", lambda self, value: b"\x00cipher\xff" + value.encode())
        m.setattr(SecretBox, "can_decrypt", lambda self, token: token.startswith(b"\x00cipher\xff"))
        m.setattr(SecretBox, "sealed", lambda self, token: token.startswith(b"\x00cipher\xff"))  # what a plan asks
        for step in steps:
            step()
            code, out, err = cli_run("apply", str(root), "--db", url, "--auto-approve", "--no-validate")
            assert code == 0, err
            outputs.append(out)
        code, history, err = cli_run("history", "--db", url, "-o", "json")
        assert code == 0, err
    path = url.removeprefix("sqlite:///").split("?")[0]
    with sqlite3.connect(path) as conn:
        tables = {t.name: _raw(conn, t) for t in metadata.sorted_tables}
        tables["alembic_version"] = conn.execute("SELECT * FROM alembic_version").fetchall()
    return outputs, json.loads(history), tables


def test_the_same_applies_leave_the_same_database_either_way(cli_run, write_manifests, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Creates into a new file, updates (a changed agent, a provider's new key), deletes (pruned), both ways."""
    import shutil

    from cryptography.fernet import Fernet

    monkeypatch.setenv("RECONCILER_SECRET_KEY", Fernet.generate_key().decode())  # one key: the same HMACs both ways
    results = []
    for name, as_url in (("engine", engine_url), ("sqlite3", lambda url: url)):
        root = tmp_path / "manifests"  # the same sources in the history
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(REPO / "manifests", root)
        (root / "keyed.yaml").write_text(KEYED_PROVIDERS, encoding="utf-8")
        agents = root / "agents.yaml"

        def change(agents: Path = agents, root: Path = root) -> None:
            agents.write_text(agents.read_text(encoding="utf-8").replace(*AGENT_CHANGE, 1), encoding="utf-8")
            monkeypatch.setenv("BULK_TEST_API_KEY", "sk-rotated")
            keyed = root / "keyed.yaml"  # the keyless provider is pruned
            keyed.write_text(keyed.read_text(encoding="utf-8").split("\n---\n")[0] + "\n", encoding="utf-8")

        monkeypatch.setenv("BULK_TEST_API_KEY", "sk-test")
        results.append(_applies(cli_run, monkeypatch, as_url(f"sqlite:///{tmp_path / name / 'state.db'}"), root, [lambda: None, change]))
    (theirs_out, theirs_history, theirs), (ours_out, ours_history, ours) = results
    assert ours_out == theirs_out and "0 created, 2 updated, 1 deleted" in ours_out[1]
    assert ours_history == theirs_history
    assert ours.keys() == theirs.keys()
    for table in theirs:
        assert ours[table] == theirs[table], table
    assert ours["alembic_version"] == [(HEAD_REVISION,)] and len(ours["reconciler_applies"]) == 2


# -- imports and errors --------------------------------------------------------------------------


def test_apply_on_sqlite_imports_no_sqlalchemy(quick_start: Path, tmp_path: Path) -> None:
    """Into a new file, into the file it made (an agent changed: no provider to validate, so
    validation is on), and a saved plan: none imports SQLAlchemy, Alembic or pydantic-ai."""
    db = f"sqlite:///{tmp_path / 'new' / 'state.db'}"
    first = _probe(tmp_path, "apply", str(quick_start), "--db", db, "--auto-approve", "--no-validate")
    assert first["code"] == 0 and "Apply complete (#1)" in first["stdout"], first["stderr"]
    assert first["heavy"] == []
    agents = quick_start / "agents.yaml"
    agents.write_text(agents.read_text(encoding="utf-8").replace(*AGENT_CHANGE, 1), encoding="utf-8")
    second = _probe(tmp_path, "apply", str(quick_start), "--db", db, "--auto-approve")
    assert second["code"] == 0 and "Apply complete (#2): 0 created, 1 updated" in second["stdout"], second["stdout"] + second["stderr"]
    assert second["heavy"] == []
    agents.write_text(agents.read_text(encoding="utf-8").replace("temperature: 0.4", "temperature: 0.5", 1), encoding="utf-8")
    saved = tmp_path / "plan.json"
    assert _probe(tmp_path, "plan", str(quick_start), "--db", db, "--out", str(saved))["code"] == 0
    third = _probe(tmp_path, "apply", str(saved), "--db", db, "--no-validate")
    assert third["code"] == 0 and "Apply complete (#3): 0 created, 1 updated" in third["stdout"], third["stdout"] + third["stderr"]
    assert third["heavy"] == []
    stale = _probe(tmp_path, "apply", str(saved), "--db", db, "--no-validate")  # the state it was made against is gone
    assert stale["code"] == 1 and "the database changed after this plan was made" in stale["stderr"] and stale["heavy"] == []


def _both_ways_fail(cli_run, root: Path, path: Path, spoil: Callable[[], Any]) -> list[tuple[int, str]]:
    """Apply ``root`` to ``path`` through the engine and through sqlite3, ``spoil`` done first:
    (exit code, stderr with the URL as the plain one), each way; the file is unchanged."""
    plain = f"sqlite:///{path}"
    found = []
    for url in (engine_url(plain), plain):
        before = path.read_bytes()
        held = spoil()
        try:
            code, _, err = cli_run("apply", str(root), "--db", url, "--auto-approve", "--no-validate")
        finally:
            if held is not None:
                held.close()
        assert path.read_bytes() == before
        found.append((code, err.replace(engine_url(plain), plain)))
    return found


def test_a_locked_or_corrupt_database_is_reported_as_the_engine_reports_it(
    cli_run, quick_start: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    code, _, err = cli_run("apply", str(quick_start), "--db", f"sqlite:///{path}", "--auto-approve", "--no-validate")
    assert code == 0, err
    agents = quick_start / "agents.yaml"
    agents.write_text(agents.read_text(encoding="utf-8").replace(*AGENT_CHANGE, 1), encoding="utf-8")
    monkeypatch.setattr(db_module, "SQLITE_TIMEOUT", 1)

    def writer_holds_it() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        return conn

    held = writer_holds_it()
    assert writable_sqlite_file(str(path)) is not None  # readers still read: the sqlite3 way is taken
    held.close()
    engine, ours = _both_ways_fail(cli_run, quick_start, path, writer_holds_it)
    assert engine == ours and ours[0] == 1, ours
    assert "database is locked" in ours[1] and "hint: another process holds the database" in ours[1] and "Traceback" not in ours[1]

    with sqlite3.connect(path) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'llm_providers'").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with path.open("r+b") as fh:  # the providers' table: the state cannot be read
        fh.seek((page - 1) * size)
        fh.write(b"\xa5" * size)
    assert writable_sqlite_file(str(path)) is not None
    engine, ours = _both_ways_fail(cli_run, quick_start, path, lambda: None)
    assert engine == ours and ours[0] == 1, ours
    assert "malformed" in ours[1] and "Traceback" not in ours[1]


def test_the_write_reuses_the_state_it_planned_with_unless_someone_committed(
    quick_start: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan's connection keeps its snapshot for the write transaction (``KeptSqliteState``):
    read once when nobody wrote in between; read again after anyone's commit, and a plan the
    database no longer matches is refused, nothing written."""
    import reconciler.state.snapshot as snapshot_module
    from reconciler.errors import StalePlan
    from reconciler.workflow import ApplyHooks, ApplyRequest, apply_manifests

    path = tmp_path / "state.db"
    request = ApplyRequest([str(quick_start)], f"sqlite:///{path}", validate_providers=False, start_runs=False)
    assert apply_manifests(request).applied
    reads = []
    real = snapshot_module.read_snapshot
    monkeypatch.setattr(snapshot_module, "read_snapshot", lambda source: reads.append(source) or real(source))
    agents = quick_start / "agents.yaml"

    def temperature(old: str, new: str) -> None:
        agents.write_text(agents.read_text(encoding="utf-8").replace(f"temperature: {old}", f"temperature: {new}", 1), encoding="utf-8")

    def sql(statement: str) -> list[Any]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute(statement).fetchall()
        conn.close()
        return rows

    def meanwhile(statement: str) -> ApplyHooks:  # someone else commits while the plan is confirmed
        def confirm(plan: Any) -> None:
            sql(statement)

        return ApplyHooks(confirm=confirm)

    temperature("0.0", "0.4")
    assert apply_manifests(request).applied and len(reads) == 1  # planned and written on one read

    temperature("0.4", "0.6")
    cached = "INSERT INTO answer_cache VALUES ('c', 'm', 0, 'null', 0, 0, NULL, '2026-01-01 00:00:00.000000')"
    assert apply_manifests(request, meanwhile(cached)).applied and len(reads) == 3  # a write the state does not show: read again, applied

    temperature("0.6", "0.8")
    history = sql("SELECT count(*) FROM reconciler_applies")
    with pytest.raises(StalePlan, match="the database changed after this plan was made"):
        apply_manifests(request, meanwhile("UPDATE agent_configs SET temperature = 1.5 WHERE name = 'message-classifier'"))
    assert len(reads) == 5 and sql("SELECT count(*) FROM reconciler_applies") == history
    assert sql("SELECT temperature FROM agent_configs WHERE name = 'message-classifier'") == [(1.5,)]
