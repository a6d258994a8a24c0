"""The two ``RowSource``s the state is read through (``kinds.base.RowSource``): a standard-library
``sqlite3`` connection (a plan on SQLite, without SQLAlchemy) and an SQLAlchemy connection
(PostgreSQL, and apply's and watch's write transactions), reading the same SQL text.

Both give the driver's values. On SQLite those are the same either way: SQLAlchemy's own column
types decode only JSON there (text, decoded here as its JSON type would, ``json_text``). On
PostgreSQL psycopg decodes JSON itself (with the engine's deserializer) and SQLAlchemy's float
type turns a NUMERIC or integer column's value into a float (``as_float``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.kinds.base import ColumnType, RowSource
from reconciler.state.jsoncodec import loads

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy import Connection

# the tables and views a bare name finds (PostgreSQL: those of the schemas on the search path)
_TABLE_NAMES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')",
    "postgresql": "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r', 'p', 'v', 'm', 'f') AND pg_catalog.pg_table_is_visible(oid)",
}


def json_text(value: Any) -> Any:
    """A JSON column read as text on SQLite, decoded as SQLAlchemy's JSON type would (with the
    engine's deserializer), without its per-value result processors; ``{}`` (most labels and
    annotations) without a parser call."""
    if value.__class__ is str:
        return {} if value == "{}" else loads(value)
    return value  # NULL, or a number SQLite's NUMERIC affinity made of a JSON number


def as_float(value: Any) -> Any:
    return value if value.__class__ is float else float(value)


_DECODERS: dict[str, dict[ColumnType, Callable[[Any], Any] | None]] = {
    "sqlite": {"json": json_text, "float": None},
    "postgresql": {"json": None, "float": as_float},
}


class _DialectRows(RowSource):
    def table_names(self) -> set[str]:
        return {str(name) for (name,) in self.rows(_TABLE_NAMES[self.dialect])}

    def decoder(self, column_type: ColumnType) -> Callable[[Any], Any] | None:
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


__all__ = ["ConnectionRows", "SqliteRows", "as_float", "json_text"]
