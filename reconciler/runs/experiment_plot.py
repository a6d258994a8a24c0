"""`experiments show --plot FILE.png`: accuracy (with its 95% interval) against cost per 1,000 items,
one labelled point per arm, beside the latency distributions. matplotlib is optional (the ``plot``
extra) and imported only here."""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.runs.experiment_report import ExperimentReport


def plot_report(report: ExperimentReport, path: str | Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed (CI, servers)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReconcilerError(
            "--plot needs matplotlib, which is not installed",
            hint="pip install 'reconciler[plot]' (or pip install matplotlib), or leave out --plot",
        ) from None
    target = Path(path)
    if target.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise ReconcilerError(f"--plot {path}: give a .png, .svg or .pdf file", hint="e.g. --plot experiment.png")
    arms = report.data["arms"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1.1, 1]})
    scored = [a for a in arms if a["accuracy"] is not None]
    costs = [a["cost_per_1k_items_usd"] or 0.0 for a in scored]
    free = bool(scored) and max(costs) == 0
    span = (max(costs) - min(costs)) if scored and not free else 2.0
    # arms at the same cost would hide each other's interval bars: set them a little apart
    dodge = {i: (i - (len(scored) - 1) / 2) * span * 0.08 for i in range(len(scored))} if len(set(costs)) < len(costs) else {}
    for i, arm in enumerate(scored):
        x = (arm["cost_per_1k_items_usd"] or 0.0) + dodge.get(i, 0.0)
        low, high = arm["accuracy_ci95"]
        y = arm["accuracy"]
        left.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", capsize=5, markersize=7)
        marker = " (baseline)" if arm["agent"] == report.data["baseline"] else ""
        left.annotate(f"{arm['agent']}{marker}\n{y:.0%} [{low:.0%}–{high:.0%}]", (x, y), textcoords="offset points", xytext=(8, 4), fontsize=8)
    if not scored:
        left.text(0.5, 0.5, "no expected answers: nothing scored", ha="center", va="center", transform=left.transAxes)
    left.set_ylim(0, 1.05)
    left.set_xlabel("cost per 1,000 items (USD)")
    left.set_ylabel("accuracy (95% Wilson interval)")
    left.set_title("accuracy against cost")
    left.grid(True, alpha=0.3)
    if free:
        left.set_xlim(-1, 1)
        left.set_xticks([0])
        left.set_xlabel("cost per 1,000 items (USD; local models cost nothing per token)")
    series = [report.latencies.get(a["agent"]) or [0.0] for a in arms]
    seconds = max(max(x) for x in series) >= 10_000
    if seconds:
        series = [[v / 1000 for v in x] for x in series]
    right.boxplot(series, orientation="horizontal", tick_labels=[a["agent"] for a in arms], showfliers=True)
    right.set_xlabel("latency per answer (s)" if seconds else "latency per answer (ms)")
    right.set_title("latency")
    right.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"Experiment {report.data['name']} ({report.data['status']}, {len(report.inputs)} inputs)")
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target
