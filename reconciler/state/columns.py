"""The column types of the database as it is, not as reconciler's tables declare them.

A database another service created may type a column as a PostgreSQL enum where reconciler's
tables say text: SQLModel makes ``llm_providers.type`` the enum ``providertype`` (ollama, openai)
and ``validation_status`` the enum ``validationstatus``. PostgreSQL refuses a text value where an
enum is expected, and it refuses a value the enum lacks. So the kinds' tables are reflected once
per read (``reflect_columns``), writes and comparisons go through ``DbColumns.writable(table)``, a
copy of the table whose enum columns cast their values to the database's enum type, and a plan
checks every value it would write against the enum's values (``reconciler.plan.enums``).

SQLite has no enum types (SQLModel writes VARCHAR there, and the values live only in the
service's Python code), so nothing is reflected on SQLite.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reconciler.kinds import KINDS

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Table
    from sqlalchemy.types import TypeEngine

ColumnKey = tuple[str, str]  # (table, column)


@dataclass(frozen=True)
class DbEnum:
    """A column the database types as a PostgreSQL enum, with the values the enum has now."""

    table: str
    column: str
    type_name: str
    schema: str | None
    values: tuple[str, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.type_name}" if self.schema else self.type_name


def enum_cast(type_name: str, schema: str | None = None) -> TypeEngine[str]:
    """Text on the Python side, bound as ``CAST(:value AS the_enum)`` in SQL, so an INSERT, an
    UPDATE and a WHERE comparison all work on an enum column. Results are left as the driver reads
    them (psycopg reads an enum as text), so a value outside the enum can still be read."""
    return _enum_cast_type()(type_name, schema)


@functools.cache
def _enum_cast_type() -> Any:
    """The ``TypeDecorator`` class behind ``enum_cast``, defined on first use (SQLAlchemy is
    imported only by what writes)."""
    from sqlalchemy import String, cast
    from sqlalchemy.dialects.postgresql import ENUM
    from sqlalchemy.types import TypeDecorator

    class EnumCast(TypeDecorator[str]):
        impl = String
        cache_ok = True

        def __init__(self, type_name: str, schema: str | None = None) -> None:
            super().__init__()
            self.type_name = type_name
            self.schema = schema

        def bind_expression(self, bindvalue: Any) -> Any:
            return cast(bindvalue, ENUM(name=self.type_name, schema=self.schema, create_type=False))

    return EnumCast


@dataclass(frozen=True)
class DbColumns:
    """What the database's own column types require of the values reconciler writes."""

    enums: Mapping[ColumnKey, DbEnum] = field(default_factory=dict)
    _writable: dict[str, Table] = field(default_factory=dict, compare=False, repr=False)

    def enum(self, table: str, column: str) -> DbEnum | None:
        return self.enums.get((table, column))

    def writable(self, table: Table) -> Table:
        """``table`` itself, or (when the database types some of its columns as enums) a copy whose
        enum columns cast to the database's types: use it for every write and WHERE clause."""
        if not any(key[0] == table.name for key in self.enums):
            return table
        copy = self._writable.get(table.name)
        if copy is None:
            copy = self._writable[table.name] = _with_enum_casts(table, self.enums)
        return copy


NO_ENUMS = DbColumns()


def _with_enum_casts(table: Table, enums: Mapping[ColumnKey, DbEnum]) -> Table:
    from sqlalchemy import Column, MetaData, Table

    columns = []
    for c in table.columns:
        e = enums.get((table.name, c.name))
        type_ = enum_cast(e.type_name, e.schema) if e is not None else c.type
        # no foreign keys: the copy lives in a metadata of its own and is only written through
        columns.append(Column(c.name, type_, primary_key=c.primary_key, nullable=c.nullable, default=c.default))
    return Table(table.name, MetaData(), *columns)


def reflect_columns(conn: Connection) -> DbColumns:
    """The enum-typed columns of the kinds' tables, read from the database now (PostgreSQL only)."""
    if conn.dialect.name != "postgresql":
        return NO_ENUMS
    from sqlalchemy import inspect
    from sqlalchemy.dialects.postgresql import ENUM

    names = [k.table_name for k in KINDS]
    enums: dict[ColumnKey, DbEnum] = {}
    for (_schema, table), columns in inspect(conn).get_multi_columns(filter_names=names).items():
        for c in columns:
            t = c["type"]
            if isinstance(t, ENUM) and t.name:
                enums[(table, c["name"])] = DbEnum(table, c["name"], t.name, t.schema, tuple(t.enums))
    found = DbColumns(enums)
    _by_engine[conn.engine] = found
    return found


_by_engine: weakref.WeakKeyDictionary[Engine, DbColumns] = weakref.WeakKeyDictionary()


def columns_for(conn: Connection) -> DbColumns:
    """The database's column types, reflected once per engine (for writes outside an apply, such
    as a provider's validation status: only the enum types' names matter for the casts, and those
    do not change when values are added)."""
    if conn.dialect.name != "postgresql":
        return NO_ENUMS
    found = _by_engine.get(conn.engine)
    return found if found is not None else reflect_columns(conn)


def writable(conn: Connection, table: Table) -> Table:
    """``table`` as this database's column types need it written (see ``DbColumns.writable``)."""
    return columns_for(conn).writable(table)


def add_enum_values(conn: Connection, enum: DbEnum, values: Iterable[str]) -> None:
    """``ALTER TYPE ... ADD VALUE IF NOT EXISTS`` for each value, inside the caller's transaction.
    PostgreSQL lets no transaction use a value before the one that added it commits, so the
    caller commits this before writing any row that uses the values."""
    from sqlalchemy import String
    from sqlalchemy.dialects.postgresql import ENUM

    preparer: Any = conn.dialect.identifier_preparer  # PostgreSQL's: it quotes a (schema-qualified) type name
    type_sql = preparer.format_type(ENUM(name=enum.type_name, schema=enum.schema, create_type=False))
    literal = String().literal_processor(conn.dialect)
    assert literal is not None
    for value in values:
        conn.exec_driver_sql(f"ALTER TYPE {type_sql} ADD VALUE IF NOT EXISTS {literal(value)}")
    _by_engine.pop(conn.engine, None)


__all__ = ["NO_ENUMS", "DbColumns", "DbEnum", "add_enum_values", "columns_for", "enum_cast", "reflect_columns", "writable"]
