"""One apply at a time per database: a kernel file lock for SQLite, an advisory lock for PostgreSQL.

Both are released by the operating system or the server when the holder dies, so a killed apply
never leaves a stale lock, and both let a waiter say who holds the lock when it gives up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.errors import LockTimeout
from reconciler.state.db import SqliteFile, sqlite_path

if TYPE_CHECKING:
    from sqlalchemy import Engine, TextClause

DEFAULT_LOCK_TIMEOUT = float(os.environ.get("RECONCILER_LOCK_TIMEOUT", "60"))
_PG_LOCK_KEY = 0x5265636F  # "Reco"
_POLL_SECONDS = 0.05


def text(sql: str) -> TextClause:
    """SQLAlchemy's ``text``, imported by the PostgreSQL locks only (this module is imported by `plan`)."""
    from sqlalchemy import text as sql_text

    return sql_text(sql)


def holder_identity() -> str:
    import getpass  # with socket, 3 ms that `plan` (which imports this module, never locks) does not need
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _describe(info: dict[str, object]) -> str:
    parts = [str(info.get("holder", "unknown"))]
    if info.get("pid"):
        parts.append(f"pid {info['pid']}")
    if info.get("since"):
        parts.append(f"since {info['since']}")
    if info.get("command"):
        parts.append(f"running {info['command']!r}")
    return ", ".join(parts)


def _timeout_error(timeout: float, who: str) -> LockTimeout:
    return LockTimeout(
        f"another apply holds the state lock ({who}); gave up after waiting {timeout:g} s",
        hint="wait for it to finish and retry, or raise --lock-timeout",
    )


@contextlib.contextmanager
def apply_lock(engine: Engine | SqliteFile, timeout: float = DEFAULT_LOCK_TIMEOUT, command: str = "apply") -> Iterator[None]:
    """Hold the database's apply lock for the duration of the block (``engine``: an engine, or the
    SQLite file `apply` writes without one)."""
    info = {
        "holder": holder_identity(),
        "pid": os.getpid(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
    }
    if isinstance(engine, SqliteFile) or engine.url.get_backend_name() == "sqlite":
        path = engine.path if isinstance(engine, SqliteFile) else sqlite_path(engine.url)
        if path is None:
            yield
            return
        with _file_lock(path.with_name(path.name + ".lock"), timeout, info):
            yield
    else:
        with _advisory_lock(engine, timeout, info):
            yield


@contextlib.contextmanager
def _file_lock(lock_path: os.PathLike[str], timeout: float, info: dict[str, object]) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    try:
                        who = _describe(json.loads(os.pread(fd, 4096, 0) or b"{}"))
                    except ValueError:
                        who = "unknown holder"
                    raise _timeout_error(timeout, who) from None
                time.sleep(_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _advisory_lock(engine: Engine, timeout: float, info: dict[str, object]) -> Iterator[None]:
    label = f"reconciler {info['command']} {info['holder']} pid={info['pid']}"[:63]
    with engine.connect() as conn:
        conn.execute(text("SELECT set_config('application_name', :label, false)"), {"label": label})
        conn.commit()
        deadline = time.monotonic() + timeout
        while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_LOCK_KEY}).scalar():
            conn.commit()
            if time.monotonic() >= deadline:
                row = conn.execute(
                    text(
                        "SELECT a.application_name, a.client_addr, a.pid, a.backend_start FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted AND l.objid = :k"
                    ),
                    {"k": _PG_LOCK_KEY},
                ).first()
                who = f"{row.application_name} (server pid {row.pid}, since {row.backend_start:%Y-%m-%d %H:%M:%S})" if row else "unknown holder"
                raise _timeout_error(timeout, who)
            time.sleep(_POLL_SECONDS)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()


_PG_LEADER_KEY = _PG_LOCK_KEY + 1


