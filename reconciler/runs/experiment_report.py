"""An experiment's report: per arm accuracy with its interval, latency, tokens and cost; against the
baseline the paired comparison (McNemar) and the items that regressed and improved. Pure functions
from stored results to a document (its JSON form is documented in docs/experiments.md) and to text
and markdown; no I/O.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.kinds.expected import expected_fields
from reconciler.runs import metrics, stats


@dataclass(frozen=True)
class StoredAnswer:
    index: int  # input i, repeat r: i * repeats + r
    output: Any
    valid: bool
    latency_ms: float | None
    reused: bool
    error: str | None = None  # why a failed answer failed


@dataclass(frozen=True)
class ArmData:
    agent: str
    config_sha256: str | None
    answers: Sequence[StoredAnswer]
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class ExperimentReport:
    data: dict[str, Any]  # the JSON document
    inputs: list[Any]
    expected_values: list[Any]  # per input, None without expected
    prompts: list[str] = field(default_factory=list)  # per input, as the model saw it
    answers: dict[str, list[str | None]] = field(default_factory=dict)  # agent -> per input its (most common) answer
    latencies: dict[str, list[float]] = field(default_factory=dict)  # agent -> every answer's latency (the plot)
    failures: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # agent -> (stored index, error) of failed answers


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _modal(values: Sequence[str | None]) -> str | None:
    if len(values) == 1:
        return values[0]
    given = Counter(v for v in values if v is not None)
    return given.most_common(1)[0][0] if given else None


def build_report(
    *,
    name: str,
    status: str,
    task: str | None,
    baseline: str,
    arms: Sequence[ArmData],
    inputs: Sequence[Any],
    expected: Any,
    repeats: int = 1,
    error: str | None = None,
    prompt_template: str | None = None,
) -> ExperimentReport:
    """The report of an experiment from its arms' stored answers (the baseline is one of the arms)."""
    fields = expected_fields(expected)
    n = len(inputs)
    truth = [metrics.comparable(metrics.expected_value(item, expected)) for item in inputs] if fields else [None] * n
    per_arm: dict[str, dict[str, Any]] = {}
    answers: dict[str, list[str | None]] = {}
    rights: dict[str, list[bool | None]] = {}  # per input: right by majority of its repeats; None while unfinished
    latencies: dict[str, list[float]] = {}
    failures: dict[str, list[tuple[int, str]]] = {}
    documents = []
    for arm in arms:
        by_input: list[list[tuple[str | None, bool]]] = [[] for _ in range(n)]
        latency: list[float] = []
        valid = failed = correct = reused = 0
        for a in arm.answers:
            i = a.index // repeats
            if not 0 <= i < n:
                continue
            answer = metrics.comparable(metrics.answer_of(a.output, fields[1] if fields else "")) if a.valid else None
            right = bool(fields) and a.valid and answer is not None and answer == truth[i]
            by_input[i].append((answer, right))
            valid += a.valid
            failed += not a.valid
            correct += right
            reused += a.reused
            if a.latency_ms is not None:
                latency.append(a.latency_ms)
            if not a.valid:
                failures.setdefault(arm.agent, []).append((a.index, a.error or "no reason recorded"))
        finished = valid + failed
        complete = [len(x) == repeats for x in by_input]
        answers[arm.agent] = [_modal([v for v, _ in x]) if x else None for x in by_input]
        rights[arm.agent] = [stats.majority_right([r for _, r in x]) if done else None for x, done in zip(by_input, complete, strict=True)]
        latencies[arm.agent] = latency
        accuracy = correct / finished if fields and finished else None
        ci = stats.wilson_interval(correct, finished) if fields and finished else None
        repeated = repeats > 1
        document = {
            "agent": arm.agent,
            "config_sha256": arm.config_sha256,
            "items": n * repeats,
            "valid": valid,
            "failed": failed,
            "correct": correct if fields else None,
            "accuracy": _round(accuracy),
            "accuracy_ci95": [_round(ci[0]), _round(ci[1])] if ci else None,
            "latency_ms": {
                "mean": _round(stats.mean(latency), 1),
                "p50": _round(stats.percentile(latency, 50), 1),
                "p95": _round(stats.percentile(latency, 95), 1),
            },
            "input_tokens": arm.input_tokens,
            "output_tokens": arm.output_tokens,
            "cost_usd": _round(arm.cost_usd, 8),
            "cost_per_1k_items_usd": _round(arm.cost_usd / finished * 1000, 8) if finished else None,
            "reused": reused,
            "consistency": _round(stats.mean([c for x in by_input if len(x) == repeats and (c := stats.consistency([v for v, _ in x])) is not None]))
            if repeated
            else None,
            "pass_k": _round(stats.pass_hat_k([[r for _, r in x] for x in by_input if len(x) == repeats])) if repeated and fields else None,
        }
        per_arm[arm.agent] = document
        documents.append(document)
    comparisons = [_compare(agent, baseline, answers, rights, bool(fields)) for agent in (a.agent for a in arms) if agent != baseline]
    data = {
        "name": name,
        "status": status,
        "task": task,
        "baseline": baseline,
        "repeats": repeats,
        "error": error,
        "arms": documents,
        "comparisons": comparisons,
    }
    return ExperimentReport(
        data,
        list(inputs),
        [metrics.expected_value(item, expected) for item in inputs],
        _prompts(inputs, prompt_template, expected),
        answers,
        latencies,
        {agent: sorted(found) for agent, found in failures.items()},
    )


