"""Opening the state database: URL resolution, engine settings, schema migrations, error translation.

SQLAlchemy is imported only where an engine is made or a URL needs its parser: a plan on a
SQLite file (``sqlite:///PATH`` or a bare path) reads it with the standard library's ``sqlite3``
(``open_sqlite_state``), set up as the engine sets up its connections (``configure_sqlite``)."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import StateError
from reconciler.state import jsoncodec

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL

DATABASE_URL_ENV = "RECONCILER_DATABASE_URL"
DEFAULT_SQLITE_PATH = Path(".reconciler") / "state.db"
HEAD_REVISION = "0006"  # keep equal to the newest migration; a test checks it


def database_url(explicit: str | None = None) -> URL:
    """The state database: ``--db``, then $RECONCILER_DATABASE_URL, then .reconciler/state.db."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = _raw_url(explicit)
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


def _raw_url(explicit: str | None) -> str:
    raw = explicit or os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{DEFAULT_SQLITE_PATH}"
    return raw if "://" in raw else f"sqlite:///{raw}"  # a bare path means a SQLite file


def plain_sqlite_url(explicit: str | None) -> tuple[str, Path] | None:
    """(URL, file) when the database is a SQLite file named in the plain form ``sqlite:///PATH``
    (or a bare path), which needs no URL parser: what ``database_url`` would make of it, as
    ``display_url`` shows it. None for any other database or form (options, escapes, memory)."""
    raw = _raw_url(explicit)
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        database = raw[len(prefix) :] if raw.startswith(prefix) else ""
        if database and database != ":memory:" and not any(c in database for c in "?#%@"):
            return raw, Path(database)
    return None


def display_url(url: URL | str) -> str:
    """The URL as messages show it (without a password); a plain SQLite URL is shown as it is."""
    return url if isinstance(url, str) else url.render_as_string(hide_password=True)


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


SQLITE_TIMEOUT = 30  # seconds a statement waits for another process's lock


def configure_sqlite(dbapi_connection: sqlite3.Connection) -> None:
    """Every SQLite connection of ours, the engine's and ``open_sqlite_state``'s alike."""
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy's pysqlite recipe)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_TIMEOUT * 1000}")
    cursor.close()


def _make_engine(url: URL) -> Engine:
    from sqlalchemy import create_engine, event

    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_TIMEOUT}, json_deserializer=jsoncodec.loads, json_serializer=jsoncodec.dumps)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            configure_sqlite(dbapi_connection)

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
def translate_db_errors(url: URL | str, doing: str) -> Iterator[None]:
    """Turn driver exceptions into a clear StateError (no traceback for an unreachable or read-only DB)."""
    try:
        yield
    except StateError:
        raise
    except OSError as exc:
        raise StateError(f"cannot use database {display_url(url)} while {doing}: {exc.strerror or exc}") from None
    except Exception as exc:
        translated = _translated(exc, f"database error while {doing} ({display_url(url)})")
        if translated is None:
            raise
        raise translated from None


def _translated(exc: Exception, what: str) -> StateError | None:
    """SQLAlchemy's errors, and the ``sqlite3`` module's raised outside it; None for anything else
    (neither module is imported here: an error of a module nobody imported cannot occur)."""
    sa_errors: Any = sys.modules.get("sqlalchemy.exc")
    if sa_errors is not None and isinstance(exc, sa_errors.DBAPIError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return StateError(f"{what}: {reason}", hint=error_hint(exc, reason))
    if sa_errors is not None and isinstance(exc, sa_errors.SQLAlchemyError):
        return StateError(f"{what}: {exc}")
    sqlite: Any = sys.modules.get("sqlite3")
    if sqlite is not None and isinstance(exc, sqlite.Error):
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return StateError(
            f"{what}: {reason}",
            hint=driver_hint(exc, reason, integrity=isinstance(exc, sqlite.IntegrityError), operational=isinstance(exc, sqlite.OperationalError)),
        )
    return None


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


def error_hint(exc: Any, reason: str) -> str:
    """The hint for SQLAlchemy's ``DBAPIError`` ``exc`` (see ``driver_hint``)."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    return driver_hint(exc.orig, reason, integrity=isinstance(exc, IntegrityError), operational=isinstance(exc, OperationalError))


def driver_hint(orig: Any, reason: str, *, integrity: bool, operational: bool) -> str:
    """A hint that fits the driver's error ``orig``: the server and --db for a connection failure,
    what the column expects for a type or constraint error, and so on. PostgreSQL errors are told
    apart by their SQLSTATE (and name the column in their diagnostics), SQLite's by their message."""
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
    if integrity or state.startswith("23"):
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
    return CONNECTION_HINT if operational and not state else ""


def schema_revision(engine: Engine) -> str | None:
    """The applied migration revision, or None for a database reconciler has not initialised."""
    from sqlalchemy import inspect, text

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
_opened_file: Path | None = None  # opened by open_sqlite_state (which sets _opened to None)


def opened_database() -> URL:
    """The database this process opened last (``open_engine``), else the default one. The secret
    key file lives beside it (``reconciler.providers.secrets``), for code that is not handed an engine."""
    return _opened if _opened is not None else database_url(None)


def opened_sqlite_file() -> Path | None:
    """The SQLite file of the database this process opened last (``open_engine`` or
    ``open_sqlite_state``), else of the default one; None when that is no SQLite file."""
    if _opened is None and _opened_file is not None:
        return _opened_file
    return sqlite_path(opened_database())


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


def open_sqlite_state(url: str, path: Path) -> sqlite3.Connection | None:
    """``open_engine(create=False)`` for a plain SQLite URL (``plain_sqlite_url``) on a standard-
    library connection, in an open read transaction for the caller to read the state in (and close):
    None for a missing or empty database (an empty state); a schema revision this release does not
    know is refused, an older one is read as it is; nothing is written."""
    global _opened, _opened_file
    _opened, _opened_file = None, path
    if not path.exists():
        return None
    import sqlite3

    with translate_db_errors(url, "opening the database"):
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=SQLITE_TIMEOUT)  # never creates it
        try:
            configure_sqlite(conn)
            conn.execute("PRAGMA query_only=ON")
            conn.execute("BEGIN")  # one read transaction for the revision and every table
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
            revision = _recorded_revision(conn, tables)
            if revision != HEAD_REVISION:
                if revision is None and "llm_providers" not in tables:
                    conn.close()
                    return None
                if revision is not None:
                    _refuse_unknown_revision(url, revision)
        except BaseException:
            conn.close()
            raise
    return conn


