"""The behaviour diff of a plan: what a changed configuration of an assignment answers, against what
the applied one answers, on the task's labelled inputs, and the task's gates over it.

Pure functions over values, no I/O and no model calls (``plan/evaluate.py`` calls the models): the
configuration each assignment has before and after a plan (``configs_now``, ``configs_after``),
the figures of an evaluation (``behaviour_diff``, from the experiment report of the two arms), the
gates (``check_gates``) and the text and markdown shown beside the field diff. A plan carries the
``BehaviourDiff`` values it was evaluated with (``Plan.evaluations``), so a saved plan keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.llm.ports import AgentConfig, ProviderConfig, TaskConfig
    from reconciler.plan.model import Plan
    from reconciler.runs.experiment_report import ExperimentReport
    from reconciler.state.snapshot import StateSnapshot

ResourceKey = tuple[str, str]
EPSILON = 1e-9  # 11/20 is 0.55: a figure on the line passes


class Gate(StrEnum):
    """The gates a task's ``evaluation.gate`` may set, in the order they are checked and shown."""

    MIN_ACCURACY = "min_accuracy"
    MAX_DROP = "max_drop"
    MIN_VALID = "min_valid"


# -- the configurations an assignment has before and after a plan ---------------------------------


@dataclass(frozen=True)
class StateEntry:
    """One resource as the configuration reads it: its essence and the name its row has."""

    essence: dict[str, Any]
    row_name: str


@dataclass(frozen=True)
class LiveConfig:
    """An assignment's resolved configuration: what its runs would send, and the hash a run records."""

    assignment: str
    task_name: str  # the task's manifest name (where its evaluation is)
    provider_name: str  # the provider's manifest name (where its key is)
    agent: AgentConfig
    task: TaskConfig
    provider: ProviderConfig
    model_file: dict[str, Any] | None
    sha256: str


ModelFile = Callable[["ProviderConfig"], "dict[str, Any] | None"]


def configs_of(state: Mapping[ResourceKey, StateEntry], model_file: ModelFile) -> dict[str, LiveConfig]:
    """Assignment name -> its resolved configuration, as ``runs.store.resolve_assignment`` reads it
    after an apply (an assignment whose agent, task or provider is missing has none)."""
    from reconciler.kinds.agent import agent_config
    from reconciler.kinds.provider import provider_config
    from reconciler.llm.ports import TaskConfig
    from reconciler.runs import metrics

    out = {}
    for (kind, name), entry in state.items():
        if kind != "Assignment":
            continue
        agent = state.get(("Agent", str(entry.essence.get("agent"))))
        task = state.get(("Task", str(entry.essence.get("task"))))
        provider = state.get(("Provider", str(agent.essence.get("provider")))) if agent is not None else None
        if agent is None or task is None or provider is None:
            continue
        agent_port = agent_config(agent.row_name, agent.essence, agent.essence)
        task_port = TaskConfig(name=task.row_name, response_schema=task.essence.get("response_schema") or {})
        provider_port = provider_config(provider.row_name, provider.essence, provider.essence)
        file = model_file(provider_port)
        sha = metrics.snapshot_sha256(metrics.config_snapshot(provider_port, agent_port, task_port, file))
        out[name] = LiveConfig(name, entry.essence["task"], agent.essence["provider"], agent_port, task_port, provider_port, file, sha)
    return out


def state_now(snapshot: StateSnapshot) -> dict[ResourceKey, StateEntry]:
    return {key: StateEntry(r.essence, r.db_name) for key, r in snapshot.resources.items()}


def state_after(snapshot: StateSnapshot, plan: Plan) -> dict[ResourceKey, StateEntry]:
    """The state once ``plan`` is applied: its creates and updates over the snapshot, its deletes gone."""
    from reconciler.kinds import BY_NAME
    from reconciler.kinds.base import row_name
    from reconciler.plan.model import Action

    state = state_now(snapshot)
    for c in plan.changes:
        if c.action is Action.DELETE:
            state.pop(c.key, None)
            continue
        essence = {k: v for k, v in (c.desired or {}).items() if not k.startswith("_")}
        name = row_name(c.name, c.annotations) if BY_NAME[c.kind].keeps_row_names else c.name
        state[c.key] = StateEntry(essence, name)
    return state


def changed_configs(before: Mapping[str, LiveConfig], after: Mapping[str, LiveConfig]) -> list[tuple[LiveConfig | None, LiveConfig]]:
    """(before or None for a new assignment, after) of every assignment whose configuration a plan creates or changes."""
    return [(before.get(name), config) for name, config in sorted(after.items()) if name not in before or before[name].sha256 != config.sha256]


