"""How apply writes rows: one ``RowWriter`` interface, on an SQLAlchemy connection (PostgreSQL,
``watch``, a database that needed a migration) and on a standard-library ``sqlite3`` connection
(`apply` on a plain SQLite file, without importing SQLAlchemy: its import and its per-statement
work were a fifth of a first apply of 10,000 resources).

Both store the same values, byte for byte (tests/test_sqlite_write.py compares them for every table
and column apply writes): ``SqliteWriter`` converts each value as SQLAlchemy's column type binds it
on SQLite (``state.sqlite_schema``, generated from ``state.tables``): a UUID as 32 hex digits, a
timestamp as SQLite's DATETIME text, JSON through ``jsoncodec.dumps``, a boolean as 0 or 1, a float
as a float; a left-out column gets its scalar default, as ``state.bulk.insert_rows`` gives it."""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from itertools import repeat
from operator import attrgetter, is_, itemgetter
from typing import TYPE_CHECKING, Any

from reconciler.state import jsoncodec
from reconciler.state.bulk import same_keys as _same_keys
from reconciler.state.sqlite_schema import COLUMNS

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table

    from reconciler.state.columns import DbColumns

CHUNK = 500  # values in one IN (...) list

Row = Mapping[str, Any]


class RowWriter(abc.ABC):
    """Writes inside the caller's transaction; tables and columns by name."""

    @abc.abstractmethod
    def insert(self, table: str, rows: Sequence[Row]) -> None:
        """Insert ``rows`` (all with the same keys); a left-out column gets its scalar default, and
        one whose default is computed must be given."""

    @abc.abstractmethod
    def insert_returning_id(self, table: str, row: Row) -> int:
        """Insert one row into a table with an integer ``id`` the database assigns; return it."""

    @abc.abstractmethod
    def update(self, table: str, rows: Sequence[Row], stamp: Row) -> None:
        """Set each row's columns (all rows with the same keys) and ``stamp``'s, where ``id`` is the row's ``_id``."""

    def delete(self, table: str, column: str, values: Sequence[Any], where: Row | None = None) -> None:
        """Delete the rows whose ``column`` is one of ``values`` (and whose columns equal ``where``'s)."""
        for i in range(0, len(values), CHUNK):
            self._delete(table, column, values[i : i + CHUNK], where or {})

    @abc.abstractmethod
    def _delete(self, table: str, column: str, values: Sequence[Any], where: Row) -> None: ...


# -- SQLite through the standard library --------------------------------------------------------


def _uuid(value: Any) -> Any:
    return None if value is None else value.hex


_DATETIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"  # SQLAlchemy's SQLite DATETIME: the fields as given, no zone


