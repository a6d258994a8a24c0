"""The API's listings: one page at a time, filtered in SQL.

``state.queries.list_resources`` reads a whole table for ``reconciler get``; a server answering
a dashboard and scripts at 10,000 resources must not, so these select one page (LIMIT/OFFSET,
with the bookkeeping joined instead of loaded). Every row has exactly the shape ``reconciler get
-o json`` prints for it (a test compares the two), so the CLI and the API never disagree.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, inspect, null, select
from sqlalchemy.sql import Select

from reconciler.kinds.assignment import assignment_details
from reconciler.runs import metrics, store
from reconciler.state.tables import (
    agent_configs,
    agent_task_assignments,
    analysis_runs,
    llm_providers,
    reconciler_applies,
    reconciler_resources,
    run_results,
    task_configs,
)

MAX_NAME_LENGTH = 255  # the name columns' width: a longer key names nothing


@dataclass(frozen=True)
class Page:
    skip: int = 0
    limit: int = 100


@dataclass(frozen=True)
class Listing:
    rows: list[dict[str, Any]]
    total: int


def _iso(v: Any) -> Any:
    return v.isoformat(timespec="seconds") if hasattr(v, "isoformat") else v


def _values(r: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: _iso(getattr(r, f)) for f in fields}


def _row(r: Any, fields: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """A configuration row as ``reconciler get -o json`` prints it: ``fields`` (timestamps as ISO
    text), then ``extra``, whether reconciler manages it and its id."""
    return {**_values(r, fields), **extra, "managed": r.managed_name is not None, "id": str(r.id)}


def as_uuid(key: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(key)
    except ValueError:
        return None


def usable_key(key: str) -> bool:
    """Could ``key`` name a row at all? (PostgreSQL rejects a NUL in a parameter with an error.)"""
    return 0 < len(key) <= MAX_NAME_LENGTH and "\x00" not in key


def has_bookkeeping(conn: Connection) -> bool:
    """False for a database the seed's service made and reconciler never applied to."""
    return bool(inspect(conn).has_table(reconciler_resources.name))


def _managed_join(query: Select[Any], kind: str, id_column: Any, book: bool) -> Select[Any]:
    m = reconciler_resources
    if not book:
        return query.add_columns(null().label("managed_name"))
    return query.add_columns(m.c.name.label("managed_name")).outerjoin(m, and_(m.c.kind == kind, m.c.row_id == id_column))


def _page(conn: Connection, query: Select[Any], page: Page, order: list[Any]) -> tuple[list[Any], int]:
    total = conn.execute(select(func.count()).select_from(query.order_by(None).subquery())).scalar_one()
    rows = conn.execute(query.order_by(*order).offset(page.skip).limit(page.limit)).all()
    return list(rows), int(total)


QueryOf = Callable[[bool], Select[Any]]  # whether the bookkeeping is there -> the kind's select
RowOf = Callable[[Any], dict[str, Any]]  # a row of that select -> what the API answers


def _listing(engine: Engine, query_of: QueryOf, row_of: RowOf, page: Page, order: list[Any], conditions: list[Any]) -> Listing:
    """One page of a configuration kind's rows that meet every condition."""
    with engine.connect() as conn:
        rows, total = _page(conn, query_of(has_bookkeeping(conn)).where(*conditions), page, order)
    return Listing([row_of(r) for r in rows], total)


def _one(engine: Engine, query_of: QueryOf, row_of: RowOf, condition: Any) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(query_of(has_bookkeeping(conn)).where(condition)).first()
    return None if row is None else row_of(row)


def _by_key(columns: Any, key: str) -> Any:
    ident = as_uuid(key)
    return columns.name == key if ident is None else (columns.id == ident) | (columns.name == key)


def _active(columns: Any, active: bool | None) -> list[Any]:
    """The filter ``?active=`` asks for: none, or rows whose ``is_active`` is that."""
    return [] if active is None else [columns.is_active.is_(active)]


def _keyed(columns: Any, key: str | None) -> list[Any]:
    """The filter naming one row of a referenced kind (by id or name): none, or that row."""
    return [] if key is None else [_by_key(columns, key)]


# -- providers ---------------------------------------------------------------------------------


_PROVIDER_FIELDS = ("name", "type", "base_url")
_PROVIDER_STATUS = ("is_active", "validation_status", "validation_error", "validated_at")


def _provider_row(r: Any) -> dict[str, Any]:
    return _row(r, _PROVIDER_FIELDS, api_key="(set, encrypted)" if r.has_key else None, **_values(r, _PROVIDER_STATUS))


def _provider_query(book: bool) -> Select[Any]:
    p = llm_providers.c
    query = select(p.id, *(p[f] for f in _PROVIDER_FIELDS + _PROVIDER_STATUS), p.api_key_encrypted.is_not(None).label("has_key"))
    return _managed_join(query, "Provider", p.id, book)


def list_providers(engine: Engine, page: Page, active: bool | None = None) -> Listing:
    p = llm_providers.c
    return _listing(engine, _provider_query, _provider_row, page, [p.name], _active(p, active))


