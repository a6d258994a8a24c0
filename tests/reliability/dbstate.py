"""Whole-database comparisons for the crash and concurrency scenarios.

``dump_state`` reads every table reconciler owns and reduces it to content that does not depend on
the path taken to reach it: row ids become resource names and timestamps and apply ids are
dropped. Two databases hold the same configuration exactly when their dumps are equal; history is
compared on its own (``history_rows``)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, select, text
from sqlalchemy.engine import Engine

from reconciler.state.db import database_url, make_engine, sqlite_path
from reconciler.state.tables import (
    agent_configs,
    agent_task_assignments,
    llm_providers,
    metadata,
    reconciler_applies,
    reconciler_resources,
    task_configs,
)

# which apply last touched a row depends on the path taken; a provider's validation result is an
# observation of the provider made after the apply's transaction, not configuration
_SKIPPED_COLUMNS = {"apply_id", "validation_status", "validation_error"}


def stored_bytes(url: str) -> bytes:
    """Everything the database stores, for leak scans: the SQLite file (with its journal or WAL)
    as bytes, or every PostgreSQL row of every table as text."""
    parsed = database_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))
    engine = make_engine(parsed)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(str(v) for name in meta.tables for v in conn.execute(text(f'SELECT t::text FROM "{name}" t')).scalars()).encode()
    finally:
        engine.dispose()


def engine_for(url: str) -> Engine:
    return make_engine(database_url(url))


def _names_by_id(conn: Any) -> dict[Any, str]:
    names: dict[Any, str] = {}
    for t, kind in ((llm_providers, "Provider"), (agent_configs, "Agent"), (task_configs, "Task")):
        for row in conn.execute(select(t.c.id, t.c.name)):
            names[row.id] = f"{kind}:{row.name}"
    a = agent_task_assignments
    for row in conn.execute(select(a.c.id, a.c.agent_id, a.c.task_id)):
        names[row.id] = f"Assignment:{names.get(row.agent_id)}+{names.get(row.task_id)}"
    return names


def _canonical(value: Any, names: dict[Any, str]) -> Any:
    if isinstance(value, uuid.UUID):
        return names.get(value, "unknown-id")
    if isinstance(value, (bytes, memoryview)):
        return bytes(value)
    return value


def dump_state(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every configuration table, as sorted rows of path-independent values."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            names = _names_by_id(conn)
            out: dict[str, list[tuple[Any, ...]]] = {}
            for table in metadata.sorted_tables:
                if table.name == reconciler_applies.name:
                    continue
                columns = [c for c in table.columns if not isinstance(c.type, DateTime) and c.name not in _SKIPPED_COLUMNS]
                rows = [
                    tuple((c.name, _canonical(row[i], names)) for i, c in enumerate(columns))
                    for row in conn.execute(select(*columns))
                ]
                out[table.name] = sorted(rows, key=repr)
            return out
    finally:
        engine.dispose()


def history_rows(url: str) -> list[tuple[int, str, int, int, int]]:
    """(id, source, created, updated, deleted) of every recorded apply, oldest first."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            t = reconciler_applies
            rows = conn.execute(select(t.c.id, t.c.source, t.c.created, t.c.updated, t.c.deleted).order_by(t.c.id))
            return [tuple(r) for r in rows]  # type: ignore[misc]
    finally:
        engine.dispose()


def dangling_apply_ids(url: str) -> int:
    """Bookkeeping rows that name an apply the history does not have (a phantom)."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            m, h = reconciler_resources, reconciler_applies
            known = {r.id for r in conn.execute(select(h.c.id))}
            return sum(1 for r in conn.execute(select(m.c.apply_id)) if r.apply_id is not None and r.apply_id not in known)
    finally:
        engine.dispose()


class WriteWatch:
    """Tells whether an apply's write transaction is open right now, cheaply enough to poll:
    SQLite's rollback journal exists only then; PostgreSQL shows a backend with a transaction id."""

    def __init__(self, url: str) -> None:
        self.journal: Path | None = None
        self.conn: Any = None
        if url.startswith("sqlite"):
            self.journal = Path(url.removeprefix("sqlite:///") + "-journal")
        else:
            import psycopg

            u = database_url(url)
            self.conn = psycopg.connect(
                host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database, autocommit=True
            )

    def writing(self) -> bool:
        if self.journal is not None:
            try:
                return self.journal.stat().st_size > 0
            except FileNotFoundError:
                return False
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
        ).fetchone()
        return bool(row[0])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
