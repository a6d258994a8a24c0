"""Many rows into one table with one ``executemany`` on the driver, inside the caller's transaction.

``conn.execute(insert(table), rows)`` spent a fifth of a first apply of 10,000 resources building
and processing a parameter dictionary per row (about 20,000 rows: the kinds' rows and their
bookkeeping). Here the statement is compiled once by SQLAlchemy for the dialect, each column's
values go through the bind processor SQLAlchemy itself would apply (UUIDs as the dialect stores
them, JSON through the engine's serializer, SQLite's datetime text, a PostgreSQL enum's cast in the
SQL), once per column, and the driver gets plain tuples (or dictionaries, for a named paramstyle).
So the rows are the ones SQLAlchemy writes, byte for byte (tests/test_bulk_insert.py checks it on
SQLite and PostgreSQL), and errors and events still go through the connection."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys, each a column of ``table``). A column left out gets
    its scalar default, as SQLAlchemy would give it; one whose default is computed must be given."""
    if not rows:
        return
    from sqlalchemy import insert

    keys = same_keys(table.name, rows)
    compiled: Any = insert(table).compile(dialect=conn.dialect, column_keys=keys)
    columns: dict[str, list[Any]] = {}
    for column in compiled.insert_prefetch:  # left out, with a default SQLAlchemy fills in
        default = column.default
        if default is None or not default.is_scalar:
            raise ValueError(f"insert_rows: give {table.name}.{column.key}, whose default is computed")
        columns[column.key] = [default.arg] * len(rows)
    for key in keys:
        columns[key] = [row[key] for row in rows]
    names = list(compiled.positiontup) if compiled.positional else list(compiled.bind_names.values())
    processors: dict[str, Callable[[Any], Any]] = compiled._bind_processors
    values = [processed(processors.get(name), columns[name]) for name in names]
    params: list[Any] = list(zip(*values, strict=True))
    if not compiled.positional:
        escaped = [compiled.escaped_bind_names.get(name, name) for name in names]
        params = [dict(zip(escaped, row, strict=True)) for row in params]
    conn.exec_driver_sql(compiled.string, params)


def same_keys(table: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns of ``rows``, which must all have the same ones (else ValueError)."""
    keys = list(rows[0])
    if any(len(row) != len(keys) for row in rows):
        raise ValueError(f"insert_rows: the rows for {table} do not all have the same columns")
    return keys


def processed(processor: Callable[[Any], Any] | None, values: list[Any]) -> list[Any]:
    """``values`` through a column's bind processor; a value shared by every row (an apply's
    timestamp) is processed once."""
    if processor is None:
        return values
    first = values[0]
    if all(v is first for v in values):
        return [processor(first)] * len(values)
    return [processor(v) for v in values]
