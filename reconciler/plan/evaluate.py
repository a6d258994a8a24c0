"""`plan --evaluate`: answer a task's labelled inputs with the configuration an assignment would have
after the plan (built from the plan over the snapshot, never written) and with the one applied now,
and turn the answers into the behaviour diff (``plan/behaviour.py``).

The only thing written is the answer cache: an unchanged configuration evaluated again reuses its
answers and calls no model. Reads secrets (the providers' keys), so it is opt-in; `plan` without it
calls no model and reads no secret. Imported only when --evaluate is given (it loads the runner).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from reconciler.errors import ReconcilerError
from reconciler.kinds.base import plain_dump
from reconciler.plan.behaviour import BehaviourDiff, LiveConfig, behaviour_diff, changed_configs, configs_of, state_after, state_now

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from reconciler.llm.ports import ProviderConfig
    from reconciler.manifests.loader import ManifestSet
    from reconciler.plan.model import Plan
    from reconciler.runs.evaluate import EvalItem
    from reconciler.runs.runner import ItemOutcome
    from reconciler.state.snapshot import StateSnapshot

CHARS_PER_TOKEN = 4  # a rough count of a prompt's tokens, for the estimate before calling
DEFAULT_OUTPUT_TOKENS = 256  # an agent without max_tokens: what an answer is assumed to cost


@dataclass(frozen=True)
class EvaluateOptions:
    max_cost_usd: float | None = None  # refuse before calling when the estimate is above it
    notice: Callable[[str], None] = lambda text: None  # where the calls and cost estimate are told
    registry: Any = None  # the agent registry (tests); None: the process's
    use_cache: bool = True
    # a database with no answer cache yet (a new one): the answers are kept here instead, for an
    # apply to store once its commit has made the database (None: they are not kept)
    uncached: list[Any] | None = None


@dataclass(frozen=True)
class Target:
    """One assignment to evaluate: its configuration now (None: new) and after, and its task's evaluation."""

    before: LiveConfig | None
    after: LiveConfig
    evaluation: Any  # a Record of kinds.specs.TaskEvaluation
    inputs: list[dict[str, Any]]

    @property
    def configs(self) -> list[tuple[str, LiveConfig]]:
        return ([("before", self.before)] if self.before is not None else []) + [("after", self.after)]


def model_file(provider: ProviderConfig) -> dict[str, Any] | None:
    from reconciler.runs.service import model_file_of

    return model_file_of(provider)


def evaluation_tasks(manifests: ManifestSet) -> tuple[str, ...]:
    """The tasks (manifest names) that have an evaluation: a saved plan keeps them, so that applying it
    can tell an assignment that should have been evaluated."""
    return tuple(sorted(m.name for m in manifests.of_kind("Task") if m.spec.evaluation is not None))


def targets(plan: Plan, snapshot: StateSnapshot, manifests: ManifestSet) -> list[Target]:
    """The assignments whose configuration the plan creates or changes and whose task has an evaluation."""
    tasks = {m.name: m for m in manifests.of_kind("Task") if m.spec.evaluation is not None}
    if not tasks:
        return []
    before = configs_of(state_now(snapshot), model_file)
    after = configs_of(state_after(snapshot, plan), model_file)
    return [
        Target(b, a, tasks[a.task_name].spec.evaluation, tasks[a.task_name].resolved.get("evaluation_inputs") or [])
        for b, a in changed_configs(before, after)
        if a.task_name in tasks
    ]


def stale_evaluation(plan: Plan, snapshot: StateSnapshot) -> str | None:
    """Why a saved plan's evaluation does not hold for applying it over ``snapshot`` (None: it holds):
    an evaluated assignment would get another configuration than the one evaluated, or the plan
    changes the configuration of an assignment whose task has an evaluation without evaluating it
    (the file was edited, the bundled model changed)."""
    evaluated = {d.assignment: d.after.config_sha256 for d in plan.evaluations or ()}
    tasks = set(plan.evaluation_tasks) | {d.task for d in plan.evaluations or ()}
    after = configs_of(state_after(snapshot, plan), model_file)
    for name, sha in sorted(evaluated.items()):
        now = after[name].sha256 if name in after else None
        if now != sha:
            return (
                f"assignment {name!r}: the configuration this plan evaluated (sha256 {sha[:12]}) is not the one "
                f"applying it would give ({now[:12] if now else 'none'}); its evaluation does not hold"
            )
    for _, config in changed_configs(configs_of(state_now(snapshot), model_file), after):
        if config.task_name in tasks and config.assignment not in evaluated:
            return (
                f"assignment {config.assignment!r}: this plan changes its configuration (to sha256 {config.sha256[:12]}) but has no "
                f"evaluation of it, although its task {config.task_name!r} has one; the plan's evaluation does not cover it"
            )
    return None


# The adapter's output modes (part of an answer's cache key): which one a model takes is known only
# once its agent is made, so the look-up before calling tries each (a configuration has one).
OUTPUT_MODES = ("native", "prompted", "text", "plain")


