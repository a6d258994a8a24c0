"""The two ``RowSource``s the state is read through (``kinds.base.RowSource``): a standard-library
``sqlite3`` connection (a plan on SQLite, without SQLAlchemy) and an SQLAlchemy connection
(PostgreSQL, and apply's and watch's write transactions), reading the same SQL text.

Both give the driver's values. On SQLite those are the same either way: SQLAlchemy's own column
types decode only JSON there (text, decoded here as its JSON type would, ``json_texts``). On
PostgreSQL psycopg decodes JSON itself (with the engine's deserializer) and SQLAlchemy's float
type turns a NUMERIC or integer column's value into a float (``as_floats``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.kinds.base import ColumnType, RowSource
from reconciler.state.jsoncodec import loads_all

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy import Connection

# the tables and views a bare name finds (PostgreSQL: those of the schemas on the search path)
_TABLE_NAMES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')",
    "postgresql": "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r', 'p', 'v', 'm', 'f') AND pg_catalog.pg_table_is_visible(oid)",
}


def json_texts(values: Sequence[Any]) -> list[Any]:
    """A JSON column's values as read on SQLite (text), decoded as SQLAlchemy's JSON type would
    (with the engine's deserializer, ``jsoncodec.loads``) without its per-value result processors:
    the texts parsed together (``loads_all``); NULL, or a number SQLite's NUMERIC affinity made of
    a JSON number, as it is."""
    texts = [v for v in values if v.__class__ is str]
    if len(texts) == len(values):
        return loads_all(texts)
    decoded = iter(loads_all(texts))
    return [next(decoded) if v.__class__ is str else v for v in values]


def as_floats(values: Sequence[Any]) -> list[Any]:
    return [v if v is None or v.__class__ is float else float(v) for v in values]


_DECODERS: dict[str, dict[ColumnType, Callable[[Sequence[Any]], list[Any]] | None]] = {
    "sqlite": {"json": json_texts, "float": None},
    "postgresql": {"json": None, "float": as_floats},
}


class _DialectRows(RowSource):
    def table_names(self) -> set[str]:
        return {str(name) for (name,) in self.rows(_TABLE_NAMES[self.dialect])}

    def decoder(self, column_type: ColumnType) -> Callable[[Sequence[Any]], list[Any]] | None:
        return _DECODERS[self.dialect][column_type]


class SqliteRows(_DialectRows):
    """A standard-library connection (``state.db.open_sqlite_state``)."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str) -> Sequence[Sequence[Any]]:
        return self.conn.execute(sql).fetchall()


class ConnectionRows(_DialectRows):
    """An SQLAlchemy connection, read with ``exec_driver_sql``: the driver's values, no SQLAlchemy types."""

    def __init__(self, conn: Connection) -> None:
        self.connection = conn
        self.dialect = conn.dialect.name

    def rows(self, sql: str) -> Sequence[Sequence[Any]]:
        return self.connection.exec_driver_sql(sql).all()


__all__ = ["ConnectionRows", "SqliteRows", "as_floats", "json_texts"]
