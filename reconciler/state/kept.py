"""The snapshot a long-running process (``watch``) keeps between changes, and the one connection it
reads it on: read again only when someone else committed since.

Whether anyone committed is asked of the database, cheaply, inside the transaction that uses the
snapshot: SQLite's ``PRAGMA data_version`` (it changes when another connection commits, this
connection's own commits excepted, which is why the connection is kept and why ``forget`` follows
every write of its own), PostgreSQL's ``txid_current_snapshot()`` (equal twice only if no writing
transaction ended in between, on any database of the server; its xmax alone would miss one that
ends after a later one). Every write counts, reconciler's or not: a row edited with SQL, another
process's apply, a run recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy import Connection, Engine

    from reconciler.state.db import SqliteFile
    from reconciler.state.snapshot import StateSnapshot

Reader = Callable[["Connection"], "StateSnapshot"]


def commit_marker(conn: Connection) -> Any:
    """A value that differs from the one read earlier on ``conn`` if anyone else committed in
    between (None: the backend cannot tell, so every use reads the state again). Read it before the
    state: the state read after it is then at least as new as the marker says."""
    backend = conn.dialect.name
    if backend == "sqlite":
        return conn.exec_driver_sql("PRAGMA data_version").scalar()
    if backend == "postgresql":
        # xmin:xmax:ids in progress, xmax being the newest ended id + 1: a writing transaction that
        # ends leaves the list, or moves xmin or xmax. Equal twice: no write ended in between.
        return conn.exec_driver_sql("SELECT txid_current_snapshot()::text").scalar()
    return None


class KeptSnapshot:
    """One connection, and the snapshot last read on it with the commit marker it was read under."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self.snapshot: StateSnapshot | None = None
        self._marker: Any = None
        self.reads = 0  # how often the state was read (not reused): for tests and the benchmark

    def connection(self) -> Connection:
        """The kept connection, opened on first use; stays open until ``close``."""
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def read(self, conn: Connection, fresh: Reader) -> StateSnapshot:
        """Inside a transaction on ``connection()``: the kept snapshot if nobody committed since it
        was read, else the state read now with ``fresh`` (and kept)."""
        marker = commit_marker(conn)
        if self.snapshot is not None and marker is not None and marker == self._marker:
            return self.snapshot
        self.forget()
        snapshot = fresh(conn)
        self.reads += 1
        self.snapshot, self._marker = snapshot, marker
        return snapshot

    def refresh(self, fresh: Reader) -> StateSnapshot:
        """Read (or reuse) the state in a read transaction of its own: after a write of this process's
        own, so the next change finds the snapshot ready."""
        conn = self.connection().execution_options(sqlite_begin="DEFERRED")
        with conn.begin():
            return self.read(conn, fresh)

    def forget(self) -> None:
        """Drop the snapshot: this connection wrote (its own commits do not change SQLite's marker),
        or a transaction failed."""
        self.snapshot, self._marker = None, None

    def close(self) -> None:
        self.forget()
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a connection the server already dropped
                self._conn.close()
            self._conn = None


class KeptSqliteState:
    """`apply` on a SQLite file without SQLAlchemy (``state.db.SqliteFile``): the standard-library
    connection the state is read on to plan, and written on after the confirmation. The write
    transaction reuses the snapshot when nobody else committed in between (``PRAGMA data_version``,
    as ``KeptSnapshot`` does for watch), instead of reading the state a second time (a quarter of
    an apply of changes to 10,000 resources); else it reads it again, and the plan's fingerprint
    is checked against that."""

    def __init__(self, file: SqliteFile) -> None:
        self.file = file
        self._conn: sqlite3.Connection | None = None
        self.snapshot: StateSnapshot | None = None
        self._marker: Any = None
        self.reads = 0

    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            from reconciler.state.db import connect_sqlite

            self._conn = connect_sqlite(self.file)
        return self._conn

    def load(self) -> StateSnapshot:
        """The state, read in a read transaction of its own (and kept)."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            return self.read(conn)
        finally:
            conn.rollback()  # read only: nothing to commit

    def read(self, conn: sqlite3.Connection) -> StateSnapshot:
        """Inside a transaction on ``connection()``: the kept snapshot if nobody committed since it
        was read, else the state read now (and kept)."""
        from reconciler.state.rows import SqliteRows
        from reconciler.state.snapshot import read_snapshot

        marker = conn.execute("PRAGMA data_version").fetchone()[0]
        if self.snapshot is not None and marker == self._marker:
            return self.snapshot
        self.forget()
        snapshot = read_snapshot(SqliteRows(conn))
        self.reads += 1
        self.snapshot, self._marker = snapshot, marker
        return snapshot

    def forget(self) -> None:
        self.snapshot, self._marker = None, None

    def close(self) -> None:
        self.forget()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
