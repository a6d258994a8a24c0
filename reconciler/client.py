"""The application's client: run the agent git declared, as the database holds it now.

    from reconciler import Client

    client = Client("postgresql://...")            # or Client() for the SQLite default
    agent = client.agent("message-classifier", task="classify-message")
    result = agent.run_sync("Message: the app crashes")   # or: await agent.run(...)
    result.output          # validated against the task's response schema
    result.config_sha256   # the exact configuration that answered (a run's config_sha256)

The configuration is resolved as a run resolves it (``runs.store.resolve_assignment``, the API key
decrypted with the secret key) and executed through the agent registry, so an unchanged
configuration is served by one cached instance. Every ``refresh_seconds`` at most, a call asks the
database for its newest history id (one indexed lookup): after an apply, a rotation or an adoption
the configuration is resolved again, so a running application follows git within seconds and never
reloads per call. Nothing here imports pydantic-ai until the first call.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Self, TypeVar

from sqlalchemy import Engine, func, select

from reconciler.errors import ReconcilerError
from reconciler.llm.ports import (
    ExecutionSettings,
    InvalidOutput,
    LLMAgent,
    LLMError,
    ProviderConfig,
    RequestRejected,
    RetryableError,
)
from reconciler.runs import metrics, store
from reconciler.state.tables import agent_configs, agent_task_assignments, reconciler_applies, reconciler_resources, task_configs

DEFAULT_REFRESH_SECONDS = 2.0
T = TypeVar("T")


class ClientError(ReconcilerError):
    """Base of everything the client raises; the message says what and the hint how to fix it."""


class AgentNotFound(ClientError):
    """No agent of that name in the database."""


class TaskNotFound(ClientError):
    """No task of that name in the database."""


class TaskNotAssigned(ClientError):
    """The agent and the task exist, but no assignment links them."""


class AgentInactive(ClientError):
    """The agent, its task, their assignment or the provider is switched off (is_active: false)."""


class ModelNotFound(ClientError):
    """The provider does not serve the agent's model."""


class AgentCallFailed(ClientError):
    """The call did not produce a valid answer. ``retryable``: the provider was down, rate limited or
    timed out (trying again later may work); else the request or the answers were refused."""

    def __init__(self, message: str, hint: str = "", *, retryable: bool = False, attempts: int = 0) -> None:
        super().__init__(message, hint)
        self.retryable = retryable
        self.attempts = attempts


class InvalidAgentOutput(AgentCallFailed):
    """The model kept answering outside the task's response schema after every retry."""


@dataclass(frozen=True)
class Result:
    """One answered prompt: the schema-checked output and the configuration that produced it."""

    output: Any
    config_sha256: str  # SHA-256 of the resolved configuration snapshot, as runs record it
    agent: str
    task: str
    assignment: str
    provider: str
    model_name: str
    input_tokens: int
    output_tokens: int
    attempts: int
    elapsed_seconds: float


@dataclass(frozen=True)
class _Resolved:
    config: store.ResolvedConfig
    provider: ProviderConfig  # with the decrypted key: kept in memory only
    settings: ExecutionSettings
    config_sha256: str
    generation: int


