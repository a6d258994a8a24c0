"""Turn samples into medians, tables, scaling exponents, a log-log plot and BENCHMARKS.md sections.

All functions but ``write_plot`` and ``update_benchmarks_md`` are pure.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Sample

APPLY_EMPTY = "apply into empty state"
PLAN_SAME = "plan, no changes"
PLAN_SAME_NO_CACHE = "plan, no changes, parse cache off"
PLAN_CHANGED = "plan after changes"
APPLY_CHANGED = "apply after changes"
VALIDATE = "validate"
HELP = "--help"
WATCH_RECONCILE = "watch: one file changed, reconcile until applied"
WATCH_END_TO_END = "watch: file written until the applied event (--debounce 50)"
PLAN_MEASURES = (APPLY_EMPTY, PLAN_SAME, PLAN_SAME_NO_CACHE, PLAN_CHANGED, APPLY_CHANGED)
VERSUS_MEASURES = (APPLY_EMPTY, PLAN_SAME, PLAN_CHANGED, APPLY_CHANGED)
WATCH_MEASURES = (WATCH_RECONCILE, WATCH_END_TO_END)
SQLITE, POSTGRES, TERRAFORM, TERRAFORM_COUNT = "reconciler-sqlite", "reconciler-postgresql", "terraform", "terraform-count"
TERRAFORM_TOOLS = (TERRAFORM, TERRAFORM_COUNT)


@dataclass(frozen=True)
class Median:
    seconds: float
    cpu_seconds: float
    max_rss_mib: float
    runs: int
    load_low: float | None = None  # the lowest and highest 1-minute load average during the runs
    load_high: float | None = None
    probe_low: float | None = None  # the fastest and slowest speed probe (ms) before the runs
    probe_high: float | None = None


def medians(samples: Iterable[Sample]) -> dict[tuple[str, str, int], Median]:
    """(tool, measure, n) -> medians over repetitions."""
    groups: dict[tuple[str, str, int], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.tool, s.measure, s.n)].append(s)
    out = {}
    for key, group in groups.items():
        loads = [s.load for s in group if s.load is not None]
        probes = [s.probe_ms for s in group if s.probe_ms is not None]
        out[key] = Median(
            statistics.median(s.seconds for s in group),
            statistics.median(s.cpu_seconds for s in group),
            max(s.max_rss_mib for s in group),
            len(group),
            min(loads) if loads else None,
            max(loads) if loads else None,
            min(probes) if probes else None,
            max(probes) if probes else None,
        )
    return out


@dataclass(frozen=True)
class Ratio:
    """Terraform ÷ reconciler, each repetition's pair measured side by side; medians over pairs."""

    wall: float
    cpu: float
    pairs: int
    load_low: float | None
    load_high: float | None


def paired_ratios(samples: Iterable[Sample], slow_tool: str, fast_tool: str = SQLITE) -> dict[tuple[str, int], Ratio]:
    """(measure, n) -> the median ratio over the repetitions in which both tools ran the measure."""
    by_run: dict[tuple[str, str, int, int, str], Sample] = {}
    for s in samples:
        by_run[(s.tool, s.measure, s.n, s.rep, s.run)] = s
    pairs: dict[tuple[str, int], list[tuple[Sample, Sample]]] = defaultdict(list)
    for (tool, measure, n, rep, run), slow in by_run.items():
        fast = by_run.get((fast_tool, measure, n, rep, run))
        if tool == slow_tool and fast is not None and fast.seconds > 0 and fast.cpu_seconds > 0:
            pairs[(measure, n)].append((slow, fast))
    out = {}
    for key, group in pairs.items():
        loads = [x.load for pair in group for x in pair if x.load is not None]
        out[key] = Ratio(
            statistics.median(a.seconds / b.seconds for a, b in group),
            statistics.median(a.cpu_seconds / b.cpu_seconds for a, b in group),
            len(group),
            min(loads) if loads else None,
            max(loads) if loads else None,
        )
    return out


