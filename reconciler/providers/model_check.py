"""Is an agent's ``model_name`` one its provider serves? Checked against the model list the provider
gave at its last validation (stored by ``providers.status``), so nothing is asked of the provider here:
``get agents`` shows the outcome, ``run``, ``test`` and experiment arms refuse a missing model before
sending anything, and ``apply`` / ``providers check`` report it. ``validate`` never gets here (offline)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from reconciler.errors import ReconcilerError
from reconciler.kinds.base import RowSource, id_text
from reconciler.llm.provider_types import provider_type
from reconciler.state.db import SqliteFile

if TYPE_CHECKING:
    from sqlalchemy import Engine

SHOWN_MODELS = 20  # a message lists this many served models, then says how many more


class ModelStatus(StrEnum):
    SERVED = "served"
    MISSING = "missing"
    UNKNOWN = "unknown"  # no list to check against (not validated yet, validation failed, changed since)


@dataclass(frozen=True)
class ModelCheck:
    agent: str  # the row's name
    provider: str
    provider_type: str
    model_name: str
    status: ModelStatus
    served: tuple[str, ...] = ()  # the provider's list, when there is one
    agent_id: str = ""

    def message(self) -> str:
        return (
            f"agent {self.agent!r}: model {self.model_name!r} is not served by provider {self.provider!r} ({self.provider_type}); "
            f"it serves: {served_list(self.served)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """What `providers check --json` and watch events say of the check."""
        return {
            "agent": self.agent,
            "provider": self.provider,
            "model_name": self.model_name,
            "model_status": self.status.value,
            "served_models": list(self.served),
        }

    def hint(self) -> str:
        serve = f"`ollama pull {self.model_name}`" if self.provider_type == "ollama" else "make the provider serve it"
        return f"fix model_name in Agent {self.agent!r} and apply, or {serve} and run `reconciler providers check {self.provider}`"


def served_list(models: Sequence[str]) -> str:
    if not models:
        return "no models"
    shown = ", ".join(models[:SHOWN_MODELS])
    more = len(models) - SHOWN_MODELS
    return shown + (f" and {more} more (`reconciler providers models NAME` lists them)" if more > 0 else "")


def model_status(type_name: str, validation_status: str | None, listed: Sequence[str] | None, model_name: str) -> ModelStatus:
    """Pure: the status of ``model_name`` on a provider of ``type_name`` whose last validation gave
    ``listed`` (None: no list). A list counts only while the provider is still connected: an apply
    that changes the provider resets its validation, so a list of the old settings says nothing."""
    if validation_status != "connected" or listed is None:
        return ModelStatus.UNKNOWN
    try:
        kind = provider_type(type_name)
    except KeyError:
        return ModelStatus.UNKNOWN  # a type another service wrote: reconciler cannot tell
    return ModelStatus.SERVED if kind.serves(listed, model_name) else ModelStatus.MISSING


def model_checks(database: Engine | SqliteFile, agents: Sequence[str] | None = None, *, active_only: bool = False) -> dict[str, ModelCheck]:
    """agent name -> its ModelCheck, for the named agents (default: all; ``active_only``: agents and
    providers both active). ``database``: an engine, or a SQLite file read through ``sqlite3``
    (after an apply that wrote it so)."""
    if isinstance(database, SqliteFile):
        from reconciler.state.db import open_sqlite_state
        from reconciler.state.rows import SqliteRows

        sqlite_conn = open_sqlite_state(database.url, database.path)
        if sqlite_conn is None:
            return {}
        try:
            return _checks(SqliteRows(sqlite_conn), agents, active_only)
        finally:
            sqlite_conn.close()
    from reconciler.state.rows import ConnectionRows

    with database.connect() as conn:
        return _checks(ConnectionRows(conn), agents, active_only)


def _checks(source: RowSource, agents: Sequence[str] | None, active_only: bool) -> dict[str, ModelCheck]:
    has_lists = "provider_models" in source.table_names()  # not in a database reconciler never wrote
    sql = (
        'SELECT a."id", a."name", a."model_name", p."name", p."type", p."validation_status", '
        + ('m."models"' if has_lists else "NULL")
        + ', a."is_active", p."is_active" FROM "agent_configs" AS a JOIN "llm_providers" AS p ON p."id" = a."provider_id"'
        + (' LEFT OUTER JOIN "provider_models" AS m ON m."provider_id" = p."id"' if has_lists else "")
        + ' ORDER BY a."name"'
    )
    decode = source.decoder("json")
    wanted = None if agents is None else set(agents)
    out = {}
    for row_id, name, model_name, provider, type_, validation_status, models, agent_active, provider_active in source.rows(sql):
        if (wanted is not None and name not in wanted) or (active_only and not (agent_active and provider_active)):
            continue
        if decode is not None:
            models = decode((models,))[0]
        listed = tuple(models) if isinstance(models, list) else None
        status = model_status(str(type_), validation_status, listed, model_name)
        out[name] = ModelCheck(name, provider, str(type_), model_name, status, listed or (), id_text(row_id))
    return out


def refuse_missing_model(check: ModelCheck | None, doing: str) -> None:
    """Stop ``doing`` (e.g. "run 'x' cannot start") before anything is sent when the model is missing."""
    if check is not None and check.status is ModelStatus.MISSING:
        raise ReconcilerError(f"{doing}: {check.message()}", hint=check.hint())


def with_model_status(engine: Engine, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``get agents`` rows with ``model_status``, and ``served_models`` where the model is missing."""
    checks = {c.agent_id: c for c in model_checks(engine).values()}  # by id: a listed name may be the manifest's
    out = []
    for row in rows:
        check = checks.get(row["id"])
        status = check.status if check is not None else ModelStatus.UNKNOWN
        extra: dict[str, Any] = {"model_status": status.value}
        if check is not None and status is ModelStatus.MISSING:
            extra["served_models"] = list(check.served)
        out.append({**row, **extra})
    return out
