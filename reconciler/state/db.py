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
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

from reconciler.errors import StateError
from reconciler.state import jsoncodec

if TYPE_CHECKING:
    import sqlite3

DATABASE_URL_ENV = "RECONCILER_DATABASE_URL"
DEFAULT_SQLITE_PATH = Path(".reconciler") / "state.db"
HEAD_REVISION = "0006"  # keep equal to the newest migration; a test checks it


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
        database = database[len("file:") :].split("?", 1)[0]
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
        engine = create_engine(url, connect_args={"timeout": 30}, json_deserializer=jsoncodec.loads, json_serializer=jsoncodec.dumps)

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
        url,
        connect_args={"connect_timeout": 5, "application_name": "reconciler"},
        pool_pre_ping=True,
        json_deserializer=jsoncodec.loads,
        json_serializer=jsoncodec.dumps,
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
        raise StateError(f"database error while {doing} ({display_url(url)}): {reason}", hint=error_hint(exc, reason)) from None
    except SQLAlchemyError as exc:
        raise StateError(f"database error while {doing} ({display_url(url)}): {exc}") from None
    except OSError as exc:
        raise StateError(f"cannot use database {display_url(url)} while {doing}: {exc.strerror or exc}") from None


CONNECTION_HINT = "check --db / $RECONCILER_DATABASE_URL and that the server is running"
_CONNECTION_FAILURES = (
    "could not connect",
    "connection failed",
    "connection refused",
    "connection to server",
    "unable to open database file",
    "timeout expired",
    "could not translate host name",
    "name or service not known",
    "password authentication failed",
)


def error_hint(exc: DBAPIError, reason: str) -> str:
    """A hint that fits the error: the server and --db for a connection failure, what the column
    expects for a type or constraint error, and so on. PostgreSQL errors are told apart by their
    SQLSTATE (and name the column in their diagnostics), SQLite's by their message."""
    orig = exc.orig
    state = str(getattr(orig, "sqlstate", "") or "")
    diag = getattr(orig, "diag", None)
    column = getattr(diag, "column_name", None)
    table = getattr(diag, "table_name", None)
    low = reason.lower()
    if column is None and "constraint failed: " in low:  # SQLite: "NOT NULL constraint failed: llm_providers.type"
        table, _, column = reason.split("constraint failed: ", 1)[1].split(",")[0].strip().partition(".")
    where = f"column {table}.{column}" if table and column else (f"column {column}" if column else "the column")
    if state.startswith("08") or any(m in low for m in _CONNECTION_FAILURES):
        return CONNECTION_HINT
    if state == "22P02" and "enum" in low:
        return "the value is not one of the column's enum values: `reconciler plan` lists them; `reconciler apply --extend-enums` adds missing ones"
    if state in {"42804", "42883"}:
        return (
            "the database types this column differently from reconciler's tables (a database another service created?); "
            "`reconciler plan` shows the enum columns it knows of, and a type it does not know of needs the column changed"
        )
    if state == "22001" or "value too long" in low:
        return f"{where if column else 'a column'} holds fewer characters than this value: shorten it in the manifest"
    if state == "23502" or "not null constraint failed" in low:
        return f"{where} does not allow NULL in this database: give the field a value in the manifest"
    if state == "23514" or "check constraint failed" in low:
        name = getattr(diag, "constraint_name", None)
        return f"the value breaks the table's CHECK constraint{f' {name}' if name else ''}: see what the database allows there, and use such a value"
    if state == "23503" or "foreign key constraint failed" in low:
        return "a row it refers to is missing, or a row reconciler does not manage still refers to it; run plan again"
    if isinstance(exc, IntegrityError) or state.startswith("23"):
        return "the database was changed while reconciler worked, or holds rows it cannot reconcile (two rows with one name?); run plan again"
    if state in {"42P01", "42703"} or "no such table" in low or "no such column" in low:
        return "the database's tables are not the ones reconciler expects (a table or column is missing): was --db meant for another service?"
    if state == "42501" or "permission denied" in low or "must be owner" in low:
        return "the database user lacks a privilege this needs (adding enum values needs the type's owner): connect as a user who has it"
    if "readonly" in low or "read-only" in low:
        return "the database is read-only: check file and directory permissions, or point --db elsewhere"
    if "locked" in low or state in {"40P01", "55P03"}:
        return "another process holds the database; retry when it finishes"
    if "file is not a database" in low:
        return "--db points at a file that is not a SQLite database"
    if state.startswith("57P") or "server closed the connection" in low or "terminating connection" in low:
        return "the server ended the connection (restarted or shut down?): " + CONNECTION_HINT
    return CONNECTION_HINT if isinstance(exc, OperationalError) and not state else ""


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


_opened: URL | None = None


def opened_database() -> URL:
    """The database this process opened last (``open_engine``), else the default one. The secret
    key file lives beside it (``reconciler.providers.secrets``), for code that is not handed an engine."""
    return _opened if _opened is not None else database_url(None)


def open_engine(explicit_url: str | None, *, create: bool) -> Engine | None:
    """An engine on the state database. With ``create=True`` the schema is created or migrated.
    With ``create=False`` nothing is written: a missing or empty database gives None (an empty
    state), and a database a seed-like service created is read as it is (all rows unmanaged)."""
    global _opened
    url = database_url(explicit_url)
    _opened = url
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
            from reconciler.state.schema import create_new_schema  # an empty database: no Alembic

            if revision is not None or not create_new_schema(engine, HEAD_REVISION):
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