class Leadership:
    """Which of several `watch` processes on one database reconciles: the one holding a lock for
    as long as it lives. On PostgreSQL a session-level advisory lock on a connection of its own
    (the server frees it the moment the leader's connection drops, so a SIGKILLed leader is replaced
    at the standbys' next try); on SQLite an flock beside the database file (freed by the kernel when
    the process dies). Standbys call ``try_acquire`` on a short interval; a leader checks ``holds``
    before each reconcile, so one that lost its connection stops reconciling."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Any = None
        self._fd: int | None = None
        self.info = {"holder": holder_identity(), "pid": os.getpid(), "command": "watch"}

    @property
    def is_sqlite(self) -> bool:
        return self.engine.url.get_backend_name() == "sqlite"

    def try_acquire(self) -> bool | None:
        """Become the leader if nobody is; never waits. None: the database cannot be reached, so
        nobody can tell (nor apply anything); the caller goes on and tries again later."""
        if self.is_sqlite:
            return self._try_file()
        try:
            if self._conn is None:
                conn = self.engine.connect()
                self._conn = conn
                conn.execute(text("SELECT set_config('application_name', :label, false)"), {"label": self.label})
                # the server notices a leader cut off by the network in seconds, not hours, and frees its lock
                for setting, value in (("tcp_keepalives_idle", "5"), ("tcp_keepalives_interval", "2"), ("tcp_keepalives_count", "3")):
                    conn.execute(text("SELECT set_config(:s, :v, false)"), {"s": setting, "v": value})
                conn.commit()
            got = self._try_pg_lock()
            if not got and self._end_own_stale_session():
                got = self._try_pg_lock()
        except Exception:  # noqa: BLE001 - the server is unreachable or went away
            self._drop_connection()
            return None
        if not got:
            self._drop_connection()  # a standby holds no connection between tries
        return got

    @property
    def label(self) -> str:
        return f"reconciler watch {self.info['holder']} pid={self.info['pid']}"[:63]

    def _try_pg_lock(self) -> bool:
        got = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_LEADER_KEY}).scalar())
        self._conn.commit()
        return got

    def _end_own_stale_session(self) -> bool:
        """This process's own earlier lock session, which the server still keeps (its connection was
        cut on the way, e.g. by a proxy that stayed up): end it, so the lock is free again."""
        stale = self._conn.execute(
            text(
                "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objid = :k AND a.application_name = :label AND a.pid <> pg_backend_pid()"
            ),
            {"k": _PG_LEADER_KEY, "label": self.label},
        ).scalar()
        if stale is None:
            return False
        ended = bool(self._conn.execute(text("SELECT pg_terminate_backend(:p, 5000)"), {"p": stale}).scalar())
        self._conn.commit()
        return ended

    def _try_file(self) -> bool:
        path = sqlite_path(self.engine.url)
        if path is None:  # an in-memory database has one process
            return True
        fd = os.open(path.with_name(path.name + ".watch-leader"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.info).encode(), 0)
        self._fd = fd
        return True

    def holds(self) -> bool:
        """Still the leader (the lock's connection is alive)."""
        if self.is_sqlite:
            return self._fd is not None or sqlite_path(self.engine.url) is None
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1")).scalar()
            self._conn.commit()
            return True
        except Exception:  # noqa: BLE001 - connection lost: the server has freed the lock
            self._drop_connection()
            return False

    def holder(self) -> str:
        """Who leads now, as far as the database can tell."""
        try:
            if self.is_sqlite:
                path = sqlite_path(self.engine.url)
                return _describe(json.loads((path.with_name(path.name + ".watch-leader")).read_bytes() or b"{}")) if path else "unknown"
            with self.engine.connect() as conn:
                row = conn.execute(
                    text(
                        "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted AND l.objid = :k"
                    ),
                    {"k": _PG_LEADER_KEY},
                ).first()
            return f"{row.application_name} (server pid {row.pid})" if row else "unknown"
        except Exception:  # noqa: BLE001 - only used in a message
            return "unknown"

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LEADER_KEY})
                self._conn.commit()
            self._drop_connection()