def eval_items(target: Target) -> list[EvalItem]:
    """The items both configurations of ``target`` answer: its task's labelled inputs, rendered."""
    from reconciler.runs.service import work_items

    ev = target.evaluation
    spec = {"inputs": target.inputs, "prompt_template": ev.prompt_template, "expected": dict(ev.expected)}
    return work_items(f"the evaluation of task {target.after.task_name!r}", spec, set())


def cached_items(found: list[Target], cache: Engine) -> set[tuple[str, int]]:
    """(config SHA-256, item index) of every answer the answer cache already has, looked up before
    calling: those items are not sent, so they are neither counted nor priced."""
    from reconciler.runs import answer_cache

    keys: dict[answer_cache.CacheKey, tuple[str, int]] = {}
    for t in found:
        items = eval_items(t)
        for _, c in t.configs:
            for mode in OUTPUT_MODES:
                settings = answer_cache.settings_sha256(answer_cache.request_settings(c.provider, c.agent, c.task, mode, c.model_file))
                for item in items:
                    key = answer_cache.CacheKey(settings, answer_cache.messages_sha256(c.agent, c.task, mode, item.prompt), item.repeat)
                    keys[key] = (c.sha256, item.index)
    return {keys[k] for k in answer_cache.lookup(cache, keys)} if keys else set()


@dataclass(frozen=True)
class Estimate:
    calls: int  # model calls to make (retries aside)
    cached: int  # answers the answer cache gives instead
    cost_usd: float  # of the calls


def estimate(found: list[Target], cached: set[tuple[str, int]] | frozenset[tuple[str, int]] = frozenset()) -> Estimate:
    """The calls and their estimated cost before anything is sent: every item of every configuration
    but those in ``cached`` (``cached_items``), prompts at 4 characters a token and answers at max_tokens."""
    from reconciler.runs import metrics

    calls = reused = 0
    cost = 0.0
    for t in found:
        template = t.evaluation.prompt_template or ""
        items = eval_items(t)
        for _, c in t.configs:
            todo = [i for i in items if (c.sha256, i.index) not in cached]
            n = len(todo)
            prompt_chars = sum(len(template) + sum(len(str(v)) for v in i.input.values()) for i in todo)
            fixed = len(c.agent.system_prompt) + sum(len(e.input) + len(str(e.output)) for e in c.agent.examples)
            tokens_in = (prompt_chars + n * fixed) // CHARS_PER_TOKEN
            tokens_out = n * (c.agent.max_tokens or DEFAULT_OUTPUT_TOKENS)
            calls += n
            reused += len(items) - n
            cost += metrics.estimate_cost(c.provider.type, c.agent.model_name, c.agent.prices, tokens_in, tokens_out, base_url=c.provider.base_url)
    return Estimate(calls, reused, cost)


def _cache_engine(engine: Engine | None) -> Engine | None:
    """The database's answer cache, when it has one (plan creates nothing: a new database has none)."""
    if engine is None:
        return None
    from sqlalchemy import inspect

    from reconciler.state.tables import answer_cache

    with engine.connect() as conn:
        return engine if inspect(conn).has_table(answer_cache.name) else None


def _provider_with_key(label: str, config: LiveConfig, plan: Plan, snapshot: StateSnapshot, engine: Engine | None) -> ProviderConfig:
    """The provider with its key: after the plan, the one its manifest refers to (if the plan writes
    the provider); else the one stored in the database."""
    from reconciler.runs.service import with_secret

    key = ("Provider", config.provider_name)
    if label == "after":
        change = next((c for c in plan.changes if c.key == key and c.desired is not None), None)
        if change is not None:
            source = change.desired.get("_secret_source") if change.desired else None
            if source is None:
                return config.provider
            from reconciler.providers.secrets import resolve_secret

            return replace(config.provider, api_key=resolve_secret(source["ref"], source["manifest"], source["root"], config.provider_name))
    stored = snapshot.resources.get(key)
    token = stored.secret_ciphertext if stored is not None else None
    return with_secret(config.provider, token, engine.url if engine is not None else None)


def evaluate_plan(
    plan: Plan, snapshot: StateSnapshot, manifests: ManifestSet, engine: Engine | None, options: EvaluateOptions
) -> tuple[BehaviourDiff, ...]:
    """The behaviour diff of every assignment the plan changes whose task has an evaluation. Raises
    ReconcilerError before any call when the estimate is above ``max_cost_usd``, and when a model
    cannot be reached (an evaluation that did not finish gates nothing)."""
    found = targets(plan, snapshot, manifests)
    if not found:
        return ()
    cache = _cache_engine(engine)
    cached = cached_items(found, cache) if cache is not None and options.use_cache else set()
    est = estimate(found, cached)
    n = len(found)
    options.notice(
        f"Evaluating {n} assignment{'s' if n != 1 else ''}: {est.calls} model call{'s' if est.calls != 1 else ''} "
        f"({est.cached} answer{'s' if est.cached != 1 else ''} from the cache), estimated cost ${est.cost_usd:.4f}."
    )
    if options.max_cost_usd is not None and est.cost_usd > options.max_cost_usd:
        raise ReconcilerError(
            f"the evaluation would cost about ${est.cost_usd:.4f} ({est.calls} calls, {est.cached} answers from the cache), "
            f"more than --max-eval-cost ${options.max_cost_usd:g}; nothing was called",
            hint="raise --max-eval-cost, evaluate on fewer labelled inputs, or on a local provider",
        )
    return tuple(_evaluate(t, plan, snapshot, engine, cache, options) for t in found)


