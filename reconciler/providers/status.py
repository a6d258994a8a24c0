"""Validate providers stored in the database and record the outcome.

``validation_status`` goes pending -> validating -> connected | error, with ``validation_error`` and
``validated_at``; every change is emitted on ``provider_events`` (or the bus given). A result is
only written if the provider was not changed meanwhile (an apply wins over a probe of old settings).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.engine import URL

from reconciler.errors import ReconcilerError
from reconciler.llm.ports import ProviderConfig
from reconciler.providers.events import EventBus, provider_events, validation_event
from reconciler.providers.validation import DEFAULT_TIMEOUT, ValidationResult
from reconciler.state.columns import writable
from reconciler.state.tables import llm_providers, provider_models, reconciler_resources, utcnow


@dataclass(frozen=True)
class StoredProvider:
    id: uuid.UUID
    name: str
    type: str
    base_url: str | None
    is_active: bool
    model_path: str | None = None
    api_key_encrypted: bytes | None = field(default=None, repr=False)


def load_providers(engine: Engine, names: Sequence[str] | None = None) -> list[StoredProvider]:
    """Provider rows (all, or the named ones: an unknown name is an error). A managed provider is
    named as in its manifest (its row may keep another name: ``reconciler/row-name``), and found
    by either name."""
    p = llm_providers.c
    b = reconciler_resources.c
    with engine.connect() as conn:
        books = {str(r.row_id): r for r in conn.execute(select(b.row_id, b.name, b.applied).where(b.kind == "Provider"))}
        rows = conn.execute(select(p.id, p.name, p.type, p.base_url, p.is_active, p.api_key_encrypted).order_by(p.name)).all()
    providers, row_names = [], {}
    for r in rows:
        book = books.get(str(r.id))
        name = book.name if book is not None else r.name
        model_path = (book.applied or {}).get("model_path") if book is not None else None
        providers.append(StoredProvider(r.id, name, r.type, r.base_url, bool(r.is_active), model_path, r.api_key_encrypted))
        row_names[r.name] = providers[-1]
    if names is None:
        return providers
    by_name = {**row_names, **{sp.name: sp for sp in providers}}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ReconcilerError(
            f"no provider named {', '.join(repr(n) for n in missing)} in the database",
            hint="list them with `reconciler get providers`",
        )
    return [by_name[n] for n in dict.fromkeys(names)]


def targets_for(providers: Sequence[StoredProvider], database: URL | None = None) -> list[ProviderConfig]:
    """Decrypt the keys the probes need (with the secret key of ``database``); refuse (naming every
    provider) if any cannot be decrypted."""
    encrypted = [sp for sp in providers if sp.api_key_encrypted is not None]
    keys: dict[str, str] = {}
    if encrypted:
        from reconciler.providers.secrets import load_secret_box, undecryptable

        box = load_secret_box(
            create=False,
            needed_for=f"it is needed to decrypt the API keys of {', '.join(repr(sp.name) for sp in encrypted)}",
            database=database,
        )
        bad = []
        for sp in encrypted:
            assert sp.api_key_encrypted is not None
            try:
                keys[sp.name] = box.decrypt(sp.api_key_encrypted, sp.name)
            except ReconcilerError:
                bad.append(sp.name)
        if bad:
            raise undecryptable(bad, box.source)
    return [ProviderConfig(sp.name, sp.type, sp.base_url, api_key=keys.get(sp.name), model_path=sp.model_path) for sp in providers]


def _set_status(
    engine: Engine, sp: StoredProvider, status: str, error: str | None, at: datetime | None, models: tuple[str, ...] | None = None
) -> bool:
    """Store an outcome unless the provider changed meanwhile: an apply that changes its type,
    base_url or key resets it to pending (and validates it again), so this older result is dropped.
    With the outcome, the models it listed (``models``; a failed probe leaves none)."""
    with engine.begin() as conn:
        p = writable(conn, llm_providers)  # type and validation_status may be the database's own enum types
        result = conn.execute(
            update(p)
            .where(
                p.c.id == sp.id,
                p.c.validation_status == "validating",
                p.c.type == sp.type,
                p.c.base_url.is_not_distinct_from(sp.base_url),
            )
            .values(validation_status=status, validation_error=error, validated_at=at)
        )
        stored = bool(result.rowcount)
        if stored and at is not None:
            conn.execute(delete(provider_models).where(provider_models.c.provider_id == sp.id))
            if models is not None:
                conn.execute(insert(provider_models).values(provider_id=sp.id, models=list(models), listed_at=at))
        return stored


async def check_providers_async(
    engine: Engine,
    providers: Sequence[StoredProvider],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    bus: EventBus | None = None,
) -> list[ValidationResult]:
    """Mark ``providers`` validating, probe them concurrently, store and announce each outcome."""
    from reconciler.providers.validation import validate_all

    bus = bus or provider_events
    targets = targets_for(providers, engine.url)  # before anything is written: a bad key changes nothing
    by_name = {sp.name: sp for sp in providers}
    with engine.begin() as conn:
        p = writable(conn, llm_providers)
        conn.execute(update(p).where(p.c.id.in_([sp.id for sp in providers])).values(validation_status="validating", validation_error=None))
    for sp in providers:
        bus.emit(validation_event(sp.name, str(sp.id), "validating", type=sp.type))
    done: set[str] = set()

    def store(result: ValidationResult) -> None:
        sp = by_name[result.name]
        at = utcnow()
        current = _set_status(engine, sp, result.status, result.error, at, result.models if result.ok else None)
        done.add(result.name)
        extra: dict[str, Any] = {"type": sp.type, "models": list(result.models), "elapsed_ms": round(result.elapsed * 1000)}
        if not current:
            extra["stale"] = True  # the provider changed while it was probed; the result was not stored
        bus.emit(validation_event(sp.name, str(sp.id), result.status, result.error, at, **extra))

    try:
        return await validate_all(targets, timeout=timeout, on_result=store)
    finally:
        for sp in providers:
            if sp.name not in done:  # interrupted: do not leave a provider "validating" forever
                _set_status(engine, sp, "pending", None, None)
                bus.emit(validation_event(sp.name, str(sp.id), "pending", type=sp.type))


def check_providers(
    engine: Engine,
    names: Sequence[str] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    skip_inactive: bool | None = None,
    bus: EventBus | None = None,
) -> list[ValidationResult]:
    """Validate the named providers (default: every active one) and store the outcome."""
    providers = load_providers(engine, names)
    if skip_inactive if skip_inactive is not None else names is None:
        providers = [sp for sp in providers if sp.is_active]
    if not providers:
        return []
    return asyncio.run(check_providers_async(engine, providers, timeout=timeout, bus=bus))


def list_models(engine: Engine, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> ValidationResult:
    """The models provider ``name`` serves (a probe that writes nothing)."""
    from reconciler.providers.validation import validate_provider

    (target,) = targets_for(load_providers(engine, [name]), engine.url)
    return asyncio.run(validate_provider(target, timeout=timeout))