def _prompts(inputs: Sequence[Any], template: str | None, expected: Any) -> list[str]:
    out = []
    for item in inputs:
        try:
            out.append(metrics.render_prompt(item, template, expected) if isinstance(item, dict) else str(item))
        except (KeyError, IndexError, ValueError):
            out.append(json.dumps(item, ensure_ascii=False, sort_keys=True, default=str))
    return out


def _compare(agent: str, baseline: str, answers: dict[str, list[str | None]], rights: dict[str, list[bool | None]], scored: bool) -> dict[str, Any]:
    """The agent against the baseline over the inputs both have finished (every repeat)."""
    both = [i for i, (a, b) in enumerate(zip(rights[agent], rights[baseline], strict=True)) if a is not None and b is not None]
    agreement = stats.agreement([answers[agent][i] for i in both], [answers[baseline][i] for i in both])
    if not scored:
        return {
            "agent": agent,
            "baseline": baseline,
            "accuracy_diff": None,
            "mcnemar_p": None,
            "both_right": None,
            "only_agent_right": None,
            "only_baseline_right": None,
            "both_wrong": None,
            "agreement": _round(agreement),
            "improved": [],
            "regressed": [],
        }
    a_right = [bool(rights[agent][i]) for i in both]
    b_right = [bool(rights[baseline][i]) for i in both]
    table = stats.paired_counts(a_right, b_right)
    return {
        "agent": agent,
        "baseline": baseline,
        "accuracy_diff": _round(table.accuracy_diff),
        "mcnemar_p": _round(table.mcnemar_p, 8) if table.n else None,
        "both_right": table.both_right,
        "only_agent_right": table.only_a_right,
        "only_baseline_right": table.only_b_right,
        "both_wrong": table.both_wrong,
        "agreement": _round(agreement),
        "improved": [i for i, a, b in zip(both, a_right, b_right, strict=True) if a and not b],
        "regressed": [i for i, a, b in zip(both, a_right, b_right, strict=True) if b and not a],
    }


# -- rendering ------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _interval(arm: dict[str, Any]) -> str:
    if arm["accuracy"] is None:
        return "-"
    low, high = arm["accuracy_ci95"]
    return f"{arm['accuracy']:.0%} ({low:.0%}–{high:.0%})"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    return "$0" if value == 0 else f"${value:.4f}" if value >= 0.01 else f"${value:.6f}"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _diff(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.0f} points"


def _short(text: Any, limit: int = 72) -> str:
    value = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, sort_keys=True)
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _arm_rows(report: ExperimentReport) -> tuple[list[str], list[list[str]]]:
    repeated = report.data["repeats"] > 1
    header = ["agent", "items", "valid", "failed", "correct", "accuracy (95% CI)", "p50 ms", "p95 ms", "tokens", "cost", "cost/1k", "reused"]
    if repeated:
        header += ["consistency", "pass^k"]
    header.append("config")
    rows = []
    for arm in report.data["arms"]:
        name = arm["agent"] + (" (baseline)" if arm["agent"] == report.data["baseline"] else "")
        row = [
            name,
            str(arm["items"]),
            str(arm["valid"]),
            str(arm["failed"]),
            "-" if arm["correct"] is None else str(arm["correct"]),
            _interval(arm),
            _ms(arm["latency_ms"]["p50"]),
            _ms(arm["latency_ms"]["p95"]),
            f"{arm['input_tokens'] + arm['output_tokens']:,}",
            _money(arm["cost_usd"]),
            _money(arm["cost_per_1k_items_usd"]),
            str(arm["reused"]),
        ]
        if repeated:
            row += [_pct(arm["consistency"]), _pct(arm["pass_k"])]
        row.append((arm["config_sha256"] or "")[:12] or "-")
        rows.append(row)
    return header, rows


def _item_line(report: ExperimentReport, index: int, agent: str, baseline: str) -> str:
    shown = report.prompts[index] if index < len(report.prompts) else report.inputs[index]
    expected = report.expected_values[index]
    return (
        f"#{index} {_short(shown)} — expected {expected!s}: {baseline} {report.answers[baseline][index] or '(no answer)'}, "
        f"{agent} {report.answers[agent][index] or '(no answer)'}"
    )


