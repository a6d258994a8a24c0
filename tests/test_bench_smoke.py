"""The benchmark script works end to end at a small size (figures are not checked: not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import Sample
from bench.report import APPLY_EMPTY, PLAN_SAME, SQLITE, TERRAFORM, check_targets, merge_sections, paired_ratios, scaling_exponent

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_run_writes_table_plot_and_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out).mkdir()
    (out / "BENCHMARKS.md").write_text("# Benchmarks\n\n## Runner overhead\n\nkept as is\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "## Runner overhead\n\nkept as is\n" in text
    assert "## Core plan/apply" in text and "## Reconciler vs Terraform" in text
    assert "| 200 | plan, no changes |" in text
    assert (out / "plot.png").read_bytes().startswith(b"\x89PNG")
    samples = json.loads((out / "results.json").read_text(encoding="utf-8"))["samples"]
    measured = {(s["tool"], s["measure"]) for s in samples}
    assert {
        ("reconciler-sqlite", "apply into empty state"),
        ("reconciler-sqlite", "plan, no changes"),
        ("reconciler-sqlite", "plan, no changes, parse cache off"),
        ("reconciler-sqlite", "--help"),
        ("reconciler-sqlite", "validate"),
        ("reconciler-sqlite", "watch: one file changed, reconcile until applied"),
        ("reconciler-sqlite", "watch: file written until the applied event (--debounce 50)"),
    } <= measured
    assert all(s["load_before"] is not None for s in samples)  # every figure says how busy the machine was
    assert all(s["probe_ms"] > 0 for s in samples)  # ... and how fast its CPU was
    assert "| probe ms |" in text
    assert "| 200 | watch: one file changed, reconcile until applied |" in text


def test_merge_sections_replaces_ours_and_keeps_others() -> None:
    existing = "# Benchmarks\n\n## Core plan/apply\n\nold\n\n## Runner overhead\n\ntheirs\n"
    merged = merge_sections(existing, {"Core plan/apply": "new\n", "Reconciler vs Terraform": "side by side\n"})
    assert merged == ("# Benchmarks\n\n## Core plan/apply\n\nnew\n\n## Runner overhead\n\ntheirs\n\n## Reconciler vs Terraform\n\nside by side\n")


@pytest.mark.parametrize(
    ("points", "expected"),
    [([(1_000, 1.0), (10_000, 10.0)], 1.0), ([(1_000, 1.0), (10_000, 100.0), (100_000, 10_000.0)], 2.0), ([(1_000, 1.0)], None)],
    ids=["linear", "quadratic", "one-size"],
)
def test_scaling_exponent(points: list[tuple[int, float]], expected: float | None) -> None:
    k = scaling_exponent(points)
    assert (k if k is None else round(k, 6)) == expected


def _sample(tool: str, measure: str, rep: int, seconds: float, load: float) -> Sample:
    return Sample(tool, measure, 1_000, rep, seconds, seconds / 2, 50.0, load, load + 0.5)


def test_ratios_divide_only_figures_of_the_same_repetition() -> None:
    samples = [
        _sample(SQLITE, PLAN_SAME, 0, 0.5, 1.0),
        _sample(TERRAFORM, PLAN_SAME, 0, 5.0, 1.2),  # 10x
        _sample(SQLITE, PLAN_SAME, 1, 2.0, 8.0),
        _sample(TERRAFORM, PLAN_SAME, 1, 8.0, 8.1),  # 4x, a busy moment
        _sample(SQLITE, PLAN_SAME, 2, 0.5, 1.0),
        _sample(TERRAFORM, PLAN_SAME, 2, 3.0, 1.1),  # 6x
        _sample(TERRAFORM, APPLY_EMPTY, 0, 60.0, 1.0),  # no reconciler figure of that repetition: no ratio
        _sample(SQLITE, APPLY_EMPTY, 1, 0.5, 1.0),
    ]
    ratios = paired_ratios(samples, TERRAFORM)
    assert set(ratios) == {(PLAN_SAME, 1_000)}
    r = ratios[(PLAN_SAME, 1_000)]
    assert (r.wall, r.pairs, r.load_low, r.load_high) == (6.0, 3, 1.5, 8.6)  # a run's load: the higher reading
    # the median of the pairs' ratios, not the ratio of the medians (5.0 / 0.5 = 10)
    assert any("plan, no changes ≥ 5× faster than Terraform (references): 6.0×" in line and "MISSED" not in line for line in check_targets(samples))


class _FakeTool:
    """Records the steps it is asked to run, in the order asked."""

    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name, self.calls = name, calls
        self.before, self.after = Path("before"), Path("after")

    def reset(self, workdir: Path) -> None:
        self.calls.append((self.name, "reset"))

    def plan(self, config: Path, expect_changes: bool, *, cache: bool = True) -> tuple[float, float, float, float, float]:
        self.calls.append((self.name, f"plan {config} {'cached' if cache else 'uncached'}"))
        return (1.0, 1.0, 1.0, 0.5, 0.5)

    def apply(self, config: Path) -> tuple[float, float, float, float, float]:
        self.calls.append((self.name, f"apply {config}"))
        return (1.0, 1.0, 1.0, 0.5, 0.5)


@pytest.mark.parametrize("rep", [0, 1, 2])
def test_tools_take_turns_in_the_steps_order_whoever_starts(rep: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.__main__ as bench_main
    from bench import tools

    class FakeReconciler(_FakeTool, tools.Reconciler):  # type: ignore[misc]
        pass

    calls: list[tuple[str, str]] = []
    lineup = [FakeReconciler(SQLITE, calls), _FakeTool(TERRAFORM, calls), _FakeTool("terraform-count", calls)]
    samples = bench_main._run_interleaved(lineup, 1_000, rep, tmp_path)  # type: ignore[arg-type]
    steps = [c for c in calls if c[1] != "reset"]
    first = lineup[rep % 3].name
    assert steps[0] == (first, "apply before")
    ours = [what for who, what in steps if who == SQLITE]
    assert ours == ["apply before", "plan before cached", "plan before uncached", "plan after cached", "apply after"]
    theirs = [what for who, what in steps if who == TERRAFORM]
    assert theirs == ["apply before", "plan before cached", "plan after cached", "apply after"]
    # each step is run by everyone before the next step starts
    order = [what.replace(" uncached", " cached") for _, what in steps]
    assert order == sorted(order, key=["apply before", "plan before cached", "plan after cached", "apply after"].index)
    assert len(samples) == 13 and {s.rep for s in samples} == {rep}


def test_merged_runs_show_the_latest_figures_and_ratios_of_one_run(tmp_path: Path) -> None:
    """--from-results: the tables take each figure from the last run that measured it; a ratio
    never divides figures of two runs."""
    import bench.__main__ as bench_main

    def results(name: str, samples: list[Sample]) -> Path:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"command": f"python -m bench {name}", "machine": {"cpu": "test"}, "samples": [s.to_dict() for s in samples]}))
        return path

    with_terraform = results(
        "busy", [_sample(SQLITE, PLAN_SAME, rep, 1.0, 6.0) for rep in range(3)] + [_sample(TERRAFORM, PLAN_SAME, rep, 9.0, 6.0) for rep in range(3)]
    )
    quiet = results("quiet", [_sample(SQLITE, PLAN_SAME, rep, 0.25, 0.5) for rep in range(3)])
    out = tmp_path / "out"
    assert bench_main.main(["--from-results", str(with_terraform), str(quiet), "--out", str(out)]) == 0
    text = (out / "BENCHMARKS.md").read_text()
    assert "| 1,000 | plan, no changes | 0.25 s (0.12) |" in text  # the quiet run's figure in the table
    assert "| 1,000 | plan, no changes | 1.00 s | 9.00 s | 9.0× (9.0×) |" in text  # both sides of the ratio from the busy run
    assert "9.0× (CPU 9.0×; 3 pairs, load 6.5)" in text
    assert len(json.loads((out / "results.json").read_text())["samples"]) == 9  # every run kept


@pytest.mark.slow
def test_the_evaluate_benchmark_runs() -> None:
    argv = [sys.executable, "bench/evaluate.py", "--items", "5", "--rounds", "1", "--latency", "0.01"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| `plan --evaluate`, answer cache empty (10 calls) |" in proc.stdout and "ms per call" in proc.stdout


def test_every_size_a_time_target_is_set_at_gets_five_repetitions() -> None:
    from bench.__main__ import TARGET_SIZES, default_repeat

    assert TARGET_SIZES == {1_000, 10_000}
    assert [default_repeat(n, smoke=False) for n in (200, 1_000, 5_000, 10_000, 100_000)] == [3, 5, 3, 5, 1]
    assert default_repeat(1_000, smoke=True) == 1


def test_callgrind_count_is_read_from_its_summary_line() -> None:
    from bench.instructions import collected

    assert collected("==123== Events    : Ir\n==123== Collected : 195627407\n==123==\n") == 195_627_407
    assert collected("no summary here\n") is None


@pytest.mark.slow
def test_instructions_of_a_command_repeat_and_a_failure_is_reported() -> None:
    """The point of counting: two runs of the same command from the same tree give the same count
    (to well under a percent), whatever else the machine is doing."""
    from bench.instructions import count

    first, second = count(REPO, ["--version"]), count(REPO, ["--version"])
    assert first > 10_000_000 and abs(first - second) / first < 0.005, (first, second)
    with pytest.raises(RuntimeError, match="exit 1"):
        count(REPO, ["validate", str(REPO / "no-such-directory")])