# -- the figures and the gates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """One configuration's answers to the labelled inputs."""

    config_sha256: str
    items: int
    valid: int
    correct: int
    accuracy: float | None
    accuracy_ci95: tuple[float, float] | None
    latency_p50_ms: float | None
    cost_usd: float
    cost_per_1k_items_usd: float | None
    reused: int  # answers taken from the answer cache (no model call)

    @property
    def valid_rate(self) -> float | None:
        return self.valid / self.items if self.items else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config_sha256": self.config_sha256,
            "items": self.items,
            "valid": self.valid,
            "valid_rate": None if self.valid_rate is None else round(self.valid_rate, 6),
            "correct": self.correct,
            "accuracy": self.accuracy,
            "accuracy_ci95": None if self.accuracy_ci95 is None else list(self.accuracy_ci95),
            "latency_p50_ms": self.latency_p50_ms,
            "cost_usd": self.cost_usd,
            "cost_per_1k_items_usd": self.cost_per_1k_items_usd,
            "reused": self.reused,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Figures:
        ci = d.get("accuracy_ci95")
        return cls(
            d["config_sha256"],
            d["items"],
            d["valid"],
            d["correct"],
            d.get("accuracy"),
            (ci[0], ci[1]) if ci else None,
            d.get("latency_p50_ms"),
            d.get("cost_usd", 0.0),
            d.get("cost_per_1k_items_usd"),
            d.get("reused", 0),
        )


@dataclass(frozen=True)
class ItemChange:
    """A labelled input one configuration got right and the other wrong."""

    index: int
    prompt: str
    expected: Any
    before: str | None  # the answer compared (None: no valid answer)
    after: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "prompt": self.prompt, "expected": self.expected, "before": self.before, "after": self.after}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ItemChange:
        return cls(d["index"], d["prompt"], d.get("expected"), d.get("before"), d.get("after"))


