"""The state database as the server reads it: read-only at the connection level, opened lazily.

A server may start before the first apply created the database; it then shows an empty state and
opens the database as soon as it exists. Read-only is enforced below the API, not by convention:
SQLite is opened with ``mode=ro`` and PostgreSQL sessions default to read-only transactions, so no
bug in a handler can write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL

from reconciler.state.db import database_url, display_url, open_engine, sqlite_path, translate_db_errors

if TYPE_CHECKING:
    import psycopg

RETRY_OPEN_SECONDS = 1.0


def read_only_url(url: URL) -> str:
    """The URL string that opens ``url`` read-only (SQLite: a ``file:`` URI with ``mode=ro``)."""
    path = sqlite_path(url)
    if path is not None and url.query.get("uri") not in ("true", "1"):
        return f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"
    return url.render_as_string(hide_password=False)


class StateSource:
    """Hands out the engine on the state database, or None while there is no database yet."""

    def __init__(self, explicit_url: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = database_url(explicit_url)
        self.display = display_url(self.url)
        self._open_url = read_only_url(self.url)
        self._clock = clock
        self._engine: Engine | None = None
        self._tried_at: float | None = None
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    def engine(self) -> Engine | None:
        if self._engine is not None:
            return self._engine
        with self._lock:
            now = self._clock()
            if self._engine is None and (self._tried_at is None or now - self._tried_at >= RETRY_OPEN_SECONDS):
                self._tried_at = now
                path = sqlite_path(self.url)
                if path is None or path.exists():
                    with translate_db_errors(self.url, "opening the database"):
                        engine = open_engine(self._open_url, create=False)
                    if engine is not None:
                        _read_only_sessions(engine)
                    self._engine = engine
            return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _read_only_sessions(engine: Engine) -> None:
    if engine.url.get_backend_name() != "postgresql":
        return

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_connection: psycopg.Connection[Any], _record: object) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET default_transaction_read_only = on")
        dbapi_connection.autocommit = autocommit

    engine.dispose()  # the connection open_engine used was made before the listener
