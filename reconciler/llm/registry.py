"""AgentRegistry: one agent instance per (agent, task) and resolved configuration.

The seed keyed its cache by (agent id, task id) alone, so an agent whose prompt, model or provider
changed kept being served by the stale instance. Here the key also holds the SHA-256 of the fully
resolved configuration: a changed config is a different key. Entries are weak references (an
agent nobody uses is collected and its entry removed), and concurrent ``get_or_create`` calls for
one key wait on a per-key lock, so exactly one instance is created. Instances are per event loop:
their HTTP connection pools cannot be shared between loops.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from reconciler.llm.ports import (
    AgentConfig,
    ExecutionSettings,
    LLMAgent,
    ProviderConfig,
    TaskConfig,
    config_digest,
)

RegistryKey = tuple[str, str, str]  # (agent name, task name, config sha256)
Factory = Callable[[AgentConfig, TaskConfig, ProviderConfig, ExecutionSettings], "LLMAgent | Awaitable[LLMAgent]"]


def registry_key(agent: AgentConfig, task: TaskConfig, provider: ProviderConfig, settings: ExecutionSettings) -> RegistryKey:
    """A rate limit is in the key (not in a run's snapshot): an instance holds its provider's limiter."""
    limit = (provider.rate_limit,) if provider.rate_limit is not None else ()
    return (agent.name, task.name, config_digest(agent, task, provider.public(), settings, provider.api_key or "", *limit))


class AgentRegistry:
    """Caches agents weakly; safe for many concurrent callers in one event loop or across threads."""

    def __init__(self, factory: Factory) -> None:
        self._factory = factory
        self._agents: dict[tuple[int, RegistryKey], tuple[weakref.ref[Any], weakref.ref[Any]]] = {}
        self._locks: dict[tuple[int, RegistryKey], asyncio.Lock] = {}
        self._guard = threading.Lock()
        self.created = 0  # how many instances the factory made (observability and tests)

    def _lookup(self, key: tuple[int, RegistryKey], loop: asyncio.AbstractEventLoop) -> Any | None:
        entry = self._agents.get(key)
        if entry is None or entry[1]() is not loop:
            return None
        return entry[0]()

    def _lock_for(self, key: tuple[int, RegistryKey]) -> asyncio.Lock:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = asyncio.Lock()
            return lock

    def __len__(self) -> int:
        return sum(1 for ref, _ in list(self._agents.values()) if ref() is not None)

    async def get_or_create(self, agent: AgentConfig, task: TaskConfig, provider: ProviderConfig, settings: ExecutionSettings) -> LLMAgent:
        loop = asyncio.get_running_loop()
        key = (id(loop), registry_key(agent, task, provider, settings))
        found = self._lookup(key, loop)
        if found is not None:
            return found
        async with self._lock_for(key):
            found = self._lookup(key, loop)
            if found is not None:
                return found
            # a synchronous factory may block (starting the embedded server): keep the loop free
            if inspect.iscoroutinefunction(self._factory) or inspect.iscoroutinefunction(getattr(self._factory, "__call__", None)):  # noqa: B004 - is a callable object's __call__ async?
                made = self._factory(agent, task, provider, settings)
            else:
                made = await asyncio.to_thread(self._factory, agent, task, provider, settings)
            created = await made if inspect.isawaitable(made) else made
            self.created += 1

            def forget(ref: weakref.ref[Any], key: tuple[int, RegistryKey] = key) -> None:
                with self._guard:
                    entry = self._agents.get(key)
                    if entry is not None and entry[0] is ref:
                        self._agents.pop(key, None)

            with self._guard:
                self._agents[key] = (weakref.ref(created, forget), weakref.ref(loop))
                self._locks.pop(key, None)  # later callers find the instance; waiters hold the lock object
            return created


_default: AgentRegistry | None = None
_default_guard = threading.Lock()


def default_registry() -> AgentRegistry:
    """The process-wide registry over the pydantic-ai adapter (created on first use)."""
    global _default
    with _default_guard:
        if _default is None:
            from reconciler.llm.pydantic_ai_adapter import PydanticAIFramework

            _default = AgentRegistry(PydanticAIFramework())
        return _default