def get_provider(engine: Engine, key: str) -> dict[str, Any] | None:
    return _one(engine, _provider_query, _provider_row, _by_key(llm_providers.c, key))


# -- agents ------------------------------------------------------------------------------------


_AGENT_FIELDS = ("name", "provider", "model_name", "temperature", "max_tokens", "is_active", "description", "system_prompt")


def _agent_row(r: Any) -> dict[str, Any]:
    return _row(r, _AGENT_FIELDS)


def _agent_query(book: bool) -> Select[Any]:
    a, p = agent_configs.c, llm_providers.c
    own = (a[f] for f in _AGENT_FIELDS if f != "provider")
    query = select(a.id, p.name.label("provider"), *own).join_from(agent_configs, llm_providers, p.id == a.provider_id)
    return _managed_join(query, "Agent", a.id, book)


def list_agents(engine: Engine, page: Page, active: bool | None = None, provider: str | None = None) -> Listing:
    a, p = agent_configs.c, llm_providers.c
    return _listing(engine, _agent_query, _agent_row, page, [a.name], _active(a, active) + _keyed(p, provider))


def get_agent(engine: Engine, key: str) -> dict[str, Any] | None:
    return _one(engine, _agent_query, _agent_row, _by_key(agent_configs.c, key))


# -- tasks -------------------------------------------------------------------------------------


_TASK_FIELDS = ("name", "description", "is_active", "response_schema")


def _task_row(r: Any) -> dict[str, Any]:
    return _row(r, _TASK_FIELDS)


def _task_query(book: bool) -> Select[Any]:
    t = task_configs.c
    return _managed_join(select(t.id, *(t[f] for f in _TASK_FIELDS)), "Task", t.id, book)


def list_tasks(engine: Engine, page: Page, active: bool | None = None) -> Listing:
    t = task_configs.c
    return _listing(engine, _task_query, _task_row, page, [t.name], _active(t, active))


def get_task(engine: Engine, key: str) -> dict[str, Any] | None:
    return _one(engine, _task_query, _task_row, _by_key(task_configs.c, key))


# -- assignments (the seed's list_with_details) --------------------------------------------------


def _assignment_row(r: Any) -> dict[str, Any]:
    fields = ("agent_name", "task_name", "provider_name", "provider_type", "is_active", "assigned_at")
    return {"name": r.managed_name or f"{r.agent_name}+{r.task_name}", **_row(r, fields)}


def _assignment_query(book: bool) -> Select[Any]:
    return _managed_join(assignment_details(), "Assignment", agent_task_assignments.c.id, book)


def list_assignments(engine: Engine, page: Page, active: bool | None = None, agent: str | None = None, task: str | None = None) -> Listing:
    s, a, t = agent_task_assignments.c, agent_configs.c, task_configs.c
    conditions = _active(s, active) + _keyed(a, agent) + _keyed(t, task)
    return _listing(engine, _assignment_query, _assignment_row, page, [a.name, t.name], conditions)


def get_assignment(engine: Engine, key: str) -> dict[str, Any] | None:
    """By id, by the name reconciler manages it under, or as ``AGENT+TASK``."""
    s, a, t, m = agent_task_assignments.c, agent_configs.c, task_configs.c, reconciler_resources.c
    with engine.connect() as conn:
        book = has_bookkeeping(conn)
        ident = as_uuid(key)
        condition: Any = s.id == ident if ident is not None else None
        if condition is None and book:
            condition = m.name == key
        if "+" in key:
            agent, _, task = key.partition("+")
            pair = (a.name == agent) & (t.name == task)
            condition = pair if condition is None else condition | pair
        if condition is None:
            return None
        rows = list(conn.execute(_assignment_query(book).where(condition)).all())
    # a managed name wins over another row's AGENT+TASK spelling
    rows.sort(key=lambda r: (r.managed_name != key, str(r.id) != key))
    return _assignment_row(rows[0]) if rows else None


# -- runs ----------------------------------------------------------------------------------------


# what a run has produced so far (the API's run rows and the run events both carry them)
RUN_TOTALS = ("items_succeeded", "items_failed", "accuracy", "input_tokens", "output_tokens", "cost_estimate")
_RUN_COLUMNS = (
    "id",
    "name",
    "status",
    "error",
    "items_total",
    *RUN_TOTALS,
    "elapsed_seconds",
    "config_sha256",
    "created_at",
    "started_at",
    "completed_at",
    "runner",
    "heartbeat_at",
)


def runs_readable(conn: Connection) -> bool:
    """Runs are reconciler's own (a seed database's analysis_runs has none of our columns)."""
    return has_bookkeeping(conn)


