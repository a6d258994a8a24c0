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
PLAN_CHANGED = "plan after changes"
APPLY_CHANGED = "apply after changes"
VALIDATE = "validate"
HELP = "--help"
PLAN_MEASURES = (APPLY_EMPTY, PLAN_SAME, PLAN_CHANGED, APPLY_CHANGED)
SQLITE, POSTGRES, TERRAFORM = "reconciler-sqlite", "reconciler-postgresql", "terraform"

# Terraform 1.11 on this machine, measured by the author (issues 2 and 6), for sizes the
# benchmark did not re-measure (a 10,000-resource Terraform run takes over ten minutes).
REPORTED_TERRAFORM = {
    (1_000, APPLY_EMPTY): (7.5, None),
    (1_000, PLAN_SAME): (1.4, None),
    (10_000, APPLY_EMPTY): (720.0, 730.0),
    (10_000, PLAN_SAME): (64.0, 730.0),
}


@dataclass(frozen=True)
class Median:
    seconds: float
    cpu_seconds: float
    max_rss_mib: float
    runs: int


def medians(samples: Iterable[Sample]) -> dict[tuple[str, str, int], Median]:
    """(tool, measure, n) -> medians over repetitions."""
    groups: dict[tuple[str, str, int], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.tool, s.measure, s.n)].append(s)
    return {
        key: Median(
            statistics.median(s.seconds for s in group),
            statistics.median(s.cpu_seconds for s in group),
            max(s.max_rss_mib for s in group),
            len(group),
        )
        for key, group in groups.items()
    }


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


def _ratio(slow: float | None, fast: float | None) -> str:
    if not slow or not fast:
        return "–"
    return f"{slow / fast:,.1f}×"


def sizes_of(table: dict[tuple[str, str, int], Median]) -> list[int]:
    return sorted({n for (_, measure, n) in table if measure in PLAN_MEASURES})