@dataclass(frozen=True)
class GateVerdict:
    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class BehaviourDiff:
    """What a plan changes in one assignment's behaviour, and whether its task's gates let it through."""

    assignment: str
    task: str
    before: Figures | None  # None: a new assignment
    after: Figures
    accuracy_diff: float | None = None  # after minus before, over the same items
    mcnemar_p: float | None = None
    regressed: tuple[ItemChange, ...] = ()
    improved: tuple[ItemChange, ...] = ()
    gates: tuple[GateVerdict, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed_gates(self) -> tuple[GateVerdict, ...]:
        return tuple(g for g in self.gates if not g.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "assignment": self.assignment,
            "task": self.task,
            "before": None if self.before is None else self.before.to_dict(),
            "after": self.after.to_dict(),
            "accuracy_diff": self.accuracy_diff,
            "mcnemar_p": self.mcnemar_p,
            "regressed": [i.to_dict() for i in self.regressed],
            "improved": [i.to_dict() for i in self.improved],
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BehaviourDiff:
        return cls(
            d["assignment"],
            d["task"],
            None if d.get("before") is None else Figures.from_dict(d["before"]),
            Figures.from_dict(d["after"]),
            d.get("accuracy_diff"),
            d.get("mcnemar_p"),
            tuple(ItemChange.from_dict(i) for i in d.get("regressed", [])),
            tuple(ItemChange.from_dict(i) for i in d.get("improved", [])),
            tuple(GateVerdict(g["name"], bool(g["passed"]), g["detail"]) for g in d.get("gates", [])),
        )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _points(value: float) -> str:
    return f"{abs(value) * 100:.0f} point{'s' if round(abs(value) * 100) != 1 else ''}"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def check_gates(gate: Mapping[str, Any], before: Figures | None, after: Figures, mcnemar_p: float | None) -> tuple[GateVerdict, ...]:
    """The verdict of each gate ``gate`` sets (``evaluation.gate`` as written), in ``Gate`` order.

    ``max_drop`` compares with the applied configuration (a new assignment has none: it passes);
    with ``significance``, a fall beyond it counts only when McNemar's p is below it, so a few
    answers that flipped by chance on a small set do not block a change."""
    verdicts = []
    floor = gate.get(Gate.MIN_ACCURACY)
    if floor is not None:
        acc = after.accuracy
        if acc is None:
            verdicts.append(GateVerdict(Gate.MIN_ACCURACY, False, "no answer was scored"))
        elif acc + EPSILON >= floor:
            verdicts.append(GateVerdict(Gate.MIN_ACCURACY, True, f"accuracy {_pct(acc)} ≥ {_pct(floor)}"))
        else:
            verdicts.append(GateVerdict(Gate.MIN_ACCURACY, False, f"accuracy {_pct(acc)} is {_points(floor - acc)} below the floor {_pct(floor)}"))
    allowed = gate.get(Gate.MAX_DROP)
    if allowed is not None:
        verdicts.append(_drop_verdict(allowed, gate.get("significance"), before, after, mcnemar_p))
    least = gate.get(Gate.MIN_VALID)
    if least is not None:
        rate = after.valid_rate
        if rate is not None and rate + EPSILON >= least:
            verdicts.append(GateVerdict(Gate.MIN_VALID, True, f"valid answers {_pct(rate)} ≥ {_pct(least)}"))
        else:
            short = f" is {_points(least - rate)} below" if rate is not None else " below"
            verdicts.append(GateVerdict(Gate.MIN_VALID, False, f"valid answers {_pct(rate)}{short} the floor {_pct(least)}"))
    return tuple(verdicts)


def _drop_verdict(allowed: float, significance: float | None, before: Figures | None, after: Figures, p: float | None) -> GateVerdict:
    if before is None or before.accuracy is None:
        return GateVerdict(Gate.MAX_DROP, True, "a new assignment: no applied configuration to compare with")
    if after.accuracy is None:
        return GateVerdict(Gate.MAX_DROP, False, "no answer of the new configuration was scored")
    drop = before.accuracy - after.accuracy
    moved = f"accuracy {_pct(before.accuracy)} → {_pct(after.accuracy)}"
    if drop <= EPSILON:
        return GateVerdict(Gate.MAX_DROP, True, f"{moved}: no fall")
    if drop <= allowed + EPSILON:
        return GateVerdict(Gate.MAX_DROP, True, f"{moved}: fell {_points(drop)}, within the {_points(allowed)} allowed")
    beyond = f"{moved}: fell {_points(drop)}, {_points(drop - allowed)} more than the {_points(allowed)} allowed"
    if significance is not None:
        if p is None or p >= significance:
            return GateVerdict(Gate.MAX_DROP, True, f"{beyond}, but McNemar p = {_p(p)} ≥ {significance:g}: not told apart from noise")
        return GateVerdict(Gate.MAX_DROP, False, f"{beyond} (McNemar p = {_p(p)} < {significance:g})")
    return GateVerdict(Gate.MAX_DROP, False, beyond)


def behaviour_diff(assignment: str, task: str, gate: Mapping[str, Any], report: ExperimentReport) -> BehaviourDiff:
    """The behaviour diff from the experiment report of the arms ``before`` (absent for a new
    assignment) and ``after``, with the verdict of ``gate``."""
    arms = {arm["agent"]: arm for arm in report.data["arms"]}
    before = _figures(arms["before"]) if "before" in arms else None
    after = _figures(arms["after"])
    comparison = next(iter(report.data["comparisons"]), None)
    p = comparison["mcnemar_p"] if comparison else None
    changes: dict[str, tuple[ItemChange, ...]] = {}
    for label in ("regressed", "improved"):
        indexes = comparison[label] if comparison else []
        changes[label] = tuple(
            ItemChange(i, report.prompts[i], report.expected_values[i], report.answers["before"][i], report.answers["after"][i]) for i in indexes
        )
    diff = comparison["accuracy_diff"] if comparison else None
    return BehaviourDiff(assignment, task, before, after, diff, p, changes["regressed"], changes["improved"], check_gates(gate, before, after, p))


def _figures(arm: dict[str, Any]) -> Figures:
    ci = arm["accuracy_ci95"]
    return Figures(
        arm["config_sha256"],
        arm["items"],
        arm["valid"],
        arm["correct"] or 0,
        arm["accuracy"],
        (ci[0], ci[1]) if ci else None,
        arm["latency_ms"]["p50"],
        arm["cost_usd"],
        arm["cost_per_1k_items_usd"],
        arm["reused"],
    )


def gate_problems(evaluations: tuple[BehaviourDiff, ...], applying: bool = False) -> list[Any]:
    """One problem per failed gate: which assignment, which gate, by how much."""
    from reconciler.errors import Problem

    hint = (
        "fix the configuration (the items that regressed are listed above), or apply it anyway with --ignore-gates (recorded in the history)"
        if applying
        else "fix the configuration (the items that regressed are listed above); `apply --evaluate --ignore-gates` applies it anyway"
    )
    return [
        Problem(f"assignment {d.assignment!r}: gate {g.name} failed: {g.detail}", hint=hint) for d in evaluations for g in d.gates if not g.passed
    ]


# -- rendering --------------------------------------------------------------------------------------

MAX_ITEMS = 10


def _interval(f: Figures | None) -> str:
    if f is None:
        return "-"
    if f.accuracy is None or f.accuracy_ci95 is None:
        return _pct(f.accuracy)
    low, high = f.accuracy_ci95
    return f"{_pct(f.accuracy)} ({_pct(low)}–{_pct(high)})"


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    return "$0" if value == 0 else f"${value:.4f}" if value >= 0.01 else f"${value:.6f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _rows(d: BehaviourDiff) -> list[tuple[str, str, str]]:
    b, a = d.before, d.after
    return [
        ("accuracy (95% CI)", _interval(b), _interval(a)),
        ("valid answers", "-" if b is None else _pct(b.valid_rate), _pct(a.valid_rate)),
        ("cost per 1,000 items", "-" if b is None else _money(b.cost_per_1k_items_usd), _money(a.cost_per_1k_items_usd)),
        ("p50 latency", "-" if b is None else _ms(b.latency_p50_ms), _ms(a.latency_p50_ms)),
        ("config sha256", "-" if b is None else b.config_sha256[:12], a.config_sha256[:12]),
    ]


def _change_line(c: ItemChange) -> str:
    prompt = " ".join(c.prompt.split())
    prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
    return f"#{c.index} {prompt} — expected {c.expected}: before {c.before or '(no answer)'}, after {c.after or '(no answer)'}"


def _comparison(d: BehaviourDiff) -> str:
    if d.before is None:
        return "a new assignment: nothing applied to compare with"
    if d.accuracy_diff is None:
        return "no paired items scored"
    return f"accuracy {d.accuracy_diff * 100:+.0f} points, McNemar exact p = {_p(d.mcnemar_p)}"


def _title(d: BehaviourDiff) -> str:
    items = d.after.items
    return f"assignment {d.assignment} (task {d.task}, {items} labelled input{'s' if items != 1 else ''})"


def render_text(evaluations: tuple[BehaviourDiff, ...]) -> str:
    """The behaviour diff for people, after the field diff."""
    if not evaluations:
        return "Behaviour: no assignment whose task has an evaluation changes configuration.\n"
    lines = ["Behaviour (evaluated before → after):"]
    for d in evaluations:
        lines += ["", f"  {'✓' if d.passed else '✗'} {_title(d)}"]
        width = max(len(r[0]) for r in _rows(d))
        lines += [f"      {label.ljust(width)}  {old} → {new}" for label, old, new in _rows(d)]
        lines.append(f"      {_comparison(d)}")
        for label, items in (("regressed", d.regressed), ("improved", d.improved)):
            if items:
                lines.append(f"      {label} ({len(items)}):")
                lines += [f"        {_change_line(c)}" for c in items[:MAX_ITEMS]]
                if len(items) > MAX_ITEMS:
                    lines.append(f"        … {len(items) - MAX_ITEMS} more (--json lists them all)")
        for g in d.gates:
            lines.append(f"      gate {g.name}: {'passed' if g.passed else 'FAILED'} — {g.detail}")
    lines += ["", summary_line(evaluations)]
    return "\n".join(lines) + "\n"


def summary_line(evaluations: tuple[BehaviourDiff, ...]) -> str:
    failed = sum(1 for d in evaluations if not d.passed)
    n = len(evaluations)
    return f"Evaluation: {n} assignment{'s' if n != 1 else ''} evaluated, " + (
        f"{failed} failed {'its' if failed == 1 else 'their'} gates." if failed else "every gate passed."
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(evaluations: tuple[BehaviourDiff, ...]) -> str:
    """For a pull-request comment: per assignment a before/after table, the gates, the changed items."""
    lines = ["#### Behaviour", ""]
    if not evaluations:
        return "\n".join([*lines, "No assignment whose task has an evaluation changes configuration."]) + "\n"
    for d in evaluations:
        lines += [f"**{'✅' if d.passed else '❌'} {_cell(_title(d))}**: {_comparison(d)}", "", "| | before | after |", "| --- | ---: | ---: |"]
        lines += [f"| {label} | {_cell(old)} | {_cell(new)} |" for label, old, new in _rows(d)]
        lines.append("")
        lines += [f"- {'✅' if g.passed else '❌'} `{g.name}`: {_cell(g.detail)}" for g in d.gates]
        for label, items in (("Regressed", d.regressed), ("Improved", d.improved)):
            if items:
                lines += ["", f"<details><summary>{label}: {len(items)} items</summary>", ""]
                lines += [f"- {_cell(_change_line(c))}" for c in items[:MAX_ITEMS]]
                if len(items) > MAX_ITEMS:
                    lines.append(f"- … {len(items) - MAX_ITEMS} more")
                lines += ["", "</details>"]
        lines.append("")
    lines.append(f"**{summary_line(evaluations)}**")
    return "\n".join(lines) + "\n"
