"""``reconciler test AGENT --prompt TEXT``: one prompt through an agent (the seed's ``POST /agents/{id}/test``).

The answer is checked against a task's response schema, as a run would check it: ``--task``, else the
agent's only assigned task (with several, the caller must pick one); plain text only when asked for
(``--no-task``) or when the agent has no task. Like the seed it refuses an inactive provider and one
whose validation did not succeed (the embedded llama.cpp provider needs no validation: it is started
on demand, on this machine), and, before sending anything, a model the provider does not serve.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine

from reconciler.errors import ReconcilerError
from reconciler.llm.ports import ExecutionSettings, LLMError, TaskConfig
from reconciler.providers.model_check import refuse_missing_model
from reconciler.runs import store

ALWAYS_USABLE = frozenset({"llamacpp"})
FREE_TEXT = TaskConfig("free-text", {})  # the schema {} accepts anything; the answer is returned as is


class TaskChoice(StrEnum):
    """How the task an answer is checked against was chosen (said with the answer)."""

    GIVEN = "given"  # --task
    ONLY = "only"  # the agent's only assigned task
    NONE = "none"  # plain text: --no-task, or the agent has no task


@dataclass(frozen=True)
class TaskRequest:
    name: str | None = None  # --task
    plain: bool = False  # --no-task


def choose_task(agent_name: str, assigned: tuple[TaskConfig, ...], request: TaskRequest, find: Any) -> tuple[TaskConfig | None, TaskChoice]:
    """The task to check the answer against (pure but for ``find(name)``, which loads a named task)."""
    if request.plain:
        return None, TaskChoice.NONE
    if request.name is not None:
        return find(request.name), TaskChoice.GIVEN
    if not assigned:
        return None, TaskChoice.NONE
    if len(assigned) == 1:
        return assigned[0], TaskChoice.ONLY
    names = ", ".join(t.name for t in assigned)
    raise ReconcilerError(
        f"agent {agent_name!r} is assigned to {len(assigned)} tasks ({names}): say which one checks the answer",
        hint=f"pass --task {assigned[0].name} (or another of them), or --no-task for a plain-text answer",
    )


def _usable(context: store.AgentContext, agent_name: str) -> None:
    provider = context.provider
    if not context.provider_active:
        raise ReconcilerError(
            f"provider {provider.name!r} of agent {agent_name!r} is inactive",
            hint=f"set is_active: true on Provider {provider.name!r} and apply",
        )
    if provider.type not in ALWAYS_USABLE and context.validation_status != "connected":
        detail = f": {context.validation_error}" if context.validation_error else ""
        raise ReconcilerError(
            f"provider {provider.name!r} is not validated (status {context.validation_status}{detail})",
            hint="the provider must be validated (status connected, see `reconciler get providers`); check its base_url and api_key",
        )
    refuse_missing_model(context.model_check, f"agent {agent_name!r} cannot be tested")


def send_prompt(engine: Engine, agent_name: str, prompt: str, task: TaskRequest = TaskRequest(), registry: Any = None) -> dict[str, Any]:
    """Send ``prompt``; the response with elapsed time, model, provider and the task it was checked against."""
    from reconciler.runs.service import with_secret

    context = store.load_agent(engine, agent_name)
    _usable(context, agent_name)
    chosen, how = choose_task(agent_name, context.tasks, task, lambda name: store.find_task(engine, name))
    provider = with_secret(context.provider, context.api_key_encrypted, engine.url)
    agent = context.agent
    settings = ExecutionSettings(max_retries=1 if chosen else 0, timeout_seconds=120.0)
    if registry is None:
        from reconciler.llm.registry import default_registry

        registry = default_registry()

    async def go() -> Any:
        llm = await registry.get_or_create(agent, chosen or FREE_TEXT, provider, settings)
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
        raise ReconcilerError(
            f"agent {agent_name!r} (provider {provider.name!r}, {provider.type}): {exc}",
            hint="check that the provider is running and reachable",
        ) from None
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
        "task_name": chosen.name if chosen else None,
        "task_choice": how.value,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
    }
