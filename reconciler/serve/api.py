"""The read-only JSON API under ``/api/v1``: one table of endpoints drives the routes, the query
parsing and the OpenAPI document, so the three cannot disagree.

Lists are JSON arrays, as the seed's service returns them, paginated with the seed's ``skip`` and
``limit``; the ``X-Total-Count`` header gives the number of matching rows. A single resource is
addressed by name or by id. Nothing here writes: changes come through git, and every other method
gets 405.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Engine, func, select

from reconciler import __version__
from reconciler.serve import experiments, queries
from reconciler.serve.wire import ApiError, Param, ParamType

API = "/api/v1"
MAX_PAGE = 1000


@dataclass(frozen=True)
class Context:
    engine: Engine | None
    path: dict[str, str]
    query: dict[str, Any]

    def page(self) -> queries.Page:
        return queries.Page(self.query.get("skip") or 0, self.query.get("limit") or 100)

    def active(self) -> bool | None:
        if self.query.get("active") is not None:
            return bool(self.query["active"])
        return True if self.query.get("active_only") else None


@dataclass(frozen=True)
class Reply:
    body: Any
    total: int | None = None


Handler = Callable[[Context], Reply]


@dataclass(frozen=True)
class Endpoint:
    path: str  # under /api/v1, with {name} placeholders
    name: str  # operationId
    summary: str
    tag: str
    handler: Handler | None  # None: served by the app itself (events, openapi)
    params: tuple[Param, ...] = ()
    path_params: dict[str, str] = field(default_factory=dict)  # name -> description
    returns: str = "object"  # "array" for lists
    media_type: str = "application/json"

    @property
    def url(self) -> str:
        return API + self.path


SKIP = Param("skip", ParamType.INT, "Rows to skip (the seed's pagination).", 0, 0)
LIMIT = Param("limit", ParamType.INT, f"Rows to return, 1 to {MAX_PAGE}.", 100, 1, MAX_PAGE)
ACTIVE = Param("active", ParamType.BOOL, "Only active (true) or only inactive (false) ones.")
ACTIVE_ONLY = Param("active_only", ParamType.BOOL, "The seed's filter: true means active=true.", False)
PAGED = (SKIP, LIMIT)
LISTED = (*PAGED, ACTIVE, ACTIVE_ONLY)
RUN_STATUSES = ("pending", "running", "completed", "partial", "failed", "interrupted")


def _key(ctx: Context, kind: str) -> str:
    key = ctx.path["name"]
    if not queries.usable_key(key):
        raise ApiError(404, f"no {kind} named {key[:80]!r}")
    return key


def _missing(kind: str, plural: str, key: str, engine: Engine | None) -> ApiError:
    hint = "there is no state database yet: apply manifests first" if engine is None else f"list them at {API}/{plural}"
    return ApiError(404, f"no {kind} named {key[:80]!r}", hint)


def _one(kind: str, plural: str, getter: Callable[[Engine, str], dict[str, Any] | None]) -> Handler:
    def handler(ctx: Context) -> Reply:
        key = _key(ctx, kind)
        row = getter(ctx.engine, key) if ctx.engine is not None else None
        if row is None:
            raise _missing(kind, plural, key, ctx.engine)
        return Reply(row)

    return handler


def _listing(listing: queries.Listing) -> Reply:
    return Reply(listing.rows, listing.total)


def _empty() -> Reply:
    return Reply([], 0)


def providers(ctx: Context) -> Reply:
    return _listing(queries.list_providers(ctx.engine, ctx.page(), ctx.active())) if ctx.engine else _empty()


def agents(ctx: Context) -> Reply:
    provider = ctx.query.get("provider")
    if ctx.engine is None:
        return _empty()
    return _listing(queries.list_agents(ctx.engine, ctx.page(), ctx.active(), provider))


def tasks(ctx: Context) -> Reply:
    return _listing(queries.list_tasks(ctx.engine, ctx.page(), ctx.active())) if ctx.engine else _empty()


def assignments(ctx: Context) -> Reply:
    if ctx.engine is None:
        return _empty()
    return _listing(queries.list_assignments(ctx.engine, ctx.page(), ctx.active(), ctx.query.get("agent"), ctx.query.get("task")))


def agent_tasks(ctx: Context) -> Reply:
    """The agent's assignments, each with its task (the seed's ``GET /agents/{id}/tasks``)."""
    return _assignments_of(ctx, "agent", "agents", queries.get_agent)


def task_agents(ctx: Context) -> Reply:
    """The task's assignments, each with its agent and provider (the seed's ``GET /tasks/{id}/agents``)."""
    return _assignments_of(ctx, "task", "tasks", queries.get_task)


def _assignments_of(ctx: Context, kind: Literal["agent", "task"], plural: str, get: Callable[[Engine, str], dict[str, Any] | None]) -> Reply:
    """The assignments of the agent or task the path names (404 when there is none)."""
    key = _key(ctx, kind)
    found = get(ctx.engine, key) if ctx.engine else None
    if found is None:
        raise _missing(kind, plural, key, ctx.engine)
    assert ctx.engine is not None
    return _listing(queries.list_assignments(ctx.engine, ctx.page(), ctx.active(), **{kind: found["id"]}))


def runs(ctx: Context) -> Reply:
    return _listing(queries.list_runs(ctx.engine, ctx.page(), ctx.query.get("status"))) if ctx.engine else _empty()


def _run(ctx: Context) -> tuple[Engine, Any, str]:
    key = _key(ctx, "run")
    found = queries.get_run_id(ctx.engine, key) if ctx.engine else None
    if found is None:
        raise _missing("run", "runs", key, ctx.engine)
    assert ctx.engine is not None
    return ctx.engine, found[0], found[1]


def run(ctx: Context) -> Reply:
    from reconciler.runs.views import run_detail

    engine, run_id, name = _run(ctx)
    detail = run_detail(engine, name)
    return Reply({**detail, "id": str(run_id)})


def run_results(ctx: Context) -> Reply:
    engine, run_id, _ = _run(ctx)
    return _listing(queries.list_results(engine, run_id, ctx.page(), ctx.query.get("valid")))


def history(ctx: Context) -> Reply:
    return _listing(queries.list_history(ctx.engine, ctx.page())) if ctx.engine else _empty()


def history_entry(ctx: Context) -> Reply:
    raw = ctx.path["name"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ApiError(404, f"no history entry {raw[:80]!r}", "history entries are numbered: 1, 2, ...")
    row = queries.get_history(ctx.engine, int(raw)) if ctx.engine else None
    if row is None:
        raise ApiError(404, f"no history entry #{raw}", f"list them at {API}/history")
    return Reply(row)


def drift(ctx: Context) -> Reply:
    from reconciler.gitops.drift import detect_drift
    from reconciler.state.snapshot import load_snapshot

    found = [d.to_dict() for d in detect_drift(load_snapshot(ctx.engine))]
    return Reply({"count": len(found), "drift": found})


def experiment_list(ctx: Context) -> Reply:
    backend = experiments.backend()
    if backend is None:
        raise experiments.unavailable()
    return Reply(backend.list(ctx.engine) if ctx.engine else [])


def experiment_report(ctx: Context) -> Reply:
    backend = experiments.backend()
    if backend is None:
        raise experiments.unavailable()
    key = _key(ctx, "experiment")
    report = backend.report(ctx.engine, key) if ctx.engine else None
    if report is None:
        raise _missing("experiment", "experiments", key, ctx.engine)
    return Reply(report)


def status(ctx: Context) -> Reply:
    """What the dashboard's header shows: the database, the resource counts, the last apply."""
    from reconciler.state.tables import KIND_TABLES

    body: dict[str, Any] = {"version": __version__, "database": None, "resources": {}, "last_apply": None}
    if ctx.engine is None:
        return Reply(body)
    body["database"] = ctx.engine.url.get_backend_name()
    with ctx.engine.connect() as conn:
        book = queries.has_bookkeeping(conn)
        for kind, table in KIND_TABLES.items():
            if kind == "Run" and not book:
                continue
            query = select(func.count()).select_from(table)
            if kind == "Run":
                query = query.where(table.c.name.is_not(None))
            body["resources"][kind.lower() + "s"] = conn.execute(query).scalar_one()
    last = queries.list_history(ctx.engine, queries.Page(0, 1)).rows
    body["last_apply"] = last[0] if last else None
    body["experiments"] = experiments.backend() is not None
    return Reply(body)


