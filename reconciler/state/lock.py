"""One apply at a time per database: a kernel file lock for SQLite, an advisory lock for PostgreSQL.

Both are released by the operating system or the server when the holder dies, so a killed apply
never leaves a stale lock, and both let a waiter say who holds the lock when it gives up.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone

from sqlalchemy import Engine, text

from reconciler.errors import LockTimeout
from reconciler.state.db import sqlite_path

DEFAULT_LOCK_TIMEOUT = float(os.environ.get("RECONCILER_LOCK_TIMEOUT", "60"))
_PG_LOCK_KEY = 0x5265636F  # "Reco"
_POLL_SECONDS = 0.05


def holder_identity() -> str:
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
def apply_lock(engine: Engine, timeout: float = DEFAULT_LOCK_TIMEOUT, command: str = "apply") -> Iterator[None]:
    """Hold the database's apply lock for the duration of the block."""
    info = {
        "holder": holder_identity(),
        "pid": os.getpid(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }
    if engine.url.get_backend_name() == "sqlite":
        path = sqlite_path(engine.url)
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