def _run_row(r: Any) -> dict[str, Any]:
    record = store.RunRecord(r.id, r.name, r.status, {}, None, r.config_sha256, r.runner, r.heartbeat_at, r.elapsed_seconds)
    status, error = r.status, r.error
    if store.owner_gone(record):
        status = "interrupted"
        error = (
            f"the process that ran it ({r.runner}) is gone; run `reconciler run {r.name}` to resume (finished items are kept, the rest are processed)"
        )
    done = (r.items_succeeded or 0) + (r.items_failed or 0)
    return {
        "name": r.name,
        "status": status,
        "error": error,
        "assignment": r.assignment,
        "items_total": r.items_total,
        "items_succeeded": r.items_succeeded,
        "items_failed": r.items_failed,
        "items_done": done,
        "accuracy": r.accuracy,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "cost_estimate": r.cost_estimate,
        "elapsed_seconds": r.elapsed_seconds,
        "config_sha256": r.config_sha256,
        "created_at": _iso(r.created_at),
        "started_at": _iso(r.started_at),
        "completed_at": _iso(r.completed_at),
        "id": str(r.id),
    }


def _run_query() -> Select[Any]:
    r, m = analysis_runs.c, reconciler_resources.c
    assignment = select(m.name).where(m.kind == "Assignment", m.row_id == r.agent_assignment_id).correlate(analysis_runs).scalar_subquery()
    return select(*(getattr(r, c) for c in _RUN_COLUMNS), assignment.label("assignment")).where(r.name.is_not(None))


def list_runs(engine: Engine, page: Page, status: str | None = None) -> Listing:
    r = analysis_runs.c
    with engine.connect() as conn:
        if not runs_readable(conn):
            return Listing([], 0)
        query = _run_query()
        if status is not None:
            query = query.where(r.status == status)
        rows, total = _page(conn, query, page, [r.created_at.desc(), r.name])
    return Listing([_run_row(row) for row in rows], total)


def get_run_id(engine: Engine, key: str) -> tuple[uuid.UUID, str] | None:
    r = analysis_runs.c
    with engine.connect() as conn:
        if not runs_readable(conn):
            return None
        row = conn.execute(select(r.id, r.name).where(r.name.is_not(None), _by_key(r, key))).first()
    return None if row is None else (row.id, row.name)


def list_results(engine: Engine, run_id: uuid.UUID, page: Page, valid: bool | None = None) -> Listing:
    """One page of a run's results, as ``reconciler runs results -o json`` prints them."""
    c, r = run_results.c, analysis_runs.c
    with engine.connect() as conn:
        spec = conn.execute(select(r.spec).where(r.id == run_id)).scalar() or {}
        query = select(run_results).where(c.run_id == run_id)
        if valid is not None:
            query = query.where(c.valid.is_(valid))
        rows, total = _page(conn, query, page, [c.item_index])
    expected, template = spec.get("expected"), spec.get("prompt_template")
    out = []
    for row in rows:
        item = row.input or {}
        if isinstance(item, dict):
            try:
                prompt: Any = metrics.render_prompt(item, template, expected)
            except (KeyError, IndexError, ValueError):
                prompt = None
        else:
            prompt = item
        out.append(
            {
                "item": row.item_index,
                "input": item,
                "prompt": prompt,
                "output": row.output,
                "valid": row.valid,
                "expected": item.get(expected) if expected and isinstance(item, dict) else None,
                "correct": (metrics.is_correct(row.output, item, expected) if row.valid else False) if expected and isinstance(item, dict) else None,
                "error": row.error,
                "attempts": row.attempts,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
                "latency_ms": row.latency_ms,
            }
        )
    return Listing(out, total)


# -- history -------------------------------------------------------------------------------------


def _history_row(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "finished_at": _iso(r.finished_at),
        "user": r.user,
        "command": r.command,
        "git_commit": r.git_commit,
        "git_dirty": r.git_dirty,
        "git_author": r.git_author,
        "git_subject": r.git_subject,
        "created": r.created,
        "updated": r.updated,
        "deleted": r.deleted,
        "source": r.source,
    }


_HISTORY_COLUMNS = (
    "id",
    "finished_at",
    "user",
    "command",
    "git_commit",
    "git_dirty",
    "git_author",
    "git_subject",
    "created",
    "updated",
    "deleted",
    "source",
)


def list_history(engine: Engine, page: Page, after: int | None = None) -> Listing:
    """Operations newest first, without their plans (an apply of 10,000 resources records megabytes)."""
    h = reconciler_applies.c
    with engine.connect() as conn:
        if not has_bookkeeping(conn):
            return Listing([], 0)
        query = select(*(getattr(h, c) for c in _HISTORY_COLUMNS))
        if after is not None:
            query = query.where(h.id > after)
        rows, total = _page(conn, query, page, [h.id.desc()])
    return Listing([_history_row(r) for r in rows], total)


def get_history(engine: Engine, ident: int) -> dict[str, Any] | None:
    """One operation with what it changed (its plan or details)."""
    h = reconciler_applies.c
    with engine.connect() as conn:
        if not has_bookkeeping(conn):
            return None
        row = conn.execute(select(*(getattr(h, c) for c in _HISTORY_COLUMNS), h.git_ref, h.started_at, h.plan).where(h.id == ident)).first()
    if row is None:
        return None
    return {**_history_row(row), "git_ref": row.git_ref, "started_at": _iso(row.started_at), "details": row.plan}
