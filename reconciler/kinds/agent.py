"""Agent: a model, a prompt and its settings on a provider (the seed's ``agent_configs``).

A new agent field goes into its spec model (``kinds.specs.AgentSpec``) and here (essence; a field
without a column is kept in the bookkeeping by listing it in ``extra_fields``) and, when the model
sees it, in the LLM port (``llm/ports.AgentConfig``) and the adapter that sends it. See
docs/development.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reconciler.kinds.base import Kind, KindName, Reference, column_rows, listing, named_table, plain_dump, plain_export

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table

    from reconciler.kinds.base import Fingerprint
    from reconciler.llm.ports import AgentConfig
    from reconciler.manifests.loader import Manifest


def _table(name: str) -> Table:
    from sqlalchemy import Boolean, Column, Float, ForeignKey, Integer, String, Text, Uuid

    return named_table(
        name,
        Column("description", Text),
        Column("provider_id", Uuid, ForeignKey("llm_providers.id", ondelete="RESTRICT"), nullable=False, index=True),
        Column("model_name", String(255), nullable=False),
        Column("system_prompt", Text, nullable=False, default=""),
        Column("temperature", Float),
        Column("max_tokens", Integer),
        Column("is_active", Boolean, nullable=False, default=True),
    )


_COLUMNS = ("description", "model_name", "system_prompt", "temperature", "max_tokens", "is_active")
_REFERENCES = {"provider": Reference("provider_id", KindName.PROVIDER)}


def _essence(m: Manifest, fingerprint: Fingerprint | None) -> dict[str, Any]:
    s = m.spec
    return {
        "description": s.description,
        "provider": s.provider,
        "model_name": s.model_name,
        "system_prompt": s.system_prompt,
        "temperature": s.temperature,
        "max_tokens": s.max_tokens,
        "is_active": s.is_active,
        "prices": plain_dump(s.prices) if s.prices is not None else None,
        "examples": [plain_dump(e) for e in s.examples] or None,
    }


def _list_rows(conn: Connection, managed: Mapping[str, str]) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from reconciler.kinds.provider import PROVIDER

    a, p = AGENT.table, PROVIDER.table
    fields = ("name", "provider", "model_name", "temperature", "max_tokens", "is_active", "description", "system_prompt")
    query = select(a, p.c.name.label("provider")).join(p, p.c.id == a.c.provider_id).order_by(a.c.name)
    return [listing(r, fields, managed) for r in conn.execute(query)]


def agent_config(name: str, row: Mapping[str, Any], applied: Mapping[str, Any]) -> AgentConfig:
    """The LLM port's view of an agent: its columns (``row``) and the fields kept in the
    bookkeeping (``applied``). Everything the model sees must pass through here."""
    from reconciler.llm.ports import AgentConfig  # the ports' dataclasses: not built for plan, which needs none

    return AgentConfig(
        name=name,
        model_name=row["model_name"],
        system_prompt=row["system_prompt"] or "",
        temperature=row["temperature"],
        max_tokens=row["max_tokens"],
        prices=applied.get("prices"),
        examples=AgentConfig.examples_from(applied.get("examples")),
    )


AGENT = Kind(
    name=KindName.AGENT,
    spec="AgentSpec",
    essence=_essence,
    **column_rows("agent_configs", _table, _COLUMNS, _REFERENCES, types={"temperature": "float"}),
    export=plain_export(
        ("description", "provider", "model_name", "system_prompt", "temperature", "max_tokens", "prices", "examples"),
        _REFERENCES,
        defaults={"temperature": 0.7},
    ),
    extra_fields=("prices", "examples"),
    get_columns=("name", "provider", "model_name", "model_status", "temperature", "max_tokens", "is_active", "managed"),
    list_rows=_list_rows,
)