def _failure_line(report: ExperimentReport, index: int, error: str) -> str:
    repeats = report.data["repeats"]
    item = index // repeats
    where = f"#{item}" + (f" (repeat {index % repeats})" if repeats > 1 else "")
    prompt = report.prompts[item] if item < len(report.prompts) else ""
    return f"{where} {_short(prompt, 48)} — {_short(error, 120)}"


def _verdict(c: dict[str, Any]) -> str:
    if c["mcnemar_p"] is None:
        return "no paired items scored yet"
    if c["mcnemar_p"] < 0.05:
        return "a real difference (p < 0.05)"
    return "not distinguishable from noise at this size (p ≥ 0.05)"


def render_text(report: ExperimentReport, max_items: int = 20) -> str:
    d = report.data
    lines = [
        f"Experiment {d['name']}: {d['status']} (task {d['task']}, {len(report.inputs)} inputs"
        + (f" × {d['repeats']} repeats" if d["repeats"] > 1 else "")
        + f", baseline {d['baseline']})",
    ]
    if d["error"]:
        lines.append(f"  {d['error']}")
    header, rows = _arm_rows(report)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines += ["", "  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for agent, failed in report.failures.items():
        lines += ["", f"failed answers of {agent} ({len(failed)}):"]
        lines += [f"  {_failure_line(report, index, error)}" for index, error in failed[:max_items]]
        if len(failed) > max_items:
            lines.append(f"  … {len(failed) - max_items} more")
    for c in d["comparisons"]:
        lines += ["", f"{c['agent']} vs {c['baseline']}:"]
        if c["both_right"] is None:
            lines.append(f"  agreement {_pct(c['agreement'])} (no expected answers: nothing scored)")
            continue
        lines.append(f"  accuracy {_diff(c['accuracy_diff'])}, McNemar exact p = {_p(c['mcnemar_p'])}: {_verdict(c)}")
        lines.append(
            f"  both right {c['both_right']}, only {c['agent']} {c['only_agent_right']}, only {c['baseline']} {c['only_baseline_right']}, "
            f"both wrong {c['both_wrong']}; agreement {_pct(c['agreement'])}"
        )
        for label, indexes in (("regressed", c["regressed"]), ("improved", c["improved"])):
            if not indexes:
                continue
            lines.append(f"  {label} ({len(indexes)}):")
            lines += [f"    {_item_line(report, i, c['agent'], c['baseline'])}" for i in indexes[:max_items]]
            if len(indexes) > max_items:
                lines.append(f"    … {len(indexes) - max_items} more (-o json lists them all)")
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: ExperimentReport, max_items: int = 20) -> str:
    """For a pull-request comment: a table of the arms, then each comparison with its items in a <details>."""
    d = report.data
    lines = [
        f"### Experiment `{d['name']}`: {d['status']}",
        "",
        f"Task `{d['task']}`, {len(report.inputs)} inputs"
        + (f" × {d['repeats']} repeats" if d["repeats"] > 1 else "")
        + f", baseline `{d['baseline']}`."
        + (f" {d['error']}" if d["error"] else ""),
        "",
    ]
    header, rows = _arm_rows(report)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in rows]
    for agent, failed in report.failures.items():
        lines += ["", f"<details><summary>Failed answers of <code>{agent}</code>: {len(failed)}</summary>", ""]
        lines += [f"- {_md_cell(_failure_line(report, index, error))}" for index, error in failed[:max_items]]
        if len(failed) > max_items:
            lines.append(f"- … {len(failed) - max_items} more")
        lines += ["", "</details>"]
    for c in d["comparisons"]:
        lines += ["", f"**`{c['agent']}` vs `{c['baseline']}`**: "]
        if c["both_right"] is None:
            lines[-1] += f"agreement {_pct(c['agreement'])} (no expected answers)."
            continue
        lines[-1] += (
            f"accuracy {_diff(c['accuracy_diff'])}, McNemar exact p = {_p(c['mcnemar_p'])}: {_verdict(c)}. "
            f"Both right {c['both_right']}, only `{c['agent']}` {c['only_agent_right']}, only `{c['baseline']}` "
            f"{c['only_baseline_right']}, both wrong {c['both_wrong']}; agreement {_pct(c['agreement'])}."
        )
        for label, indexes in (("Regressed", c["regressed"]), ("Improved", c["improved"])):
            if not indexes:
                continue
            lines += ["", f"<details><summary>{label}: {len(indexes)} items</summary>", ""]
            lines += [f"- {_md_cell(_item_line(report, i, c['agent'], c['baseline']))}" for i in indexes[:max_items]]
            if len(indexes) > max_items:
                lines.append(f"- … {len(indexes) - max_items} more")
            lines += ["", "</details>"]
    return "\n".join(lines)
