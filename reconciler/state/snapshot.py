"""Read the database into plain, comparable snapshots ("essences"): no ids, no timestamps, and
references by name, the same shape as the desired state built from manifests."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, String, inspect, select, type_coerce

from reconciler.state.jsoncodec import canonical_bytes
from reconciler.state.tables import (
    agent_configs,
    agent_task_assignments,
    analysis_runs,
    llm_providers,
    reconciler_resources,
    task_configs,
)

ResourceKey = tuple[str, str]

# Fields that have no column in the seed's tables; they live only in the bookkeeping's applied essence.
EXTRA_FIELDS: dict[str, tuple[str, ...]] = {"Provider": ("model_path",), "Agent": ("prices", "examples")}
SENSITIVE_FIELDS: dict[str, tuple[str, ...]] = {"Provider": ("api_key",)}


@dataclass(frozen=True)
class ActualResource:
    kind: str
    name: str
    row_id: str
    essence: dict[str, Any]
    managed: bool
    applied: dict[str, Any] | None = None  # what reconciler last applied (managed rows only)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    apply_id: int | None = None
    secret_digest: str | None = None  # digest of the ciphertext in the database now
    # the ciphertext itself, so a plan can check it decrypts under the configured key; never rendered
    secret_ciphertext: bytes | None = field(default=None, repr=False, compare=False)
    row_name: str | None = None  # the row's own name when someone renamed a managed row outside reconciler


@dataclass(frozen=True)
class StateSnapshot:
    resources: dict[ResourceKey, ActualResource]
    fingerprint: str
    # managed resources whose row was deleted outside reconciler: key -> apply that last wrote it
    vanished: dict[ResourceKey, int | None] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> StateSnapshot:
        return cls({}, fingerprint_of({}))


def ciphertext_digest(token: bytes | None) -> str | None:
    return None if token is None else "sha256:" + hashlib.sha256(token).hexdigest()


def fingerprint_of(resources: dict[ResourceKey, ActualResource]) -> str:
    """A hash of everything a plan depends on, to refuse applying a plan to a changed database."""
    h = hashlib.sha256()
    for key in sorted(resources):
        r = resources[key]
        state = [key, r.row_id, r.managed, r.essence, r.applied, r.labels, r.annotations]
        h.update(canonical_bytes(state if r.row_name is None else [*state, r.row_name]))
    return h.hexdigest()


def load_snapshot(engine: Engine | None) -> StateSnapshot:
    if engine is None:
        return StateSnapshot.empty()
    with engine.connect() as conn:
        return read_snapshot(conn)


def _existing_tables(conn: Connection) -> set[str] | None:
    """None when reconciler's schema is in place; else the tables that exist (a seed database)."""
    if inspect(conn).has_table(reconciler_resources.name):
        return None
    return set(inspect(conn).get_table_names())


def _raw_id(column: Any) -> Any:
    """Select a UUID column as the driver returns it: SQLAlchemy's conversion to ``uuid.UUID``
    and back to text cost a fifth of reading 10,000 rows. See ``_id_text``."""
    return type_coerce(column, String).label(column.name)


def _id_text(raw: Any) -> str:
    """The canonical text of a UUID as ``_raw_id`` reads it: 32 hex digits (SQLite), a
    ``uuid.UUID`` (PostgreSQL), or already dashed text (a seed database's own choice)."""
    if raw.__class__ is str:
        if len(raw) == 32:
            return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}".lower()
        return str(uuid.UUID(raw))
    return str(raw)