def _evaluate(
    target: Target, plan: Plan, snapshot: StateSnapshot, engine: Engine | None, cache: Engine | None, options: EvaluateOptions
) -> BehaviourDiff:
    from reconciler.llm.ports import ExecutionSettings, LLMError
    from reconciler.runs import answer_cache
    from reconciler.runs.evaluate import Arm, EvaluationOptions, evaluate

    ev = target.evaluation
    name = target.after.assignment
    expected = dict(ev.expected)
    items = eval_items(target)
    configs = target.configs
    arms = [Arm(label, c.agent, c.task, _provider_with_key(label, c, plan, snapshot, engine), c.model_file) for label, c in configs]
    outcomes: list[list[ItemOutcome]] = [[] for _ in arms]

    def save(batch: list[ItemOutcome], answers: list[Any]) -> None:
        for o in batch:
            if not o.transient:
                outcomes[o.arm].append(o)
        if cache is not None and answers:
            answer_cache.store(cache, answers)
        elif options.uncached is not None:
            options.uncached.extend(answers)

    settings = ExecutionSettings(max_retries=ev.max_retries, timeout_seconds=ev.timeout_seconds)
    try:
        result = evaluate(
            arms,
            [items] * len(arms),
            EvaluationOptions(ev.concurrency, settings, options.use_cache),
            save=save,
            lookup=partial(answer_cache.lookup, cache) if cache is not None else None,
            registry=options.registry,
        )
    except LLMError as exc:
        raise ReconcilerError(f"cannot evaluate assignment {name!r}: {exc}", hint="check the provider (reconciler providers check)") from None
    if result.stopped_reason is not None or result.unanswered:
        reason = result.stopped_reason or f"{result.unanswered} items got only transient errors (last: {result.last_transient_error})"
        raise ReconcilerError(
            f"the evaluation of assignment {name!r} did not finish: {reason}",
            hint="an unfinished evaluation gates nothing: make the provider reachable and evaluate again "
            "(the answers given so far are kept in the answer cache)",
        )
    return behaviour_diff(name, target.after.task_name, plain_dump(ev.gate, exclude_none=True), _report(target, configs, outcomes, expected))


def _report(target: Target, configs: list[tuple[str, LiveConfig]], outcomes: list[list[ItemOutcome]], expected: dict[str, str]) -> Any:
    from reconciler.runs import metrics
    from reconciler.runs.experiment_report import ArmData, StoredAnswer, build_report

    arms = []
    for (label, c), done in zip(configs, outcomes, strict=True):
        tokens_in, tokens_out = sum(o.input_tokens for o in done), sum(o.output_tokens for o in done)
        cost = metrics.estimate_cost(c.provider.type, c.agent.model_name, c.agent.prices, tokens_in, tokens_out, base_url=c.provider.base_url)
        answers = [StoredAnswer(o.index, o.output, o.valid, o.latency_ms, o.reused, o.error) for o in done]
        arms.append(ArmData(label, c.sha256, answers, tokens_in, tokens_out, cost))
    return build_report(
        name=target.after.assignment,
        status="completed",
        task=target.after.task_name,
        baseline=configs[0][0],
        arms=arms,
        inputs=target.inputs,
        expected=expected,
        prompt_template=target.evaluation.prompt_template,
    )


def with_last_evaluation(engine: Engine, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`get assignments` rows with the accuracy last measured for each one's live configuration (by
    an apply that evaluated it) and when; "-" when it never was."""
    from reconciler.kinds.base import iso
    from reconciler.state.history import last_evaluations
    from reconciler.state.snapshot import load_snapshot

    live = configs_of(state_now(load_snapshot(engine)), model_file)
    found = last_evaluations(engine, {(name, c.sha256) for name, c in live.items()})
    out = []
    for row in rows:
        config = live.get(row["name"])
        measured = found.get((row["name"], config.sha256)) if config is not None else None
        accuracy = measured.get("accuracy") if measured else None
        out.append(
            {
                **row,
                "accuracy": "-" if accuracy is None else f"{accuracy:.0%}",
                "measured_at": iso(measured["measured_at"]) if measured else "-",
                "config_sha256": config.sha256 if config is not None else None,
                "evaluation": None if measured is None else {k: iso(v) for k, v in measured.items()},
            }
        )
    return out
