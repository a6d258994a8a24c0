"""Evaluate items with one or more configurations: the engine under a run, an experiment's arms, and
anything else that must answer "what does this configuration say to these inputs".

A configuration is plain data (an ``Arm``), not a database row, so a configuration built from
manifests and never applied can be evaluated as well. Answers already in the answer cache are
reused, the rest go through the runner in one pool of workers, the arms interleaved item by item
(a stopped evaluation leaves every arm with nearly the same items done, so partial arms still
compare). Where outcomes are stored is the caller's choice (``save``).
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.llm.ports import AgentConfig, ExecutionSettings, ProviderConfig, TaskConfig
from reconciler.runs import answer_cache
from reconciler.runs.answer_cache import CachedAnswer, CacheKey
from reconciler.runs.runner import DEFAULT_MAX_CONSECUTIVE_FAILURES, ItemOutcome, ResultSink, RetryPolicy, WorkItem, execute


@dataclass(frozen=True)
class Arm:
    """One configuration to evaluate (the provider holds its API key in memory only)."""

    label: str
    agent: AgentConfig
    task: TaskConfig
    provider: ProviderConfig
    model_file: dict[str, Any] | None = None  # the bundled model's file, by digest (part of the cache key)


@dataclass(frozen=True)
class EvalItem:
    index: int  # where its outcome is stored (an experiment's item i, repeat r: i * repeats + r)
    input: dict[str, Any]
    prompt: str
    repeat: int = 0


@dataclass(frozen=True)
class EvaluationOptions:
    concurrency: int = 4
    settings: ExecutionSettings = field(default_factory=ExecutionSettings)
    use_cache: bool = True  # False: call the model for every item (the new answers are still stored)
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES  # transient, across items and arms: then it pauses


@dataclass
class Evaluation:
    processed: int = 0  # answered by the model now (and stored)
    reused: int = 0  # taken from the answer cache
    unanswered: int = 0  # given up on after transient failures only: left unfinished
    stopped_reason: str | None = None  # set when it stopped before every item was done
    last_transient_error: str | None = None
    settings_sha256: tuple[str, ...] = ()  # per arm: the cache key's settings part


Answers = list[tuple[CacheKey, CachedAnswer]]
Save = Callable[[list[ItemOutcome], Answers], None]  # store outcomes and new cache entries (empty lists: a heartbeat)
Lookup = Callable[[Iterable[CacheKey]], dict[CacheKey, CachedAnswer]]


def interleave(todo: Sequence[Sequence[EvalItem]]) -> list[tuple[int, EvalItem]]:
    """(arm, item) in item order, arms alternating within an item: after a resume, an arm that fell
    behind catches up first."""
    streams = [[(item.index, arm, item) for item in sorted(items, key=lambda i: i.index)] for arm, items in enumerate(todo)]
    return [(arm, item) for _, arm, item in heapq.merge(*streams, key=lambda t: (t[0], t[1]))]


def reused_outcome(arm: int, item: EvalItem, answer: CachedAnswer) -> ItemOutcome:
    return ItemOutcome(
        item.index,
        item.input,
        answer.output,
        True,
        None,
        0,
        answer.input_tokens,
        answer.output_tokens,
        answer.latency_ms or 0.0,
        arm=arm,
        reused=True,
    )


def evaluate(
    arms: Sequence[Arm],
    todo: Sequence[Sequence[EvalItem]],
    options: EvaluationOptions,
    *,
    save: Save,
    lookup: Lookup | None = None,
    registry: Any = None,
    on_item: Callable[[ItemOutcome], None] | None = None,
    halt: threading.Event | None = None,
) -> Evaluation:
    """Answer ``todo[a]`` with ``arms[a]`` for every arm. Raises ``LLMError`` when an agent cannot be
    created (no server, no key); a provider that goes away mid-way stops it (``stopped_reason``)."""
    if len(arms) != len(todo):
        raise ValueError(f"{len(arms)} arms but {len(todo)} item lists")
    if registry is None:
        from reconciler.llm.registry import default_registry

        registry = default_registry()
    return asyncio.run(_evaluate(arms, todo, options, save, lookup, registry, on_item, halt))


async def _evaluate(
    arms: Sequence[Arm],
    todo: Sequence[Sequence[EvalItem]],
    options: EvaluationOptions,
    save: Save,
    lookup: Lookup | None,
    registry: Any,
    on_item: Callable[[ItemOutcome], None] | None,
    halt: threading.Event | None,
) -> Evaluation:
    agents: list[Any] = []
    try:
        for arm in arms:
            agents.append(await registry.get_or_create(arm.agent, arm.task, arm.provider, options.settings))
        return await evaluate_with(agents, arms, todo, options, save=save, lookup=lookup, on_item=on_item, halt=halt)
    finally:
        for agent in agents:
            close = getattr(agent, "aclose", None)
            if close is not None:  # instances are per event loop, and this loop ends here
                await close()


async def evaluate_with(
    agents: Sequence[Any],
    arms: Sequence[Arm],
    todo: Sequence[Sequence[EvalItem]],
    options: EvaluationOptions,
    *,
    save: Save,
    lookup: Lookup | None = None,
    on_item: Callable[[ItemOutcome], None] | None = None,
    halt: threading.Event | None = None,
    make_sink: Callable[[Callable[[list[ItemOutcome]], None]], ResultSink] = ResultSink,
) -> Evaluation:
    """``evaluate`` on the caller's event loop with agents it created (and closes): ``agents[a]``
    answers for ``arms[a]``. A distributed run's worker calls it for each chunk, so a chunk reuses
    and adds answers exactly as a local run does; ``make_sink`` chooses how outcomes are written."""
    keys: dict[tuple[int, int], CacheKey] = {}
    settings_shas = []
    for a, (arm, agent) in enumerate(zip(arms, agents, strict=True)):
        mode = str(getattr(agent, "output_mode", "unknown"))
        settings = answer_cache.settings_sha256(answer_cache.request_settings(arm.provider, arm.agent, arm.task, mode, arm.model_file))
        settings_shas.append(settings)
        for item in todo[a]:
            keys[(a, item.index)] = CacheKey(settings, answer_cache.messages_sha256(arm.agent, arm.task, mode, item.prompt), item.repeat)
    found = await asyncio.to_thread(lookup, keys.values()) if (lookup is not None and options.use_cache and keys) else {}

    def flush(batch: list[ItemOutcome]) -> None:
        fresh = [
            (keys[(o.arm, o.index)], CachedAnswer(o.output, o.input_tokens, o.output_tokens, o.latency_ms)) for o in batch if o.valid and not o.reused
        ]
        save(batch, fresh)

    sink = make_sink(flush)
    result = Evaluation(settings_sha256=tuple(settings_shas))
    work: list[WorkItem] = []
    for a, item in interleave(todo):
        answer = found.get(keys[(a, item.index)])
        if answer is None:
            work.append(WorkItem(item.index, item.input, item.prompt, a))
            continue
        outcome = reused_outcome(a, item, answer)
        sink.add(outcome)
        result.reused += 1
        if on_item is not None:
            on_item(outcome)
    policy = RetryPolicy(options.settings.max_retries, max_consecutive_failures=options.max_consecutive_failures)
    run = await execute(list(agents), work, concurrency=options.concurrency, policy=policy, sink=sink, on_item=on_item, halt=halt)
    result.processed, result.unanswered = run.processed, run.unanswered
    result.stopped_reason, result.last_transient_error = run.stopped_reason, run.last_transient_error
    return result