def index(ctx: Context) -> Reply:
    return Reply({"version": __version__, "endpoints": [e.url for e in ENDPOINTS], "openapi": f"{API}/openapi.json"})


NAME = {"name": "Name or id."}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("", "index", "The endpoints of this API.", "meta", index),
    Endpoint("/status", "status", "Database, resource counts and the last apply.", "meta", status),
    Endpoint("/providers", "list_providers", "Providers with their validation status.", "providers", providers, LISTED, returns="array"),
    Endpoint(
        "/providers/{name}", "get_provider", "One provider.", "providers", _one("provider", "providers", queries.get_provider), path_params=NAME
    ),
    Endpoint(
        "/agents",
        "list_agents",
        "Agents.",
        "agents",
        agents,
        (*LISTED, Param("provider", ParamType.STR, "Only the agents of this provider (name or id).")),
        returns="array",
    ),
    Endpoint("/agents/{name}", "get_agent", "One agent.", "agents", _one("agent", "agents", queries.get_agent), path_params=NAME),
    Endpoint("/agents/{name}/tasks", "list_agent_tasks", agent_tasks.__doc__ or "", "agents", agent_tasks, LISTED, NAME, "array"),
    Endpoint("/tasks", "list_tasks", "Tasks with their response schemas.", "tasks", tasks, LISTED, returns="array"),
    Endpoint("/tasks/{name}", "get_task", "One task.", "tasks", _one("task", "tasks", queries.get_task), path_params=NAME),
    Endpoint("/tasks/{name}/agents", "list_task_agents", task_agents.__doc__ or "", "tasks", task_agents, LISTED, NAME, "array"),
    Endpoint(
        "/assignments",
        "list_assignments",
        "Assignments with agent, task, provider name and type (the seed's list_with_details).",
        "assignments",
        assignments,
        (*LISTED, Param("agent", ParamType.STR, "Only this agent's (name or id)."), Param("task", ParamType.STR, "Only this task's (name or id).")),
        returns="array",
    ),
    Endpoint(
        "/assignments/{name}",
        "get_assignment",
        "One assignment (its name, AGENT+TASK, or id).",
        "assignments",
        _one("assignment", "assignments", queries.get_assignment),
        path_params=NAME,
    ),
    Endpoint(
        "/runs",
        "list_runs",
        "Runs with status, counts, tokens, cost and accuracy, newest first.",
        "runs",
        runs,
        (*PAGED, Param("status", ParamType.STR, "Only runs with this stored status.", choices=RUN_STATUSES)),
        returns="array",
    ),
    Endpoint("/runs/{name}", "get_run", "One run with its configuration snapshot and SHA-256.", "runs", run, path_params=NAME),
    Endpoint(
        "/runs/{name}/results",
        "list_run_results",
        "A run's results in item order.",
        "runs",
        run_results,
        (*PAGED, Param("valid", ParamType.BOOL, "Only valid (true) or only failed (false) items.")),
        NAME,
        "array",
    ),
    Endpoint("/experiments", "list_experiments", "Experiments with their status.", "experiments", experiment_list, returns="array"),
    Endpoint(
        "/experiments/{name}",
        "get_experiment",
        "One experiment's report (the comparison of its variants).",
        "experiments",
        experiment_report,
        path_params=NAME,
    ),
    Endpoint(
        "/history", "list_history", "Every operation that wrote the state, newest first (without plans).", "history", history, PAGED, returns="array"
    ),
    Endpoint(
        "/history/{name}", "get_history", "One operation with what it changed.", "history", history_entry, path_params={"name": "The entry's number."}
    ),
    Endpoint("/drift", "get_drift", "What changed in the database outside reconciler since it was applied.", "drift", drift),
    Endpoint(
        "/events",
        "events",
        "Server-Sent Events: validation_update, apply, drift, run, experiment, database.",
        "events",
        None,
        media_type="text/event-stream",
    ),
    Endpoint("/openapi.json", "openapi", "This document.", "meta", None),
)