class Client:
    """Resolves agents from the state database and runs them; one per application is enough.

    ``refresh_seconds`` bounds how long a finished apply goes unnoticed; ``max_retries`` and
    ``timeout_seconds`` are the per-call output retries and per-attempt timeout (as a run's spec
    sets them). ``registry`` defaults to the process-wide one."""

    def __init__(
        self,
        db: str | None = None,
        *,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        max_retries: int = 2,
        timeout_seconds: float = 120.0,
        registry: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from reconciler.state.db import open_engine, translate_db_errors

        engine = open_engine(db, create=False)
        if engine is None:
            raise ClientError("no state database yet", hint="apply manifests first (reconciler apply PATH), or pass the database URL")
        self._engine: Engine = engine
        self._translate = lambda doing: translate_db_errors(engine.url, doing)
        self.refresh_seconds = refresh_seconds
        self.settings = ExecutionSettings(max_retries=max_retries, timeout_seconds=timeout_seconds)
        self._registry = registry
        self._clock = clock
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._checked_at = float("-inf")
        self._portal: _Portal | None = None
        self._agents: weakref.WeakSet[ManagedAgent] = weakref.WeakSet()
        self.checks = 0  # how often the database was asked for news (observability and tests)

    # -- configuration -----------------------------------------------------------------------------

    def agent(self, name: str, *, task: str) -> ManagedAgent:
        """The agent ``name`` bound to ``task``; raises if either is unknown, unassigned or inactive."""
        managed = ManagedAgent(self, name, task, self._resolve(name, task, self.generation(force=True)))
        self._agents.add(managed)
        return managed

    def check_due(self) -> bool:
        """Would ``generation`` ask the database now (rather than answer from memory)?"""
        return self._generation is None or self._clock() - self._checked_at >= self.refresh_seconds

    def generation(self, *, force: bool = False) -> int:
        """The newest history id; asked of the database at most every ``refresh_seconds``."""
        now = self._clock()
        with self._lock:
            if not force and self._generation is not None and now - self._checked_at < self.refresh_seconds:
                return self._generation
        h = reconciler_applies.c
        with self._translate("checking for a new apply"), self._engine.connect() as conn:
            latest = int(conn.execute(select(func.coalesce(func.max(h.id), 0))).scalar_one())
        with self._lock:
            self._generation, self._checked_at = latest, now
            self.checks += 1
        return latest

    def _resolve(self, agent: str, task: str, generation: int) -> _Resolved:
        a, t, s, m = agent_configs.c, task_configs.c, agent_task_assignments.c, reconciler_resources.c
        with self._translate(f"resolving agent {agent!r}"), self._engine.connect() as conn:
            agent_id = conn.execute(select(a.id).where(a.name == agent)).scalar()
            if agent_id is None:
                known = list(conn.execute(select(a.name).order_by(a.name).limit(10)).scalars())
                raise AgentNotFound(f"no agent named {agent!r} in the database", hint=_known("agents", known))
            task_id = conn.execute(select(t.id).where(t.name == task)).scalar()
            if task_id is None:
                known = list(conn.execute(select(t.name).order_by(t.name).limit(10)).scalars())
                raise TaskNotFound(f"no task named {task!r} in the database", hint=_known("tasks", known))
            assignment_id = conn.execute(select(s.id).where(s.agent_id == agent_id, s.task_id == task_id)).scalar()
            if assignment_id is None:
                tasks = list(
                    conn.execute(
                        select(t.name)
                        .join_from(agent_task_assignments, task_configs, t.id == s.task_id)
                        .where(s.agent_id == agent_id)
                        .order_by(t.name)
                    ).scalars()
                )
                hint = f"agent {agent!r} has {', '.join(repr(x) for x in tasks)}" if tasks else f"agent {agent!r} has no tasks"
                raise TaskNotAssigned(
                    f"agent {agent!r} is not assigned task {task!r}",
                    hint=f"{hint}; add an Assignment (spec: {{agent: {agent}, task: {task}}}) to the manifests and apply",
                )
            name = conn.execute(select(m.name).where(m.kind == "Assignment", m.row_id == assignment_id)).scalar() if _has_bookkeeping(conn) else None
        with self._translate(f"resolving agent {agent!r}"):
            config = store.resolve_assignment(self._engine, assignment_id, name or f"{agent}+{task}")
        if config.inactive:
            what = ", ".join(config.inactive)
            raise AgentInactive(
                f"agent {agent!r} with task {task!r} cannot run: {what} {'is' if len(config.inactive) == 1 else 'are'} inactive",
                hint="set is_active: true in the manifests and apply",
            )
        from reconciler.runs.service import model_file_of

        snapshot = metrics.config_snapshot(config.provider, config.agent, config.task, model_file_of(config.provider))
        provider = config.provider
        if config.api_key_encrypted is not None:
            from reconciler.providers.secrets import load_secret_box

            box = load_secret_box(
                create=False, needed_for=f"it is needed to decrypt the API key of provider {provider.name!r}", database=self._engine.url
            )
            provider = replace(provider, api_key=box.decrypt(config.api_key_encrypted, provider.name))
        return _Resolved(config, provider, self.settings, metrics.snapshot_sha256(snapshot), generation)

    def registry(self) -> Any:
        if self._registry is None:
            from reconciler.llm.registry import default_registry

            self._registry = default_registry()
        return self._registry

    # -- the synchronous side ------------------------------------------------------------------------

    def _call_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise ClientError("run_sync was called inside a running event loop", hint="use `await agent.run(prompt)` there")
        with self._lock:
            if self._portal is None:
                self._portal = _Portal()
            portal = self._portal
        return portal.call(coro)

    def close(self) -> None:
        """Close the HTTP clients of the agents this client made and its background loop."""
        with self._lock:
            portal, self._portal = self._portal, None
        if portal is not None:
            agents = list(self._agents)
            portal.call(_close_all([a for managed in agents for a in managed._drop(portal.loop)]))
            portal.stop()
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _has_bookkeeping(conn: Any) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(conn).has_table(reconciler_resources.name))