def core_section(table: dict[tuple[str, str, int], Median], machine: dict[str, str], command: str) -> str:
    """Reconciler alone, both databases, every size; then the targets of issues 2 and 6."""
    lines = [
        "Measured with " + " and ".join(f"`{c}`" for c in command.split(" && ")) + ". Wall-clock medians (CPU time user+system in brackets), peak RSS",
        "is the largest over the repetitions. PostgreSQL is a throwaway local server (fsync off).",
        "",
        _machine_lines(machine),
        "",
        "| N | measure | SQLite | PostgreSQL | peak RSS (SQLite / PostgreSQL) | runs |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for n in sizes_of(table):
        for measure in PLAN_MEASURES:
            sq, pg = table.get((SQLITE, measure, n)), table.get((POSTGRES, measure, n))
            if sq is None and pg is None:
                continue
            cell = lambda m: "–" if m is None else f"{_s(m.seconds)} ({m.cpu_seconds:.2f})"  # noqa: E731
            rss = f"{_mib(sq.max_rss_mib if sq else None)} / {_mib(pg.max_rss_mib if pg else None)}"
            lines.append(f"| {n:,} | {measure} | {cell(sq)} | {cell(pg)} | {rss} | {(sq or pg).runs} |")  # type: ignore[union-attr]
    lines += ["", "| command | wall (CPU) | peak RSS | runs |", "| --- | ---: | ---: | ---: |"]
    for (tool, measure, n), m in sorted(table.items()):
        if measure in (VALIDATE, HELP):
            label = f"`reconciler {measure}`" + (f" of {n:,} resources" if measure == VALIDATE else "")
            lines.append(f"| {label} | {_s(m.seconds)} ({m.cpu_seconds:.2f}) | {_mib(m.max_rss_mib)} | {m.runs} |")
    lines += ["", "Targets (issues 2 and 6), checked on the SQLite medians above:", ""]
    lines += [f"- {t}" for t in check_targets(table)]
    lines += ["", PROFILE_NOTES]
    return "\n".join(lines) + "\n"


PROFILE_NOTES = """\
Where a no-change `plan` of 10,000 resources spends its time on a quiet machine (per-stage timers,
cProfile for the split inside a stage): starting Python and importing SQLAlchemy, pydantic and click
about 0.25 s (paid by every command, hence the flat curve below 1,000 resources); reading YAML about
0.45 s (libyaml composing the nodes is two thirds of it, Python turning them into data the rest);
pydantic validation and the cross-document checks 0.17 s; reading the state 0.28 s; desired state,
diff and rendering 0.1 s. What was changed to get there, each measured before and after:

- the state tables were ORM classes: importing `sqlalchemy.orm` and building the declarative classes
  cost every command 70 ms at start-up; they are Core tables now (same DDL, compared);
- the interpreter freed the heap of 10,000 loaded manifests object by object at exit (0.1 to 0.2 s):
  the installed command now exits with `os._exit` once exit handlers have run and output is flushed,
  unless another thread is still working (`reconciler.cli.entry_point`; tests call `main`);
- libyaml's composer calls back into Python three times per node (tag resolution and two no-op
  path-resolver hooks, a fifth of reading): those are now C callables, an `lru_cache` of the tags and
  two builtins; the pre-scan that guards libyaml's recursion against deep nesting counts only
  documents longer than half the safe depth (0.13 s to 0.03 s); nodes are counted per collection;
- reading the state: UUID columns are fetched as the driver returns them and formatted by hand
  instead of through `uuid.UUID` (a fifth of the read), rows are fetched in one call per table, and
  the guard against orjson turning integers beyond 64 bits into floats looks for 19 digits in a row
  with `bytes.translate` instead of a regular expression (which cost more than the parsing);
- the garbage collector rescanned the growing heap of long-lived manifest objects again and again
  (40% of a plan): the CLI now freezes start-up objects and collects less often (`reconciler/gcpolicy.py`);
- checking each response schema against its metaschema with `jsonschema` took 0.2 ms (0.5 s at 10,000,
  5 s at 100,000): jsonschema-rs confirms valid schemas in microseconds, `jsonschema` still writes the
  messages for invalid ones, and it is no longer imported at all when every schema is valid;
- YAML: implicit tags of short plain scalars are memoised, plain strings take a short path, and field
  positions (half the memory of a loaded manifest set) are worked out only when a problem is reported;
- the state's JSON columns are read, and the snapshot fingerprint hashed, with orjson.

Terraform's first apply grows about with the square of N on this workload (CPU time 2.8 s at 200
resources, about 60 s at 1,000), while its plans grow about linearly; we did not profile why."""


def _machine_lines(machine: dict[str, str]) -> str:
    return "Machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()) + "."


TARGETS = [
    ((SQLITE, APPLY_EMPTY, 10_000), 3.0, None, "10,000 on SQLite: first apply < 3 s"),
    ((SQLITE, PLAN_SAME, 10_000), 1.5, None, "10,000 on SQLite: no-change plan < 1.5 s"),
    ((SQLITE, APPLY_EMPTY, 100_000), 30.0, 1536.0, "100,000 on SQLite: first apply < 30 s, peak memory < 1.5 GiB"),
    ((SQLITE, PLAN_SAME, 100_000), 15.0, 1536.0, "100,000 on SQLite: no-change plan < 15 s, peak memory < 1.5 GiB"),
    ((SQLITE, HELP, 0), 0.3, None, "`reconciler --help` < 0.3 s"),
    ((SQLITE, VALIDATE, 10_000), 2.0, None, "`reconciler validate` of 10,000 resources < 2 s"),
]


def check_targets(table: dict[tuple[str, str, int], Median]) -> list[str]:
    out = []
    for key, limit, rss_limit, label in TARGETS:
        m = table.get(key)
        if m is None:
            out.append(f"{label}: not measured in this run")
            continue
        ok = m.seconds < limit and (rss_limit is None or m.max_rss_mib < rss_limit)
        cpu_ok = m.cpu_seconds < limit
        extra = f", {_mib(m.max_rss_mib)}" if rss_limit else ""
        verdict = "met" if ok else ("missed on wall time, met on CPU time (machine busy)" if cpu_ok else "MISSED")
        out.append(f"{label}: {_s(m.seconds)} (CPU {m.cpu_seconds:.2f} s){extra}: **{verdict}**")
    for n in (1_000, 10_000):
        for measure, factor in ((APPLY_EMPTY, 20), (PLAN_SAME, 5)):
            ours = table.get((SQLITE, measure, n))
            tf, reported = terraform_figure(table, measure, n)
            if ours is None or tf is None:
                continue
            ratio = tf / ours.seconds
            src = " (Terraform figure reported in the issue, not re-measured)" if reported else ""
            out.append(
                f"{n:,}: {measure} ≥ {factor}× faster than Terraform: {ratio:,.1f}×{src}: "
                f"**{'met' if ratio >= factor else 'MISSED'}**"
            )
    return out


def terraform_figure(table: dict[tuple[str, str, int], Median], measure: str, n: int) -> tuple[float | None, bool]:
    """Terraform's median for (measure, n): measured here, else the issue's figure (flagged)."""
    m = table.get((TERRAFORM, measure, n))
    if m is not None:
        return m.seconds, False
    reported = REPORTED_TERRAFORM.get((n, measure))
    return (reported[0], True) if reported else (None, False)


def versus_section(table: dict[tuple[str, str, int], Median], plot_name: str) -> str:
    """Side by side with Terraform, ratios, and the fitted scaling exponents."""
    lines = [
        "Same resources on both sides: reconciler manifests, and `terraform_data` resources holding the same",
        "fields with references between them (agent → provider, assignment → agent and task). Changes: 10% of",
        "resources modified, 1% deleted, 1% added. Speed-up = Terraform time ÷ reconciler (SQLite) time.",
        "Figures marked * are Terraform 1.11 on this machine as reported in the issue, not re-measured here.",
        "",
        "| N | measure | reconciler SQLite | reconciler PostgreSQL | Terraform | speed-up | peak RSS reconciler / Terraform |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in sizes_of(table):
        for measure in PLAN_MEASURES:
            sq, pg = table.get((SQLITE, measure, n)), table.get((POSTGRES, measure, n))
            tf_seconds, reported = terraform_figure(table, measure, n)
            tf = table.get((TERRAFORM, measure, n))
            tf_rss = tf.max_rss_mib if tf else (REPORTED_TERRAFORM.get((n, measure), (None, None))[1])
            if sq is None and pg is None and tf_seconds is None:
                continue
            tf_cell = "–" if tf_seconds is None else _s(tf_seconds) + ("*" if reported else "")
            lines.append(
                f"| {n:,} | {measure} | {_s(sq.seconds if sq else None)} | {_s(pg.seconds if pg else None)} | {tf_cell} "
                f"| {_ratio(tf_seconds, sq.seconds if sq else None)} | {_mib(sq.max_rss_mib if sq else None)} / {_mib(tf_rss)} |"
            )
    lines += [
        "",
        "Scaling: least-squares slope of log(time) against log(N) (1 = linear, 2 = quadratic), over every size",
        "measured, and between the two largest sizes only (wall time, then CPU time), where the fixed start-up",
        "cost (Python imports, about 0.3 s) no longer flattens it.",
        "",
        "| tool | sizes | " + " | ".join(PLAN_MEASURES) + " |",
        "| --- | --- |" + " ---: |" * len(PLAN_MEASURES),
    ]
    for tool in (SQLITE, POSTGRES, TERRAFORM):
        lines += _slope_rows(table, tool)
    if not any(line.startswith(("| reconciler", "| terraform")) for line in lines):
        lines.append("| (needs two sizes or more) | |" + " – |" * len(PLAN_MEASURES))
    lines += [
        "",
        "Terraform at 1,000 resources took far longer here than the issue's 7.5 s: these resources carry",
        "multi-line prompts and response schemas. The issue's 10,000-resource figures (marked *) were",
        "most likely measured on a lighter workload, so the speed-ups computed from them likely understate ours.",
        "Against the issue's own 1,000-resource figures (7.5 s apply, 1.4 s plan) the picture is different: a",
        "reconciler command at that size costs about half a second (over half of it starting Python and",
        "importing libraries), so it is about 14 times faster to apply and 3.5 times faster to plan; the gap",
        "opens with N.",
        "",
        f"![time against N, log-log]({plot_name})",
    ]
    return "\n".join(lines) + "\n"


def _slope_rows(table: dict[tuple[str, str, int], Median], tool: str) -> list[str]:
    series = {measure: sorted((n, m) for (t, ms, n), m in table.items() if t == tool and ms == measure) for measure in PLAN_MEASURES}
    sizes = sorted({n for pts in series.values() for n, _ in pts})
    if len(sizes) < 2:
        return []

    def cell(points: list[tuple[int, float]]) -> str:
        k = scaling_exponent(points)
        return "–" if k is None else f"{k:.2f}"

    every = [cell([(n, m.seconds) for n, m in series[ms]]) for ms in PLAN_MEASURES]
    rows = [f"| {tool} | {', '.join(f'{n:,}' for n in sizes)} | " + " | ".join(every) + " |"]
    if len(sizes) > 2:
        top = sizes[-2:]
        pair = [
            f"{cell([(n, m.seconds) for n, m in series[ms] if n in top])} / {cell([(n, m.cpu_seconds) for n, m in series[ms] if n in top])}"
            for ms in PLAN_MEASURES
        ]
        rows.append(f"| {tool} | {top[0]:,} → {top[1]:,} (wall / CPU) | " + " | ".join(pair) + " |")
    return rows


def write_plot(table: dict[tuple[str, str, int], Median], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 5.5), dpi=110)
    styles = {SQLITE: ("tab:blue", "o"), POSTGRES: ("tab:green", "s"), TERRAFORM: ("tab:red", "^")}
    dashes = {APPLY_EMPTY: "-", PLAN_SAME: "--", APPLY_CHANGED: ":"}
    for tool, (color, marker) in styles.items():
        for measure, dash in dashes.items():
            pts = sorted((n, m.seconds) for (t, ms, n), m in table.items() if t == tool and ms == measure)
            if pts:
                ax.plot(*zip(*pts), dash, color=color, marker=marker, label=f"{tool}: {measure}")
    for (n, measure), (seconds, _) in REPORTED_TERRAFORM.items():
        if (TERRAFORM, measure, n) not in table and measure in dashes:
            ax.plot([n], [seconds], marker="^", color="tab:red", fillstyle="none", linestyle="none")
    ax.plot([], [], marker="^", color="tab:red", fillstyle="none", linestyle="none", label="terraform (reported in issue)")
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
