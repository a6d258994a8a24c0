"""The benchmark script works end to end at a small size (figures are not checked: not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import merge_sections, scaling_exponent

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_run_writes_table_plot_and_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out).mkdir()
    (out / "BENCHMARKS.md").write_text("# Benchmarks\n\n## Runner overhead\n\nkept as is\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "## Runner overhead\n\nkept as is\n" in text
    assert "## Core plan/apply" in text and "## Reconciler vs Terraform" in text
    assert "| 200 | plan, no changes |" in text
    assert (out / "plot.png").read_bytes().startswith(b"\x89PNG")
    samples = json.loads((out / "results.json").read_text(encoding="utf-8"))["samples"]
    measured = {(s["tool"], s["measure"]) for s in samples}
    assert {("reconciler-sqlite", "apply into empty state"), ("reconciler-sqlite", "plan, no changes"),
            ("reconciler-sqlite", "--help"), ("reconciler-sqlite", "validate")} <= measured


def test_merge_sections_replaces_ours_and_keeps_others() -> None:
    existing = "# Benchmarks\n\n## Core plan/apply\n\nold\n\n## Runner overhead\n\ntheirs\n"
    merged = merge_sections(existing, {"Core plan/apply": "new\n", "Reconciler vs Terraform": "side by side\n"})
    assert merged == (
        "# Benchmarks\n\n## Core plan/apply\n\nnew\n\n## Runner overhead\n\ntheirs\n\n"
        "## Reconciler vs Terraform\n\nside by side\n"
    )


@pytest.mark.parametrize(
    ("points", "expected"),
    [([(1_000, 1.0), (10_000, 10.0)], 1.0), ([(1_000, 1.0), (10_000, 100.0), (100_000, 10_000.0)], 2.0), ([(1_000, 1.0)], None)],
    ids=["linear", "quadratic", "one-size"],
)
def test_scaling_exponent(points: list[tuple[int, float]], expected: float | None) -> None:
    k = scaling_exponent(points)
    assert (k if k is None else round(k, 6)) == expected
