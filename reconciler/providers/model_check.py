"""Is an agent's ``model_name`` one its provider serves? Checked against the model list the provider
gave at its last validation (stored by ``providers.status``), so nothing is asked of the provider here:
``get agents`` shows the outcome, ``run``, ``test`` and experiment arms refuse a missing model before
sending anything, and ``apply`` / ``providers check`` report it. ``validate`` never gets here (offline)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, inspect, literal, select

from reconciler.errors import ReconcilerError
from reconciler.llm.provider_types import provider_type
from reconciler.state.tables import agent_configs, llm_providers, provider_models

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


def model_checks(engine: Engine, agents: Sequence[str] | None = None, *, active_only: bool = False) -> dict[str, ModelCheck]:
    """agent name -> its ModelCheck, for the named agents (default: all; ``active_only``: agents and
    providers both active)."""
    a, p, m = agent_configs, llm_providers, provider_models
    with engine.connect() as conn:
        has_lists = inspect(conn).has_table(m.name)  # not in a database reconciler never wrote
        models = m.c.models if has_lists else literal(None).label("models")
        query = select(a.c.id, a.c.name, a.c.model_name, p.c.name.label("provider"), p.c.type, p.c.validation_status, models)
        query = query.join(p, p.c.id == a.c.provider_id)
        if has_lists:
            query = query.outerjoin(m, m.c.provider_id == p.c.id)
        if agents is not None:
            query = query.where(a.c.name.in_(list(agents)))
        if active_only:
            query = query.where(a.c.is_active.is_(True), p.c.is_active.is_(True))
        rows = conn.execute(query.order_by(a.c.name)).all()
    out = {}
    for r in rows:
        listed = tuple(r.models) if isinstance(r.models, list) else None
        status = model_status(str(r.type), r.validation_status, listed, r.model_name)
        out[r.name] = ModelCheck(r.name, r.provider, str(r.type), r.model_name, status, listed or (), str(r.id))
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