def _datetime(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _DATETIME % (value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond)
    if isinstance(value, date):
        return _DATETIME % (value.year, value.month, value.day, 0, 0, 0, 0)
    raise TypeError("SQLite DateTime type only accepts Python datetime and date objects as input.")


def _json(value: Any) -> Any:
    """Every value, None too (SQLAlchemy's JSON stores None as the JSON ``null``)."""
    if value.__class__ is dict and not value:
        return "{}"  # most labels and annotations
    return jsoncodec.dumps(value)


def _bool(value: Any) -> Any:
    if value is None:
        return None
    if value not in (True, False):
        raise (ValueError(f"Value {value!r} is not None, True, or False") if isinstance(value, int) else TypeError(f"Not a boolean value: {value!r}"))
    return int(value)


def _float(value: Any) -> Any:
    return None if value is None else float(value)


def _binary(value: Any) -> Any:
    return None if value is None else sqlite3.Binary(value)


CONVERTERS: dict[str, Callable[[Any], Any] | None] = {
    "uuid": _uuid,
    "datetime": _datetime,
    "json": _json,
    "bool": _bool,
    "float": _float,
    "binary": _binary,
    "plain": None,
}


def _name(identifier: str) -> str:
    return f'"{identifier}"'


class SqliteWriter(RowWriter):
    """A standard-library connection in a write transaction (``state.db.sqlite_write_transaction``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def _columns(self, table: str, rows: Sequence[Row]) -> dict[str, list[Any]]:
        """Each column's converted values, the left-out columns' scalar defaults included."""
        spec = COLUMNS[table]
        keys = _same_keys(table, rows)
        columns: dict[str, list[Any]] = {}
        for name, (_, default, value) in spec.items():
            if name in keys or default == "none":
                continue
            if default == "computed":
                raise ValueError(f"insert_rows: give {table}.{name}, whose default is computed")
            columns[name] = [value] * len(rows)
        for key in keys:
            columns[key] = list(map(itemgetter(key), rows))
        return {name: _column(spec[name][0], values) for name, values in columns.items()}

    def _insert(self, table: str, rows: Sequence[Row]) -> sqlite3.Cursor:
        columns = self._columns(table, rows)
        sql = f"INSERT INTO {_name(table)} ({', '.join(map(_name, columns))}) VALUES ({', '.join('?' * len(columns))})"
        return self.conn.executemany(sql, zip(*columns.values(), strict=True))

    def insert(self, table: str, rows: Sequence[Row]) -> None:
        if rows:
            self._insert(table, rows)

    def insert_returning_id(self, table: str, row: Row) -> int:
        cursor = self._insert(table, [row])
        row_id = self.conn.execute("SELECT last_insert_rowid()").fetchone()[0] if cursor.lastrowid is None else cursor.lastrowid
        return int(row_id)

    def update(self, table: str, rows: Sequence[Row], stamp: Row) -> None:
        if not rows:
            return
        spec = COLUMNS[table]
        keys = [k for k in _same_keys(table, rows) if k != "_id"]
        values = [_column(spec[k][0], list(map(itemgetter(k), rows))) for k in keys]
        values += [[_one(spec[k][0], v)] * len(rows) for k, v in stamp.items()]
        ids = _column("uuid", list(map(itemgetter("_id"), rows)))
        sets = ", ".join(f"{_name(k)} = ?" for k in [*keys, *stamp])
        self.conn.executemany(f"UPDATE {_name(table)} SET {sets} WHERE id = ?", zip(*values, ids, strict=True))

    def _delete(self, table: str, column: str, values: Sequence[Any], where: Row) -> None:
        spec = COLUMNS[table]
        conditions = [f"{_name(k)} = ?" for k in where] + [f"{_name(column)} IN ({', '.join('?' * len(values))})"]
        params = [_one(spec[k][0], v) for k, v in where.items()] + _column(spec[column][0], list(values))
        self.conn.execute(f"DELETE FROM {_name(table)} WHERE {' AND '.join(conditions)}", params)


def _one(column_type: str, value: Any) -> Any:
    convert = CONVERTERS[column_type]
    return value if convert is None else convert(value)


_BOOLS = {True: 1, False: 0, None: None}  # _bool's values for its types
_NONE = type(None)


def _column(column_type: str, values: list[Any]) -> list[Any]:
    """A column's values converted for the file, each as ``CONVERTERS[column_type]`` converts it, a
    column at a time: the bookkeeping and the kinds' rows of a first apply of 10,000 resources are
    about 200,000 values, and a Python call for each cost more than SQLite's inserting them. A value
    shared by every row (an apply's timestamp, a default) is converted once."""
    convert = CONVERTERS[column_type]
    if convert is None or not values:
        return values
    first = values[0]
    if all(map(is_, values, repeat(first))):
        return [convert(first)] * len(values)
    if column_type == "json":
        return jsoncodec.dumps_many(values)
    types = set(map(type, values))
    if column_type == "uuid" and _NONE not in types:
        return list(map(_HEX, values))
    if column_type == "bool" and types <= {bool, _NONE}:
        return list(map(_BOOLS.__getitem__, values))
    if column_type == "float" and types == {float}:
        return values  # float(v) is v
    return [convert(v) for v in values]


_HEX = attrgetter("hex")


# -- SQLAlchemy -----------------------------------------------------------------------------------


class SqlalchemyWriter(RowWriter):
    """An SQLAlchemy connection in a transaction; enum columns cast to the database's enum types
    (``columns``: ``DbColumns.writable``)."""

    def __init__(self, conn: Connection, columns: DbColumns | None = None) -> None:
        from reconciler.state.columns import NO_ENUMS

        self.conn = conn
        self.columns = columns if columns is not None else NO_ENUMS

    def _table(self, name: str) -> Table:
        from reconciler.state.tables import metadata

        return self.columns.writable(metadata.tables[name])

    def insert(self, table: str, rows: Sequence[Row]) -> None:
        from reconciler.state.bulk import insert_rows

        insert_rows(self.conn, self._table(table), rows)

    def insert_returning_id(self, table: str, row: Row) -> int:
        from sqlalchemy import insert

        t = self._table(table)
        return int(self.conn.execute(insert(t).returning(t.c.id), dict(row)).scalar_one())

    def update(self, table: str, rows: Sequence[Row], stamp: Row) -> None:
        from sqlalchemy import bindparam, update

        if not rows:
            return
        t = self._table(table)
        columns = [c for c in rows[0] if c != "_id"]
        stmt = update(t).where(t.c.id == bindparam("_id")).values(**{c: bindparam(c) for c in columns}, **stamp)
        self.conn.execute(stmt, [dict(r) for r in rows])

    def _delete(self, table: str, column: str, values: Sequence[Any], where: Row) -> None:
        from sqlalchemy import delete

        t = self._table(table)
        self.conn.execute(delete(t).where(*(t.c[k] == v for k, v in where.items()), t.c[column].in_(list(values))))


def writer_for(conn: Connection | RowWriter) -> RowWriter:
    """``conn`` itself, or an SQLAlchemy connection's writer (no enum casts: SQLite, or a table
    whose columns are text)."""
    return conn if isinstance(conn, RowWriter) else SqlalchemyWriter(conn)


__all__ = ["CONVERTERS", "RowWriter", "SqlalchemyWriter", "SqliteWriter", "writer_for"]
