"""``python -m bench``: reconciler (SQLite, PostgreSQL) and Terraform side by side at 1,000 to 100,000
resources; writes the medians, targets, scaling exponents and a log-log plot to BENCHMARKS.md.

Every tool runs each step in turn (A, B, A, B ...: reconciler's apply, Terraform's apply, then
both plans ...), so each ratio divides two figures measured seconds apart under the same load; the
1-minute load average is recorded around every command and printed beside each figure. Terraform
runs two workloads: the same resources with references between them, and one ``count`` block.

    python -m bench                          # 1,000 / 10,000 / 100,000 (Terraform at 1,000 only)
    python -m bench --with-terraform-large   # Terraform at every size (10,000 takes over 10 minutes)
    python -m bench --smoke --out DIR        # N = 200, once: shows the script works (CI)
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench import report
from bench.machine import describe_machine
from bench.measure import Sample, Timing, run_timed
from bench.tools import (
    REPO,
    Reconciler,
    Terraform,
    Tool,
    reconciler_argv,
    reconciler_env,
    sqlite_database,
    terraform_version,
    unique_database_name,
)
from bench.watch_loop import measure_watch
from bench.workload import SECRET_ENV, generate, mutate, write_manifests, write_terraform, write_terraform_count

DEFAULT_SIZES = (1_000, 10_000, 100_000)
SMOKE_SIZE = 200
TERRAFORM_DEFAULT_MAX = 1_000
HELP_REPEAT = 7
WATCH = (10_000, 100, 7)  # resources, files, changes
WATCH_SMOKE = (SMOKE_SIZE, 10, 2)
CORE_SECTION = "Core plan/apply"
VERSUS_SECTION = "Reconciler vs Terraform"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x.replace("_", "")) for x in s.split(",")],
        default=None,
        help="comma-separated N values (default 1000,10000,100000)",
    )
    p.add_argument("--repeat", type=int, default=None, help="repetitions per size (default 5 at 1,000 and 10,000, where the targets are set; 1 above 10,000; 3 at other sizes)")
    p.add_argument("--smoke", action="store_true", help=f"N = {SMOKE_SIZE}, one repetition; for CI")
    p.add_argument("--with-terraform-large", action="store_true", help=f"also run Terraform above {TERRAFORM_DEFAULT_MAX:,} resources")
    p.add_argument("--no-terraform", action="store_true", help="reconciler only")
    p.add_argument("--no-postgres", action="store_true", help="SQLite only")
    p.add_argument(
        "--no-watch", action="store_true", help=f"skip `reconciler watch` ({WATCH[0]:,} resources in {WATCH[1]} files, one changed at a time)"
    )
    p.add_argument("--out", type=Path, default=None, help="write BENCHMARKS.md, plot.png and results.json here (default: the repository)")
    p.add_argument("--keep", action="store_true", help="keep the generated workloads and states")
    p.add_argument(
        "--from-results",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="only re-render the report from results.json files; for a (tool, measure, N) in several, the last file wins",
    )
    return p.parse_args(argv)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _start_postgres() -> tuple[object | None, str | None]:
    from tests.pgserver import PostgresNotAvailable, start_postgres

    try:
        server = start_postgres()
    except PostgresNotAvailable as exc:
        _log(f"PostgreSQL skipped: {exc}")
        return None, None
    import psycopg

    with psycopg.connect(server.dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return server, str(version).split()[0]


def _time_commands(env: dict[str, str], cwd: Path, manifests: Path, n: int, reps: int) -> list[Sample]:
    """``validate`` (no database), with the parse cache off: what reading the manifests costs."""
    samples = []
    env = {**env, "RECONCILER_NO_CACHE": "1"}
    for rep in range(reps):
        samples.append(Sample(report.SQLITE, report.VALIDATE, n, rep, *run_timed(reconciler_argv("validate", str(manifests)), cwd=cwd, env=env)))
    return samples


def _time_help(env: dict[str, str], cwd: Path) -> list[Sample]:
    return [Sample(report.SQLITE, report.HELP, 0, rep, *run_timed(reconciler_argv("--help"), cwd=cwd, env=env)) for rep in range(HELP_REPEAT)]


def _steps(tool: Tool) -> list[tuple[str, Callable[[], Timing]]]:
    """The steps on one fresh state: apply, no-change plan (for reconciler also with the parse cache
    off), plan and apply of the changed set."""
    steps: list[tuple[str, Callable[[], Timing]]] = [
        (report.APPLY_EMPTY, lambda: tool.apply(tool.before)),
        (report.PLAN_SAME, lambda: tool.plan(tool.before, expect_changes=False)),
    ]
    if isinstance(tool, Reconciler):
        steps.append((report.PLAN_SAME_NO_CACHE, lambda: tool.plan(tool.before, expect_changes=False, cache=False)))
    steps += [
        (report.PLAN_CHANGED, lambda: tool.plan(tool.after, expect_changes=True)),
        (report.APPLY_CHANGED, lambda: tool.apply(tool.after)),
    ]
    return steps


def _run_interleaved(tools: list[Tool], n: int, rep: int, base: Path) -> list[Sample]:
    """One repetition: every tool on a fresh state, step by step in turn (which tool goes first
    rotates with the repetition), so the figures a ratio divides were measured side by side."""
    order = tools[rep % len(tools) :] + tools[: rep % len(tools)]
    for tool in order:
        tool.reset(base / f"{tool.name}-{rep}")
    plans = {tool.name: dict(_steps(tool)) for tool in order}
    measures = [m for m in report.PLAN_MEASURES if any(m in steps for steps in plans.values())]  # the steps' own order
    out = []
    for measure in measures:
        for tool in order:
            step = plans[tool.name].get(measure)
            if step is None:
                continue
            sample = Sample(tool.name, measure, n, rep, *step())
            _log(
                f"N={n:,} rep {rep + 1} {tool.name:22s} {measure:34s} {sample.seconds:8.2f} s  cpu {sample.cpu_seconds:7.2f} s  "
                f"{sample.max_rss_mib:6.0f} MiB  load {sample.load or 0:4.1f}  probe {sample.probe_ms or 0:5.1f} ms"
            )
            out.append(sample)
    return out


def run(args: argparse.Namespace) -> int:
    started = time.time()
    sizes = [SMOKE_SIZE] if args.smoke else (args.sizes or list(DEFAULT_SIZES))
    work = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    env = reconciler_env({"RECONCILER_SECRET_KEY": _fernet_key(), SECRET_ENV: "sk-bench-not-a-real-key", "RECONCILER_CACHE_DIR": str(work / "cache")})
    tf_version = None if args.no_terraform else terraform_version()
    if not args.no_terraform and tf_version is None:
        _log("terraform is not on PATH: Terraform is skipped")
    server, pg_version = (None, None) if args.no_postgres else _start_postgres()
    machine = describe_machine(pg_version, tf_version)
    if args.no_terraform:
        machine["terraform"] = "not measured (--no-terraform)"
    if args.no_postgres:
        machine["postgresql"] = "not measured (--no-postgres)"
    samples: list[Sample] = []
    try:
        warm = write_manifests(generate(20), work / "warm-up")
        db = sqlite_database(work)
        for warm_args in (("apply", str(warm), "--db", db, "--auto-approve", "--no-validate"), ("plan", str(warm), "--db", db), ("validate", str(warm))):
            run_timed(reconciler_argv(*warm_args), cwd=work, env=env)  # writes the bytecode of every module the timed commands import
        samples += _time_help(env, work)
        for n in sizes:
            samples += _run_size(args, n, work, env, server, tf_version is not None)
        if not args.no_watch:
            n, files, changes = WATCH_SMOKE if args.smoke else WATCH
            _log(f"watch: {n:,} resources in {files} files, {changes} changes, one file at a time")
            (work / "watch").mkdir()
            for sample in measure_watch(n, files, changes, env, work / "watch"):
                timing = f"{sample.seconds * 1000:7.0f} ms  cpu {sample.cpu_seconds * 1000:6.0f} ms  load {sample.load or 0:4.1f}"
                _log(f"watch N={n:,} {sample.measure:44s} {timing}")
                samples.append(sample)
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            _log(f"kept {work}")
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))
    _write_outputs(args, [replace(s, run=run_id) for s in samples], machine)
    return 0


def default_repeat(n: int, smoke: bool) -> int:
    """Repetitions of one size: the targets at 1,000 and 10,000 are checked on a median, and on
    this host a run's speed can halve within seconds, so those sizes get five samples rather than
    three (one run's three 1,000 plans took 0.27 to 0.41 s, at probes of 6.3 to 6.9 ms)."""
    if smoke or n > 10_000:
        return 1
    return 5 if n in TARGET_SIZES else 3


# the sizes, up to 10,000, that report.TARGETS sets a time at (1,000 and 10,000)
TARGET_SIZES = frozenset(key[2] for key, *_ in report.TARGETS if 0 < key[2] <= 10_000)


def _run_size(args: argparse.Namespace, n: int, work: Path, env: dict[str, str], server: object | None, have_terraform: bool) -> list[Sample]:
    reps = args.repeat or default_repeat(n, args.smoke)
    base = work / f"n{n}"
    workload = generate(n)
    changed = mutate(workload)
    before, after = write_manifests(workload, base / "manifests-before"), write_manifests(changed, base / "manifests-after")
    tools: list[Tool] = [Reconciler(report.SQLITE, sqlite_database, env, before, after)]
    if have_terraform and (n <= TERRAFORM_DEFAULT_MAX or args.with_terraform_large):
        tools.append(Terraform(report.TERRAFORM, write_terraform(workload, base / "tf-before"), write_terraform(changed, base / "tf-after")))
        count_before = write_terraform_count(len(workload), base / "tf-count-before", changed=False)
        tools.append(Terraform(report.TERRAFORM_COUNT, count_before, write_terraform_count(len(workload), base / "tf-count-after", changed=True)))
    if server is not None:
        new_db = lambda _: server.create_database(unique_database_name())  # type: ignore[attr-defined]  # noqa: E731
        tools.append(Reconciler(report.POSTGRES, new_db, env, before, after))
    _log(f"N={n:,}: {len(workload):,} resources, {len(changed):,} after changes; {reps} repetition(s); tools: {', '.join(t.name for t in tools)}")
    samples = _time_commands(env, base, before, n, reps)
    for rep in range(reps):
        samples += _run_interleaved(tools, n, rep, base)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return samples


def _write_outputs(args: argparse.Namespace, samples: list[Sample], machine: dict[str, str], command: str | None = None) -> None:
    """BENCHMARKS.md sections, the plot and results.json (every sample, of every run merged in)."""
    out = args.out
    md_path = (out / "BENCHMARKS.md") if out else REPO / "BENCHMARKS.md"
    plot_path = (out / "plot.png") if out else REPO / "bench" / "plot.png"
    results_path = (out / "results.json") if out else REPO / "bench" / "results.json"
    for p in (md_path, plot_path, results_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    command = command or ("python -m bench " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "python -m bench")
    plot_name = str(plot_path.relative_to(md_path.parent)) if plot_path.is_relative_to(md_path.parent) else str(plot_path)
    shown, versus = report.latest_runs(samples), report.runs_with_terraform(samples)
    sections = {
        CORE_SECTION: report.core_section(shown, machine, command.strip(), versus),
        VERSUS_SECTION: report.versus_section(versus or shown, plot_name),
    }
    report.update_benchmarks_md(md_path, sections)
    report.write_plot(report.medians(shown), plot_path)
    results_path.write_text(
        json.dumps({"command": command, "machine": machine, "samples": [s.to_dict() for s in samples]}, indent=1), encoding="utf-8"
    )
    print("\n\n".join(f"## {title}\n\n{body}" for title, body in sections.items()))
    _log(f"wrote {md_path}, {plot_path} and {results_path}")


def rerender(args: argparse.Namespace) -> int:
    """The report of several runs' results.json: the tables show each figure from the last run that
    measured it; the side-by-side ratios come from the runs that measured Terraform, each pairing
    only figures of its own run."""
    samples: list[Sample] = []
    commands = []
    machine: dict[str, str] = {}
    for i, path in enumerate(args.from_results):
        saved = json.loads(path.read_text(encoding="utf-8"))
        commands += (saved.get("command") or "python -m bench").split(" && ")  # a merged file lists several
        samples += [replace(s, run=s.run or f"{path}#{i}") for s in (Sample(**raw) for raw in saved["samples"])]
        for key, value in saved["machine"].items():  # the last run's, but a version any run measured
            if key not in machine or not value.startswith("not "):
                machine[key] = value
    _write_outputs(args, samples, machine, " && ".join(dict.fromkeys(commands)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    return rerender(args) if args.from_results else run(args)


if __name__ == "__main__":
    sys.exit(main())