@dataclass(frozen=True)
class SqliteFile:
    """A SQLite state file named in the plain form (``plain_sqlite_url``) that `apply` writes with the
    standard library's ``sqlite3``, without SQLAlchemy or Alembic: one at ``HEAD_REVISION``, or a
    missing file or one without tables (``new``: the schema is created first, ``prepare_sqlite_file``)."""

    url: str
    path: Path
    new: bool


VERSION_TABLE = "alembic_version"  # Alembic's
_NO_TABLES = "no tables"  # _sqlite_revision of a database without any table


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    """The schema revision Alembic recorded; ``_NO_TABLES`` for a database with no table at all
    (as SQLAlchemy's inspector lists them), None for one with tables but no revision (a seed's)."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite~_%' ESCAPE '~'")}
    if VERSION_TABLE not in tables:
        return _NO_TABLES if not tables else None
    return _recorded_revision(conn, tables)


def _recorded_revision(conn: sqlite3.Connection, tables: set[str]) -> str | None:
    """The revision in Alembic's version table, if ``tables`` (of ``conn``'s database) has it."""
    row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone() if VERSION_TABLE in tables else None
    return None if row is None else str(row[0])


def writable_sqlite_file(explicit: str | None) -> SqliteFile | None:
    """The plain SQLite file ``explicit`` names (``plain_sqlite_url``) when `apply` can write it
    without SQLAlchemy; None for any other database, and for a file that needs Alembic (an older
    revision, a seed's tables) or cannot be read: ``open_engine`` then migrates it or reports it
    as before. Reads the file only (``mode=ro``), and creates nothing."""
    plain = plain_sqlite_url(explicit)
    if plain is None:
        return None
    url, path = plain
    if not path.exists():
        return SqliteFile(url, path, new=True)
    import sqlite3

    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=SQLITE_TIMEOUT)
        try:
            configure_sqlite(conn)
            revision = _sqlite_revision(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    if revision not in (HEAD_REVISION, _NO_TABLES):
        return None
    return SqliteFile(url, path, new=revision == _NO_TABLES)


def connect_sqlite(file: SqliteFile) -> sqlite3.Connection:
    """A connection to ``file`` (created if missing), set up as the engine sets up its connections;
    the key file is looked for beside it (``opened_sqlite_file``)."""
    global _opened, _opened_file
    import sqlite3

    _opened, _opened_file = None, file.path
    conn = sqlite3.connect(file.path, timeout=SQLITE_TIMEOUT)
    try:
        configure_sqlite(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def prepare_sqlite_file(file: SqliteFile) -> None:
    """``open_engine(create=True)`` for a ``SqliteFile``: a new one gets its directory, the file and
    the schema at HEAD in one ``BEGIN IMMEDIATE`` transaction (the statements SQLAlchemy's
    ``create_new_schema`` runs, kept in ``state.sqlite_schema``); a second process creating the same
    database waits, then finds the tables there."""
    if not file.new:
        return
    if not file.path.exists():
        with translate_db_errors(file.url, "creating the database directory"):
            file.path.parent.mkdir(parents=True, exist_ok=True)
    from reconciler.state.sqlite_schema import DDL

    with translate_db_errors(file.url, "opening the database"), contextlib.closing(connect_sqlite(file)) as conn, _immediate(conn):
        if _sqlite_revision(conn) == _NO_TABLES:
            for statement in DDL:
                conn.execute(statement)
            conn.execute(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (?)", (HEAD_REVISION,))


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    conn.execute("COMMIT")


@contextlib.contextmanager
def sqlite_write_transaction(file: SqliteFile, kept: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
    """A connection to ``file`` in a ``BEGIN IMMEDIATE`` transaction (no other writer until it
    ends), committed at the end of the block, rolled back on any error; closed after (``kept``:
    the caller's connection, left open). The schema must be at HEAD (``prepare_sqlite_file`` made
    it, or ``writable_sqlite_file`` found it)."""
    with contextlib.closing(connect_sqlite(file)) if kept is None else contextlib.nullcontext(kept) as conn, _immediate(conn):
        revision = _sqlite_revision(conn)
        if revision != HEAD_REVISION:  # changed since writable_sqlite_file looked: nothing is written
            raise StateError(
                f"database {file.url} changed while reconciler worked: its schema revision is {revision!r}, not {HEAD_REVISION!r}",
                hint="run the command again",
            )
        yield conn


def _is_empty(engine: Engine) -> bool:
    from sqlalchemy import inspect

    with engine.connect() as conn:
        return not inspect(conn).has_table("llm_providers")


def _refuse_unknown_revision(url: URL | str, revision: str) -> None:
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
