"""``reconciler test AGENT --prompt TEXT``: the seed's ``POST /agents/{id}/test``.

Like the seed it refuses an inactive provider and one whose validation did not succeed; the
embedded llama.cpp provider needs no validation (it is started on demand, on this machine).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sqlalchemy import Engine, select

from reconciler.errors import ReconcilerError
from reconciler.llm.ports import (
    AgentConfig,
    ExecutionSettings,
    LLMError,
    ProviderConfig,
    TaskConfig,
)
from reconciler.state.tables import (
    agent_configs,
    llm_providers,
    reconciler_resources,
    task_configs,
)

ALWAYS_USABLE = frozenset({"llamacpp"})


def _load(engine: Engine, agent_name: str, task_name: str | None) -> tuple[AgentConfig, ProviderConfig, Any, TaskConfig | None]:
    a, p, t, m = agent_configs, llm_providers, task_configs, reconciler_resources
    with engine.connect() as conn:

        def named(table: Any, kind: str, name: str) -> Any:
            """The row by its name, or by the manifest name reconciler manages it by (its row may keep
            another name: reconciler/row-name)."""
            from sqlalchemy import inspect

            managed = None
            if inspect(conn).has_table(m.name):
                managed = conn.execute(select(m.c.row_id).where(m.c.kind == kind, m.c.name == name)).scalar()
            return table.c.id == managed if managed is not None else table.c.name == name

        row = conn.execute(
            select(a, p.c.name.label("provider_name"), p.c.type.label("provider_type"), p.c.base_url, p.c.api_key_encrypted,
                   p.c.is_active.label("provider_active"), p.c.validation_status, p.c.validation_error, p.c.id.label("pid"))
            .join(p, p.c.id == a.c.provider_id).where(named(a, "Agent", agent_name))
        ).mappings().first()
        if row is None:
            raise ReconcilerError(f"no agent named {agent_name!r} in the database", hint="list them with `reconciler get agents`")
        applied_agent = conn.execute(select(m.c.applied).where(m.c.kind == "Agent", m.c.row_id == row["id"])).scalar() or {}
        applied_provider = conn.execute(select(m.c.applied).where(m.c.kind == "Provider", m.c.row_id == row["pid"])).scalar() or {}
        task = None
        if task_name is not None:
            trow = conn.execute(select(t.c.name, t.c.response_schema).where(named(t, "Task", task_name))).first()
            if trow is None:
                raise ReconcilerError(f"no task named {task_name!r} in the database", hint="list them with `reconciler get tasks`")
            task = TaskConfig(trow.name, trow.response_schema or {})
    provider = ProviderConfig(row["provider_name"], row["provider_type"], row["base_url"], applied_provider.get("model_path"))
    if not row["provider_active"]:
        raise ReconcilerError(
            f"provider {provider.name!r} of agent {agent_name!r} is inactive",
            hint=f"set is_active: true on Provider {provider.name!r} and apply",
        )
    if provider.type not in ALWAYS_USABLE and row["validation_status"] != "connected":
        detail = f": {row['validation_error']}" if row["validation_error"] else ""
        raise ReconcilerError(
            f"provider {provider.name!r} is not validated (status {row['validation_status']}{detail})",
            hint="the provider must be validated (status connected, see `reconciler get providers`); check its base_url and api_key",
        )
    if row["api_key_encrypted"]:
        from dataclasses import replace

        from reconciler.providers.secrets import load_secret_box

        provider = replace(provider, api_key=load_secret_box(create=False).decrypt(row["api_key_encrypted"], provider.name))
    agent = AgentConfig(
        row["name"], row["model_name"], row["system_prompt"] or "", row["temperature"], row["max_tokens"], applied_agent.get("prices"),
        AgentConfig.examples_from(applied_agent.get("examples")),
    )
    return agent, provider, row["is_active"], task


def test_agent(engine: Engine, agent_name: str, prompt: str, task_name: str | None = None, registry: Any = None) -> dict[str, Any]:
    agent, provider, _active, task = _load(engine, agent_name, task_name)
    # without a task the answer is free text: the schema {} accepts anything; the text mode returns it as is
    task_config = task or TaskConfig("free-text", {})
    settings = ExecutionSettings(max_retries=1 if task else 0, timeout_seconds=120.0)
    if registry is None:
        from reconciler.llm.registry import default_registry

        registry = default_registry()

    async def go() -> Any:
        llm = await registry.get_or_create(agent, task_config, provider, settings)
        try:
            return await llm.run(prompt)
        finally:
            close = getattr(llm, "aclose", None)
            if close is not None:
                await close()

    started = time.perf_counter()
    try:
        result = asyncio.run(go())
    except LLMError as exc:
        raise ReconcilerError(f"agent {agent_name!r} (provider {provider.name!r}, {provider.type}): {exc}",
                              hint="check that the provider is running and reachable") from None
    elapsed = time.perf_counter() - started
    output = result.output
    return {
        "agent_name": agent.name,
        "prompt": prompt,
        "response": output if isinstance(output, str) else json.dumps(output, ensure_ascii=False),
        "elapsed_time": round(elapsed, 3),
        "model_name": agent.model_name,
        "provider_name": provider.name,
        "provider_type": provider.type,
        "task_name": task.name if task else None,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
    }
