"""AgentRegistry: one instance per (agent, task, config hash), weakly held, created exactly once."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace

from reconciler.llm.ports import AgentConfig, ExecutionSettings, ProviderConfig, TaskConfig
from reconciler.llm.registry import AgentRegistry

AGENT = AgentConfig("a", "m", "prompt")
TASK = TaskConfig("t", {"type": "object"})
PROVIDER = ProviderConfig("p", "llamacpp")
SETTINGS = ExecutionSettings()


class Made:
    def __init__(self, agent: AgentConfig) -> None:
        self.agent = agent


async def slow_factory(agent, task, provider, settings):  # type: ignore[no-untyped-def]
    await asyncio.sleep(0.01)  # creation takes a while: concurrent callers must wait, not create
    return Made(agent)


def test_concurrent_get_or_create_creates_exactly_one() -> None:
    registry = AgentRegistry(slow_factory)

    async def main() -> list[object]:
        return await asyncio.gather(*(registry.get_or_create(AGENT, TASK, PROVIDER, SETTINGS) for _ in range(100)))

    agents = asyncio.run(main())
    assert registry.created == 1
    assert all(a is agents[0] for a in agents)


def test_sync_factory_runs_off_the_loop_and_once() -> None:
    calls = []

    def factory(agent, task, provider, settings):  # type: ignore[no-untyped-def]
        calls.append(1)
        return Made(agent)

    registry = AgentRegistry(factory)

    async def main() -> list[object]:
        return await asyncio.gather(*(registry.get_or_create(AGENT, TASK, PROVIDER, SETTINGS) for _ in range(20)))

    agents = asyncio.run(main())
    assert len(calls) == 1 and len({id(a) for a in agents}) == 1


def test_changed_configuration_is_a_new_instance() -> None:
    registry = AgentRegistry(slow_factory)

    async def main() -> tuple[object, object, object]:
        first = await registry.get_or_create(AGENT, TASK, PROVIDER, SETTINGS)
        changed_prompt = await registry.get_or_create(replace(AGENT, system_prompt="other"), TASK, PROVIDER, SETTINGS)
        changed_provider = await registry.get_or_create(AGENT, TASK, replace(PROVIDER, base_url="http://x/v1"), SETTINGS)
        return first, changed_prompt, changed_provider

    first, changed_prompt, changed_provider = asyncio.run(main())
    assert first is not changed_prompt and first is not changed_provider
    assert registry.created == 3


def test_unused_instances_are_collected() -> None:
    registry = AgentRegistry(slow_factory)

    async def main() -> int:
        agent = await registry.get_or_create(AGENT, TASK, PROVIDER, SETTINGS)
        assert len(registry) == 1
        del agent
        gc.collect()
        return len(registry)

    assert asyncio.run(main()) == 0
