"""A new, empty database's schema in one transaction, without Alembic.

Running migrations 0001..HEAD on an empty database creates every table of the current metadata
(0001; the later revisions find theirs there), the task queue's schema on PostgreSQL (0005) and
Alembic's version table holding HEAD. Importing Alembic and running its machinery for that was a
tenth of a first apply of 10,000 resources, so a database with no tables at all gets the same
schema here (tests/test_new_schema.py compares the two, table by table, on SQLite and
PostgreSQL); any other database, a seed's or an older reconciler's, goes through Alembic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.state.db import VERSION_TABLE

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Table


def create_new_schema(engine: Engine, head: str) -> bool:
    """Create the whole schema at revision ``head`` if the database has no table yet; False (and
    nothing written) otherwise. On SQLite the transaction is ``BEGIN IMMEDIATE``, so a second
    process creating the same database waits and then finds the tables there."""
    from sqlalchemy import inspect

    from reconciler.state.tables import metadata

    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            if inspect(conn).get_table_names():
                return False
            version = _version_table()
            version.create(conn)
            metadata.create_all(conn, checkfirst=False)
            if conn.dialect.name == "postgresql":
                install_queue_schema(conn)
            conn.execute(version.insert().values(version_num=head))
    return True


def _version_table() -> Table:
    """Alembic's version table, as ``alembic.ddl.impl.DefaultImpl.version_table_impl`` makes it."""
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table

    return Table(
        VERSION_TABLE,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )


def install_queue_schema(conn: Connection) -> None:
    """The task queue's schema (procrastinate's ``schema.sql`` of the pinned release), PostgreSQL only."""
    from procrastinate.schema import SchemaManager  # only here: plan and apply never import it

    run_script(conn, SchemaManager.get_schema())


def run_script(conn: Connection, script: str) -> None:
    """A multi-statement SQL script, in the caller's transaction: on the driver's cursor without
    parameters, psycopg sends it as one simple query and leaves its % signs alone."""
    with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(script)


# -- the same schema for a SQLite file without SQLAlchemy: generated data (state.sqlite_schema) --

COLUMN_TYPES = ("uuid", "datetime", "json", "bool", "float", "binary", "plain")  # state.write converts each as SQLAlchemy binds it on SQLite


def sqlite_schema_text() -> str:
    """The source of ``reconciler.state.sqlite_schema``: the DDL ``create_new_schema`` runs on
    SQLite (SQLAlchemy's own text, captured on a mock engine) and each column's type and scalar
    default, for the writes of ``state.write.SqliteWriter``."""
    from sqlalchemy import JSON, Boolean, DateTime, Float, LargeBinary, Uuid, create_mock_engine
    from sqlalchemy.dialects import sqlite

    from reconciler.state.db import HEAD_REVISION
    from reconciler.state.tables import metadata

    statements: list[str] = []
    dialect = sqlite.dialect()
    engine = create_mock_engine("sqlite://", lambda sql, *args, **kwargs: statements.append(str(sql.compile(dialect=dialect))))
    _version_table().create(engine)
    metadata.create_all(engine, checkfirst=False)
    statements = _indexes_sorted(statements)
    kinds = ((Boolean, "bool"), (DateTime, "datetime"), (JSON, "json"), (Uuid, "uuid"), (Float, "float"), (LargeBinary, "binary"))
    columns: dict[str, dict[str, tuple[str, str, object]]] = {}
    for table in metadata.sorted_tables:
        columns[table.name] = {}
        for c in table.columns:
            found = [name for type_, name in kinds if isinstance(c.type, type_)]
            if not found and c.type.bind_processor(dialect) is not None:
                raise TypeError(f"{table.name}.{c.name}: SQLAlchemy converts {c.type!r} on SQLite; give state.write a converter for it")
            default = c.default
            how = "none" if default is None else ("scalar" if default.is_scalar else "computed")
            value = default.arg if how == "scalar" else None  # type: ignore[union-attr]
            columns[table.name][c.name] = (found[0] if found else "plain", how, value)
    lines = [
        '"""The schema of a new SQLite state database, and how each column is written, as SQLAlchemy',
        "makes and writes them (``reconciler.state.tables``): `apply` creates and writes a SQLite file",
        "without importing SQLAlchemy (``state.write``). Generated by ``python -m reconciler.state.schema``",
        '(tests/test_sqlite_write.py fails when it is out of date): do not edit."""',
        "",
        "from __future__ import annotations",
        "",
        f"REVISION = {_literal(HEAD_REVISION)}",
        "",
        "# every statement, in order: Alembic's version table, then each table and its indexes",
        "DDL = (",
        *(_statement(s) for s in statements),
        ")",
        "",
        "# table -> column -> (type, default: none | scalar | computed, the scalar default)",
        "COLUMNS: dict[str, dict[str, tuple[str, str, object]]] = {",
    ]
    for table_name, cols in columns.items():
        lines.append(f"    {_literal(table_name)}: {{")
        lines += [f"        {_literal(c)}: ({', '.join(_literal(v) for v in spec)})," for c, spec in cols.items()]
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _indexes_sorted(statements: list[str]) -> list[str]:
    """Each table's CREATE INDEX statements (SQLAlchemy emits them in the order of a set) sorted."""
    out: list[str] = []
    indexes: list[str] = []
    for sql in [*statements, ""]:
        if sql.lstrip().startswith(("CREATE INDEX", "CREATE UNIQUE INDEX")):
            indexes.append(sql)
            continue
        out += sorted(indexes, key=lambda s: s.split(" ON ")[0].split()[-1])
        indexes = []
        out.append(sql)
    return out[:-1]


def _statement(sql: str) -> str:
    """One statement as an item of the ``DDL`` tuple, a string a line (as ruff formats it)."""
    one = f"    {_literal(sql)},"
    if len(one) <= 150:  # the line length of pyproject.toml
        return one
    lines = sql.splitlines(keepends=True)
    return "\n".join(["    (", *(f"        {_literal(line)}" for line in lines), "    ),"])


def _literal(value: object) -> str:
    """Python source for a string, number, bool or None, as ruff formats it (double quotes, unless
    the text holds double quotes and no single ones)."""
    import json

    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)[1:-1]
        if '"' in value and "'" not in value:
            return "'" + text.replace('\\"', '"') + "'"
        return f'"{text}"'
    assert value is None or isinstance(value, bool | int | float), value
    return repr(value)


if __name__ == "__main__":
    from pathlib import Path

    Path(__file__).with_name("sqlite_schema.py").write_text(sqlite_schema_text(), encoding="utf-8")