def _known(what: str, names: list[str]) -> str:
    if not names:
        return f"there are no {what} in the database: apply manifests first"
    return f"known {what} include {', '.join(repr(n) for n in names)} (reconciler get {what})"


async def _close_all(agents: list[Any]) -> None:
    for agent in agents:
        close = getattr(agent, "aclose", None)
        if close is not None:
            await close()


class ManagedAgent:
    """An agent bound to a task as the database declares it; follows applies (see ``Client``)."""

    def __init__(self, client: Client, name: str, task: str, resolved: _Resolved) -> None:
        self._client = client
        self.name = name
        self.task = task
        self._resolved = resolved
        self._lock = threading.Lock()
        # the instance each event loop uses (registry entries are weak: this keeps them alive)
        self._instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, LLMAgent]] = weakref.WeakKeyDictionary()

    @property
    def config_sha256(self) -> str:
        return self._resolved.config_sha256

    def _current(self) -> _Resolved:
        """The configuration to use now: resolved again when the database has a newer apply."""
        generation = self._client.generation()
        resolved = self._resolved
        if generation != resolved.generation:
            fresh = self._client._resolve(self.name, self.task, generation)
            with self._lock:
                self._resolved = fresh
            resolved = fresh
        return resolved

    def _drop(self, loop: asyncio.AbstractEventLoop) -> list[LLMAgent]:
        with self._lock:
            found = self._instances.pop(loop, None)
        return [found[1]] if found else []

    async def run(self, prompt: str) -> Result:
        """Send ``prompt``; returns the output validated against the task's response schema."""
        # a due check touches the database: off the caller's event loop
        resolved = await asyncio.to_thread(self._current) if self._client.check_due() else self._current()
        loop = asyncio.get_running_loop()
        with self._lock:
            held = self._instances.get(loop)
        if held is not None and held[0] == resolved.config_sha256:
            llm = held[1]
        else:
            config = resolved.config
            llm = await self._client.registry().get_or_create(config.agent, config.task, resolved.provider, resolved.settings)
            # the old instance (if the configuration changed) is only let go, not closed: another agent
            # of this process may share it through the registry and be answering with it right now
            with self._lock:
                self._instances[loop] = (resolved.config_sha256, llm)
        started = time.perf_counter()
        try:
            answer = await llm.run(prompt)
        except LLMError as exc:
            raise _call_error(exc, resolved) from exc
        config = resolved.config
        return Result(
            output=answer.output,
            config_sha256=resolved.config_sha256,
            agent=config.agent.name,
            task=config.task.name,
            assignment=config.assignment,
            provider=config.provider.name,
            model_name=config.agent.model_name,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            attempts=answer.attempts,
            elapsed_seconds=time.perf_counter() - started,
        )

    def run_sync(self, prompt: str) -> Result:
        """``run`` for code without an event loop (on the client's own background loop)."""
        return self._client._call_sync(self.run(prompt))


def _call_error(exc: LLMError, resolved: _Resolved) -> ClientError:
    config = resolved.config
    where = f"agent {config.agent.name!r} (provider {config.provider.name!r}, {config.provider.type}, model {config.agent.model_name!r})"
    cause = exc.__cause__
    status = getattr(cause, "status_code", None)
    if isinstance(exc, RequestRejected) and status == 404:
        return ModelNotFound(
            f"{where}: the provider does not serve model {config.agent.model_name!r}: {exc}",
            hint="fix spec.model_name of the agent (`reconciler providers models NAME` lists the models) and apply",
        )
    if isinstance(exc, InvalidOutput):
        return InvalidAgentOutput(f"{where}: {exc}", hint="the task's response_schema and the agent's prompt must agree", attempts=exc.attempts)
    retryable = isinstance(exc, RetryableError)
    hint = "the provider may be down or overloaded: try again later" if retryable else "check the provider's base_url, api_key and the model"
    return AgentCallFailed(f"{where}: {exc}", hint=hint, retryable=retryable, attempts=exc.attempts)


class _Portal:
    """An event loop on a daemon thread, so ``run_sync`` reuses one loop (and so one agent
    instance with its connection pool) across calls instead of building both per call."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="reconciler-client", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()