def read_snapshot(conn: Connection) -> StateSnapshot:
    tables = _existing_tables(conn)

    def rows_of(query: Any) -> list[Any]:
        """All rows at once (one fetch, not one call per row); none from a table the database lacks."""
        present = tables is None or query.get_final_froms()[0].name in tables
        return list(conn.execute(query).all()) if present else []

    managed: dict[tuple[str, str], Any] = {}
    by_row: dict[tuple[str, str], Any] = {}
    book_query = select(*(_raw_id(c) if c.name == "row_id" else c for c in reconciler_resources.columns))
    for m in conn.execute(book_query).all() if tables is None else []:
        managed[(m.kind, m.name)] = m
        by_row[(m.kind, _id_text(m.row_id))] = m

    resources: dict[ResourceKey, ActualResource] = {}

    def add(
        kind: str, name: str, row_id: str, essence: dict[str, Any], secret_digest: str | None = None, ciphertext: bytes | None = None
    ) -> str:
        """Record one row under the name reconciler manages it by; returns that name."""
        book = by_row.get((kind, row_id))
        row_name = None
        if book is not None:
            if kind != "Assignment" and name != book.name:
                row_name = name  # renamed outside reconciler
            name = book.name
            applied = book.applied or {}
            for extra in EXTRA_FIELDS.get(kind, ()):
                essence[extra] = applied.get(extra)
            for sensitive in SENSITIVE_FIELDS.get(kind, ()):
                if essence.get(sensitive) is not None:
                    # unchanged since we wrote it: the applied reference and HMAC still describe it
                    if secret_digest == book.secret_digest:
                        essence[sensitive] = applied.get(sensitive)
        elif kind in EXTRA_FIELDS:
            for extra in EXTRA_FIELDS[kind]:
                essence[extra] = None
        resources[(kind, name)] = ActualResource(
            kind=kind,
            name=name,
            row_id=row_id,
            essence=essence,
            managed=book is not None,
            applied=book.applied if book is not None else None,
            labels=(book.labels or {}) if book is not None else {},
            annotations=(book.annotations or {}) if book is not None else {},
            apply_id=book.apply_id if book is not None else None,
            secret_digest=secret_digest,
            secret_ciphertext=ciphertext,
            row_name=row_name,
        )
        return name

    p = llm_providers.c
    provider_names: dict[Any, str] = {}
    for row in rows_of(select(_raw_id(p.id), p.name, p.type, p.base_url, p.api_key_encrypted, p.is_active)):
        digest = ciphertext_digest(row.api_key_encrypted)
        provider_names[row.id] = add(
            "Provider",
            row.name,
            _id_text(row.id),
            {
                "type": row.type,
                "base_url": row.base_url,
                "is_active": bool(row.is_active),
                "api_key": None if digest is None else {"hmac": None, "digest": digest},
            },
            digest,
            row.api_key_encrypted,
        )
    t = task_configs.c
    task_names: dict[Any, str] = {}
    for row in rows_of(select(_raw_id(t.id), t.name, t.description, t.response_schema, t.is_active)):
        task_names[row.id] = add("Task", row.name, _id_text(row.id), {"description": row.description, "response_schema": row.response_schema, "is_active": bool(row.is_active)})
    a = agent_configs.c
    agent_names: dict[Any, str] = {}
    agent_query = select(_raw_id(a.id), a.name, a.description, _raw_id(a.provider_id), a.model_name, a.system_prompt, a.temperature, a.max_tokens, a.is_active)
    for row in rows_of(agent_query):
        agent_names[row.id] = add(
            "Agent",
            row.name,
            _id_text(row.id),
            {
                "description": row.description,
                "provider": provider_names.get(row.provider_id),
                "model_name": row.model_name,
                "system_prompt": row.system_prompt,
                "temperature": row.temperature,
                "max_tokens": row.max_tokens,
                "is_active": bool(row.is_active),
            },
        )
    s = agent_task_assignments.c
    for row in rows_of(select(_raw_id(s.id), _raw_id(s.agent_id), _raw_id(s.task_id), s.is_active)):
        agent, task = agent_names.get(row.agent_id), task_names.get(row.task_id)
        add("Assignment", f"{agent}+{task}", _id_text(row.id), {"agent": agent, "task": task, "is_active": bool(row.is_active)})
    if tables is None:  # a seed database has analysis_runs without our columns: runs are not managed there
        _read_runs(conn, resources, managed)
    seen = {(r.kind, r.row_id) for r in resources.values() if r.managed}
    vanished = {key: m.apply_id for key, m in managed.items() if (m.kind, _id_text(m.row_id)) not in seen}
    return StateSnapshot(resources, fingerprint_of(resources), vanished)


def _read_runs(conn: Connection, resources: dict[ResourceKey, ActualResource], managed: dict[tuple[str, str], Any]) -> None:
    """Named runs. A run's essence is what was applied, plus whether it started (then it is immutable)."""
    r = analysis_runs.c
    for row in conn.execute(select(_raw_id(r.id), r.name, r.status).where(r.name.is_not(None))):
        book = managed.get(("Run", row.name))
        if book is not None and _id_text(book.row_id) != _id_text(row.id):
            book = None
        essence = dict(book.applied or {}) if book is not None else {}
        essence["started"] = row.status != "pending"  # not the status itself: progress must not stale saved plans
        resources[("Run", row.name)] = ActualResource(
            kind="Run",
            name=row.name,
            row_id=_id_text(row.id),
            essence=essence,
            managed=book is not None,
            applied=book.applied if book is not None else None,
            labels=(book.labels or {}) if book is not None else {},
            annotations=(book.annotations or {}) if book is not None else {},
            apply_id=book.apply_id if book is not None else None,
        )
