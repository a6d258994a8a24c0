"""Opening the state database: URL resolution, engine settings, schema migrations, error translation."""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError

from reconciler.errors import StateError
from reconciler.state import jsoncodec

if TYPE_CHECKING:
    import sqlite3

DATABASE_URL_ENV = "RECONCILER_DATABASE_URL"
DEFAULT_SQLITE_PATH = Path(".reconciler") / "state.db"
HEAD_REVISION = "0001"  # keep equal to the newest migration; a test checks it


def database_url(explicit: str | None = None) -> URL:
    """The state database: ``--db``, then $RECONCILER_DATABASE_URL, then .reconciler/state.db."""
    raw = explicit or os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{DEFAULT_SQLITE_PATH}"
    if "://" not in raw:  # a bare path means a SQLite file
        raw = f"sqlite:///{raw}"
    try:
        url = make_url(raw)
    except ArgumentError:
        raise StateError(
            f"cannot parse database URL {raw!r}",
            hint="use sqlite:///path/state.db or postgresql://user@host:5432/dbname",
        ) from None
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername not in {"sqlite", "sqlite+pysqlite", "postgresql+psycopg"}:
        raise StateError(f"unsupported database {url.drivername!r}", hint="use a sqlite:/// or postgresql:// URL")
    return url


def display_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path | None:
    """The SQLite file behind a URL (also ``sqlite:///file:PATH?mode=ro&uri=true``), if any."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    database = url.database
    if url.query.get("uri") in ("true", "1") and database.startswith("file:"):
        database = database[len("file:"):].split("?", 1)[0]
        if database.startswith("//"):
            database = database[2:]
        if not database or database == ":memory:" or url.query.get("mode") == "memory":
            return None
    return Path(database)


_open_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _dispose_open_engines() -> None:
    """At exit, close pooled connections politely (a PostgreSQL server logs an unexpected EOF
    otherwise); the command line ends without tearing down the interpreter (see cli.entry_point)."""
    for engine in list(_open_engines):
        engine.dispose()


atexit.register(_dispose_open_engines)


def make_engine(url: URL) -> Engine:
    engine = _make_engine(url)
    _open_engines.add(engine)
    return engine


def _make_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30}, json_deserializer=jsoncodec.loads)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy's pysqlite recipe)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(
        url, connect_args={"connect_timeout": 5, "application_name": "reconciler"}, pool_pre_ping=True, json_deserializer=jsoncodec.loads
    )


@contextlib.contextmanager
def translate_db_errors(url: URL, doing: str) -> Iterator[None]:
    """Turn driver exceptions into a clear StateError (no traceback for an unreachable or read-only DB)."""
    try:
        yield
    except StateError:
        raise
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        hint = "check --db / $RECONCILER_DATABASE_URL and that the server is running"
        if isinstance(exc, IntegrityError):
            hint = "the database was changed while reconciler worked, or holds rows it cannot reconcile; run plan again"
        elif "readonly" in reason or "read-only" in reason:
            hint = "the database is read-only: check file and directory permissions, or point --db elsewhere"
        elif "locked" in reason:
            hint = "another process holds the database; retry when it finishes"
        raise StateError(f"database error while {doing} ({display_url(url)}): {reason}", hint=hint) from None
    except SQLAlchemyError as exc:
        raise StateError(f"database error while {doing} ({display_url(url)}): {exc}") from None
    except OSError as exc:
        raise StateError(f"cannot use database {display_url(url)} while {doing}: {exc.strerror or exc}") from None


def schema_revision(engine: Engine) -> str | None:
    """The applied migration revision, or None for a database reconciler has not initialised."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest revision with Alembic (imported only when needed)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_engine(explicit_url: str | None, *, create: bool) -> Engine | None:
    """An engine on the state database. With ``create=True`` the schema is created or migrated.
    With ``create=False`` nothing is written: a missing or empty database gives None (an empty
    state), and a database a seed-like service created is read as it is (all rows unmanaged)."""
    url = database_url(explicit_url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        if not create:
            return None
        with translate_db_errors(url, "creating the database directory"):
            path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    with translate_db_errors(url, "opening the database"):
        revision = schema_revision(engine)
        if revision != HEAD_REVISION:
            if not create:
                if revision is None and _is_empty(engine):
                    return None
                if revision is not None:
                    _refuse_unknown_revision(url, revision)
                return engine
            upgrade_schema(engine)
    return engine


def _is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        return not inspect(conn).has_table("llm_providers")


def _refuse_unknown_revision(url: URL, revision: str) -> None:
    """A schema newer (or other) than this release knows: reading it could misreport the state."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    known = {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}
    if revision not in known:
        raise StateError(
            f"database {display_url(url)} has schema revision {revision!r}, which this reconciler does not know",
            hint="upgrade reconciler to the release that last wrote this database",
        )