def scaling_exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(time) against log(N): 1.0 is linear, 2.0 quadratic."""
    pts = [(math.log(n), math.log(t)) for n, t in points if t > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:,.0f} s"


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} MiB"


def _load(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "–"
    return f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}"


def _probe(m: Median) -> str:
    if m.probe_low is None or m.probe_high is None:
        return "–"
    return f"{m.probe_low:.1f}" if f"{m.probe_low:.1f}" == f"{m.probe_high:.1f}" else f"{m.probe_low:.1f}–{m.probe_high:.1f}"


def sizes_of(table: dict[tuple[str, str, int], Median]) -> list[int]:
    return sorted({n for (_, measure, n) in table if measure in PLAN_MEASURES})


def _cell(m: Median | None) -> str:
    return "–" if m is None else f"{_s(m.seconds)} ({m.cpu_seconds:.2f})"


def latest_runs(samples: list[Sample]) -> list[Sample]:
    """For each (tool, measure, N), the samples of the last run that measured it (runs in the order
    they first appear): what the tables show when several runs are merged."""
    order = {run: i for i, run in enumerate(dict.fromkeys(s.run for s in samples))}
    last: dict[tuple[str, str, int], str] = {}
    for s in samples:
        key = (s.tool, s.measure, s.n)
        if key not in last or order[s.run] > order[last[key]]:
            last[key] = s.run
    return [s for s in samples if last[(s.tool, s.measure, s.n)] == s.run]


def runs_with_terraform(samples: list[Sample]) -> list[Sample]:
    """Every sample of the runs that measured Terraform: the side-by-side figures come from those."""
    runs = {s.run for s in samples if s.tool in TERRAFORM_TOOLS}
    return [s for s in samples if s.run in runs]


def core_section(samples: list[Sample], machine: dict[str, str], command: str, versus: list[Sample] | None = None) -> str:
    """Reconciler alone, both databases, every size, watch; then the targets (ratios from ``versus``,
    the runs that measured Terraform; by default ``samples``)."""
    table = medians(samples)
    lines = [
        "Measured with " + " and ".join(f"`{c}`" for c in command.split(" && ")) + ". Wall-clock medians (CPU time",
        "user+system in brackets); peak RSS is the largest over the repetitions; load is the machine's 1-minute load",
        "average around each run (lowest–highest). On this 2-core machine a load above about 2 means other jobs competed",
        "for the CPU: wall times grow with it, CPU times much less. The probe is how many milliseconds a fixed piece of",
        "pure-Python work took just before each run (`bench.measure.speed_probe`, lowest–highest): the load does not show",
        "a slow host (on this shared virtual machine the same work has taken twice as long at a load of 0.6), the probe",
        "does, though only at the moment before the run: a high probe means a slow host, a low one does not prove the",
        "host stayed fast (its speed changes within seconds). PostgreSQL is a throwaway local server (fsync off).",
        "",
        _machine_lines(machine),
        "",
        "Each repetition starts from an empty database and an empty parse cache and runs the steps in this order: the",
        "first apply reads every file cold (and fills the cache); the no-change plan reads the same files from the cache,",
        "as every later command on an unchanged checkout does; the same plan with the cache turned off shows what it",
        "saves; the changed files (10% of resources changed, spread over every file) miss again; the apply after them hits.",
        "",
        "| N | measure | SQLite | PostgreSQL | peak RSS (SQLite / PostgreSQL) | load | probe ms | runs |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in sizes_of(table):
        for measure in PLAN_MEASURES:
            sq, pg = table.get((SQLITE, measure, n)), table.get((POSTGRES, measure, n))
            some = sq or pg
            if some is None:
                continue
            rss = f"{_mib(sq.max_rss_mib if sq else None)} / {_mib(pg.max_rss_mib if pg else None)}"
            lines.append(
                f"| {n:,} | {measure} | {_cell(sq)} | {_cell(pg)} | {rss} | {_load(some.load_low, some.load_high)} | {_probe(some)} | {some.runs} |"
            )
    lines += ["", "| command | wall (CPU) | peak RSS | load | probe ms | runs |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for (_, measure, n), m in sorted(table.items()):
        if measure in (VALIDATE, HELP):
            label = f"`reconciler {measure}`" + (f" of {n:,} resources (parse cache off)" if measure == VALIDATE else "")
            lines.append(f"| {label} | {_cell(m)} | {_mib(m.max_rss_mib)} | {_load(m.load_low, m.load_high)} | {_probe(m)} | {m.runs} |")
    watch = [((t, ms, n), table[(t, ms, n)]) for (t, _, n) in sorted(table) for ms in WATCH_MEASURES if (t, ms, n) in table]
    watch = list(dict(watch).items())
    if watch:
        lines += [
            "",
            "`reconciler watch` (`bench/watch_loop.py`): the resources in files of equal size, one watcher started; then one",
            "agent's temperature is changed in one file at a time. The reconcile is the event's `duration_ms`: from the moment",
            "watch reacts until the apply has committed (reading the files, planning, the transaction). CPU is the watcher's",
            "own for that change. The end-to-end figure adds the `--debounce` wait (50 ms here; 1,600 ms by default, so that",
            "a `git pull` lands as one change) and the file-system notification.",
            "",
            "| N | measure | wall (CPU) | peak RSS | load | probe ms | changes |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for (_, measure, n), m in watch:
            lines.append(f"| {n:,} | {measure} | {_cell(m)} | {_mib(m.max_rss_mib)} | {_load(m.load_low, m.load_high)} | {_probe(m)} | {m.runs} |")
    lines += ["", "Targets, checked on the SQLite medians above (ratios: on the pairs measured side by side, see below):", ""]
    lines += [f"- {t}" for t in check_targets(samples, versus)]
    return "\n".join(lines) + "\n"


def _machine_lines(machine: dict[str, str]) -> str:
    return "Machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()) + "."


# (tool, measure, n), limit in seconds, peak memory limit in MiB, label
TARGETS = [
    ((SQLITE, PLAN_SAME, 1_000), 0.30, None, "1,000 on SQLite: no-change plan ≤ 0.30 s (issue 18)"),
    ((SQLITE, HELP, 0), 0.1, None, "`reconciler --help` ≤ 0.1 s (issue 18)"),
    ((SQLITE, PLAN_SAME, 10_000), 0.8, None, "10,000 on SQLite: no-change plan ≤ 0.8 s (issue 18)"),
    ((SQLITE, APPLY_EMPTY, 10_000), 1.5, None, "10,000 on SQLite: first apply ≤ 1.5 s (issue 18)"),
    ((SQLITE, WATCH_RECONCILE, 10_000), 0.3, None, "watch, 10,000 in 100 files, one file changed: change → applied ≤ 0.3 s (issue 18)"),
    ((SQLITE, APPLY_EMPTY, 100_000), 30.0, 1536.0, "100,000 on SQLite: first apply ≤ 30 s, peak memory ≤ 1.5 GiB"),
    ((SQLITE, PLAN_SAME, 100_000), 15.0, 1536.0, "100,000 on SQLite: no-change plan ≤ 15 s, peak memory ≤ 1.5 GiB"),
    ((SQLITE, VALIDATE, 10_000), 2.0, None, "`reconciler validate` of 10,000 resources ≤ 2 s"),
]
# measure -> how many times faster than Terraform reconciler must be (issues 2 and 6)
RATIO_TARGETS = {APPLY_EMPTY: 20.0, PLAN_SAME: 5.0}


def check_targets(samples: list[Sample], versus: list[Sample] | None = None) -> list[str]:
    table = medians(samples)
    out = []
    for key, limit, rss_limit, label in TARGETS:
        m = table.get(key)
        if m is None:
            out.append(f"{label}: not measured in this run")
            continue
        memory_ok = rss_limit is None or m.max_rss_mib <= rss_limit
        verdict = (
            "met"
            if m.seconds <= limit and memory_ok
            else "missed on wall time, met on CPU time (machine busy)"
            if m.cpu_seconds <= limit and memory_ok
            else "MISSED"
        )
        extra = f", {_mib(m.max_rss_mib)}" if rss_limit else ""
        out.append(
            f"{label}: {_s(m.seconds)} (CPU {m.cpu_seconds:.2f} s){extra}, load {_load(m.load_low, m.load_high)}, probe {_probe(m)} ms: **{verdict}**"
        )
    for tool, what in ((TERRAFORM, "Terraform (references)"), (TERRAFORM_COUNT, "Terraform (one count block)")):
        ratios = paired_ratios(samples if versus is None else versus, tool)
        for (measure, n), r in sorted(ratios.items(), key=lambda kv: (kv[0][1], VERSUS_MEASURES.index(kv[0][0]))):
            factor = RATIO_TARGETS.get(measure)
            if factor is None:
                continue
            out.append(
                f"{n:,}: {measure} ≥ {factor:.0f}× faster than {what}: {r.wall:,.1f}× (CPU {r.cpu:,.1f}×; {r.pairs} pair"
                f"{'s' if r.pairs != 1 else ''}, load {_load(r.load_low, r.load_high)}): **{'met' if r.wall >= factor else 'MISSED'}**"
            )
    return out


def versus_section(samples: list[Sample], plot_name: str) -> str:
    """Side by side with Terraform: in-run ratios, and the fitted scaling exponents."""
    table = medians(samples)
    ratios = {tool: paired_ratios(samples, tool) for tool in TERRAFORM_TOOLS}
    lines = [
        "Same resources on both sides: reconciler manifests, and `terraform_data` resources (built into Terraform, no",
        "provider to download) holding the same fields with references between them (agent → provider, assignment →",
        "agent and task). The second Terraform workload is the simplest there is: one `terraform_data` block with",
        "`count = N` and two short inputs, against the same N reconciler resources. Changes: 10% of resources modified,",
        "1% deleted, 1% added (the count block: 10% of its instances modified).",
        "",
        "The tools take turns step by step within each repetition (reconciler's apply, Terraform's apply, the count",
        "block's apply, then each one's no-change plan ...), so a ratio divides two figures measured moments apart under",
        "the same load. Ratio = the median over repetitions of Terraform's time ÷ reconciler's (SQLite) time in the same",
        "repetition; in brackets the same for CPU time (Terraform spreads its work over both cores). Load: the 1-minute",
        "load average around the runs of those pairs.",
        "",
        "| N | measure | reconciler SQLite | Terraform (references) | ratio | Terraform (count block) | ratio | load |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = 0
    for n in sizes_of(table):
        for measure in VERSUS_MEASURES:
            sq = table.get((SQLITE, measure, n))
            if sq is None or not any((tool, measure, n) in table for tool in TERRAFORM_TOOLS):
                continue
            cells, lows, highs = [], [], []
            for tool in TERRAFORM_TOOLS:
                tf, r = table.get((tool, measure, n)), ratios[tool].get((measure, n))
                cells += [_s(tf.seconds) if tf else "–", f"{r.wall:,.1f}× ({r.cpu:,.1f}×)" if r else "–"]
                if r is not None and r.load_low is not None and r.load_high is not None:
                    lows.append(r.load_low)
                    highs.append(r.load_high)
            load = _load(min(lows), max(highs)) if lows else "–"
            lines.append(f"| {n:,} | {measure} | {_s(sq.seconds)} | {' | '.join(cells)} | {load} |")
            rows += 1
    if not rows:
        lines.append("| – | Terraform was not measured in this run | | | | | | |")
    lines += [
        "",
        "Scaling: least-squares slope of log(time) against log(N) (1 = linear, 2 = quadratic), over every size",
        "measured, and between the two largest sizes only (wall time, then CPU time), where the fixed start-up",
        "cost (Python imports) no longer flattens it.",
        "",
        "| tool | sizes | " + " | ".join(VERSUS_MEASURES) + " |",
        "| --- | --- |" + " ---: |" * len(VERSUS_MEASURES),
    ]
    slopes = [row for tool in (SQLITE, POSTGRES, *TERRAFORM_TOOLS) for row in _slope_rows(table, tool)]
    lines += slopes or ["| (needs two sizes or more) | |" + " – |" * len(VERSUS_MEASURES)]
    lines += ["", f"![time against N, log-log]({plot_name})"]
    return "\n".join(lines) + "\n"


def _slope_rows(table: dict[tuple[str, str, int], Median], tool: str) -> list[str]:
    series = {measure: sorted((n, m) for (t, ms, n), m in table.items() if t == tool and ms == measure) for measure in VERSUS_MEASURES}
    sizes = sorted({n for pts in series.values() for n, _ in pts})
    if len(sizes) < 2:
        return []

    def cell(points: list[tuple[int, float]]) -> str:
        k = scaling_exponent(points)
        return "–" if k is None else f"{k:.2f}"

    every = [cell([(n, m.seconds) for n, m in series[ms]]) for ms in VERSUS_MEASURES]
    rows = [f"| {tool} | {', '.join(f'{n:,}' for n in sizes)} | " + " | ".join(every) + " |"]
    if len(sizes) > 2:
        top = sizes[-2:]
        pair = [
            f"{cell([(n, m.seconds) for n, m in series[ms] if n in top])} / {cell([(n, m.cpu_seconds) for n, m in series[ms] if n in top])}"
            for ms in VERSUS_MEASURES
        ]
        rows.append(f"| {tool} | {top[0]:,} → {top[1]:,} (wall / CPU) | " + " | ".join(pair) + " |")
    return rows


def write_plot(table: dict[tuple[str, str, int], Median], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 5.5), dpi=110)
    styles = {SQLITE: ("tab:blue", "o"), POSTGRES: ("tab:green", "s"), TERRAFORM: ("tab:red", "^"), TERRAFORM_COUNT: ("tab:orange", "v")}
    dashes = {APPLY_EMPTY: "-", PLAN_SAME: "--", APPLY_CHANGED: ":"}
    for tool, (color, marker) in styles.items():
        for measure, dash in dashes.items():
            pts = sorted((n, m.seconds) for (t, ms, n), m in table.items() if t == tool and ms == measure)
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, dash, color=color, marker=marker, label=f"{tool}: {measure}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("resources (N)")
    ax.set_ylabel("wall time (s), median")
    ax.set_title("reconciler vs Terraform: time against N")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


_HEADING = re.compile(r"^## (.+)$", re.MULTILINE)
TITLE = "# Benchmarks\n\nFigures from `python -m bench` (see bench/). Regenerate them with the command in each section.\n"


def merge_sections(existing: str, sections: dict[str, str]) -> str:
    """Replace our ``## `` sections in place (or append them), keeping everyone else's sections."""
    text = existing if existing.strip() else TITLE
    for title, body in sections.items():
        block = f"## {title}\n\n{body.rstrip()}\n"
        matches = list(_HEADING.finditer(text))
        for i, m in enumerate(matches):
            if m.group(1).strip() == title:
                end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
                text = text[: m.start()] + block + ("\n" if end < len(text) else "") + text[end:]
                break
        else:
            text = text.rstrip() + "\n\n" + block
    return text


def update_benchmarks_md(path: Path, sections: dict[str, str]) -> None:
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(merge_sections(existing, sections), encoding="utf-8")
