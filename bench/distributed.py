"""Distributed runs, measured: items/s with 1, 2 and 4 workers, and the per-item cost of going
through the task queue against a local run at the same concurrency.

A throwaway PostgreSQL (tests/pgserver.py) holds the state and the queue. Two stub OpenAI-compatible
servers run in processes of their own: one answers after a fixed latency (a model that takes its
time), one at once (so the queue's own cost shows). Four `reconciler worker --concurrency C`
processes are started once and listen to queues so that a run sent to queue ``w1`` is taken by one
worker, ``w2`` by two and ``w4`` by four; each is capped at C items in flight. A local run is
executed with the run's concurrency C by one warm process (as warm as the workers). Times are the runs' own elapsed seconds (claim
to finish; a distributed run's include the queue's hand-over), so no process start-up is counted.
Rounds alternate between the paths; medians are reported.

    python bench/distributed.py [--items 300] [--latency 0.2] [--concurrency 4] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.runner_overhead import SCHEMA, prompts  # noqa: E402

SECTION = "Runs: distributed"
WORKERS = (1, 2, 4)
LARGE = 3  # the per-item cost is the slope between runs of N and LARGE * N items (fixed costs cancel)
# worker i listens to the queues of every worker count above i: w1 reaches one worker, w4 all four
QUEUES_OF_WORKER = ("w1,w2,w4", "w2,w4", "w4", "w4")

CONFIG = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: slow}
spec: {type: openai, base_url: "SLOW"}
---
apiVersion: reconciler/v1
kind: Provider
metadata: {name: fast}
spec: {type: openai, base_url: "FAST"}
---
apiVersion: reconciler/v1
kind: Task
metadata: {name: classify}
spec:
  response_schema: SCHEMA
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: slow-agent}
spec: {provider: slow, model_name: stub, system_prompt: "Classify the message.", temperature: 0.0, max_tokens: 64}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: fast-agent}
spec: {provider: fast, model_name: stub, system_prompt: "Classify the message.", temperature: 0.0, max_tokens: 64}
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: slow-classify}
spec: {agent: slow-agent, task: classify}
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: fast-classify}
spec: {agent: fast-agent, task: classify}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: slow-agent-b}
spec: {provider: slow, model_name: stub, system_prompt: "Classify the message, briefly.", temperature: 0.0, max_tokens: 64}
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: slow-b-classify}
spec: {agent: slow-agent-b, task: classify}
"""
EXPERIMENT_AGENTS = ("slow-agent", "slow-agent-b")
EXPERIMENT_WORKERS = 2  # a distributed experiment goes to queue w2


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "RECONCILER_RETRY_BASE_SECONDS": "0.05"}


def reconciler(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "reconciler", *args], env=env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"reconciler {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def start_stub(latency: float) -> tuple[subprocess.Popen[str], str]:
    answer = json.dumps({"category": "bug", "confidence": 90})
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stub_openai", "--latency", str(latency), "--answer", answer],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def run_manifest(name: str, assignment: str, items: int, concurrency: int) -> str:
    inputs = "\n".join(f"    - {json.dumps(p)}" for p in prompts(items))
    return (
        f"---\napiVersion: reconciler/v1\nkind: Run\nmetadata: {{name: {name}}}\nspec:\n  assignment: {assignment}\n"
        f"  concurrency: {concurrency}\n  max_retries: 2\n  inputs:\n{inputs}\n"
    )


def experiment_manifest(name: str, items: int, concurrency: int) -> str:
    spec = {"task": "classify", "agents": list(EXPERIMENT_AGENTS), "inputs": prompts(items), "concurrency": concurrency, "max_retries": 2}
    return "---\n" + json.dumps({"apiVersion": "reconciler/v1", "kind": "Experiment", "metadata": {"name": name}, "spec": spec}) + "\n"


class LocalRunner:
    """One warm process executing local runs one after another (as the workers are warm processes):
    the comparison is then the queue against no queue, not a cold process against a warm one."""

    def __init__(self, db: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--local-runner", db],
            env=env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, name: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        status = self.proc.stdout.readline().strip()
        if status != "completed":
            raise SystemExit(f"local run {name} ended {status or 'with the runner process'}")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def local_runner(db: str) -> None:
    from reconciler.runs.experiment import execute_experiment
    from reconciler.runs.service import RunOptions, execute_run
    from reconciler.state.db import open_engine

    engine = open_engine(db, create=False)
    for line in sys.stdin:  # every round sends the same prompts: the answer cache must not answer them
        kind, _, name = line.strip().rpartition("/")
        run = execute_experiment if kind == "experiment" else execute_run
        print(run(engine, name, RunOptions(use_cache=False)).status, flush=True)


def start_workers(db: str, concurrency: int) -> list[subprocess.Popen[str]]:
    """The workers, their events going to files (a pipe nobody reads would fill and stall them)."""
    workers, logs = [], []
    for i, queues in enumerate(QUEUES_OF_WORKER):
        log = Path(f"worker-{i}.jsonl")
        with log.open("w") as out:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "reconciler", "worker", "--db", db, "--concurrency", str(concurrency), "--queues", queues, "--json"],
                    env=env(),
                    stdout=out,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        logs.append(log)
    for log in logs:  # each says so once it listens
        while '"event": "started"' not in log.read_text():
            time.sleep(0.2)
    return workers


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc)."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far: every process, other jobs' too."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def elapsed_of(db: str, name: str) -> tuple[float, str]:
    kind, _, name = name.rpartition("/")
    if kind == "experiment":
        row = next(r for r in json.loads(reconciler("experiments", "list", "--db", db, "-o", "json").stdout) if r["name"] == name)
        return float(row["elapsed_s"]), row["status"]
    detail = json.loads(reconciler("runs", "show", name, "--db", db, "-o", "json").stdout)
    return float(detail["elapsed_seconds"]), detail["status"]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from tests.pgserver import running_postgres

    os.chdir(tempfile.mkdtemp(prefix="bench-distributed-"))
    slow, slow_url = start_stub(args.latency)
    fast, fast_url = start_stub(0.0)
    rates: dict[str, list[float]] = {}
    seconds_of: dict[str, list[float]] = {}
    cpu_ms: dict[str, list[float]] = {}  # CPU of the executing processes (runner or workers) per item
    busy: dict[str, list[float]] = {}  # share of the machine's CPU that was busy during the run
    load_before = os.getloadavg()
    try:
        with running_postgres() as pg:
            db = pg.create_database("bench")
            names: list[tuple[str, str, str | None]] = []  # (run, assignment, queue or None for local)
            for r in range(args.rounds):
                names.append((f"local-slow-{r}", "slow-classify", None))
                names += [(f"w{w}-slow-{r}", "slow-classify", f"w{w}") for w in WORKERS]
                for size in ("small", "large"):
                    names.append((f"local-fast{size}-{r}", f"fast-classify:{size}", None))
                    names.append((f"w1-fast{size}-{r}", f"fast-classify:{size}", "w1"))
                names.append((f"experiment/local-exp-{r}", "experiment", None))
                names.append((f"experiment/w{EXPERIMENT_WORKERS}-exp-{r}", "experiment", f"w{EXPERIMENT_WORKERS}"))
            root = Path("manifests")
            root.mkdir()
            (root / "config.yaml").write_text(CONFIG.replace("SLOW", slow_url).replace("FAST", fast_url).replace("SCHEMA", json.dumps(SCHEMA)))
            names_and_warm = [("warm-local", "fast-classify", None), ("warm-w4", "fast-classify", "w4"), *names]
            items = {
                n: args.items * (LARGE if a.endswith(":large") else len(EXPERIMENT_AGENTS) if a == "experiment" else 1) for n, a, _ in names_and_warm
            }
            (root / "runs.yaml").write_text(
                "".join(
                    experiment_manifest(n.split("/")[1], args.items, args.concurrency)
                    if a == "experiment"
                    else run_manifest(n, a.split(":")[0], items[n], args.concurrency)
                    for n, a, _ in names_and_warm
                )
            )
            reconciler("apply", str(root), "--db", db, "--auto-approve", "--no-validate")
            workers = start_workers(db, args.concurrency)
            local = LocalRunner(db)
            try:
                local.run("warm-local")  # both paths warm: imports, HTTP clients, agents
                reconciler("run", "warm-w4", "--db", db, "--distribute", "--wait", "--no-table", "--no-cache", "--queue", "w4")
                for name, _, queue in names:
                    pids = [local.proc.pid] if queue is None else [w.pid for w in workers]
                    cpu_before, (busy_before, total_before) = cpu_seconds(pids), machine_ticks()
                    if queue is None:
                        local.run(name)
                    else:
                        reconciler("run", name, "--db", db, "--distribute", "--wait", "--no-table", "--no-cache", "--queue", queue)
                    cpu = cpu_seconds(pids) - cpu_before
                    busy_after, total_after = machine_ticks()
                    seconds, status = elapsed_of(db, name)
                    if status != "completed":
                        raise SystemExit(f"run {name} ended {status}")
                    path = name.split("/")[-1].rsplit("-", 1)[0]
                    rates.setdefault(path, []).append(items[name] / seconds)
                    seconds_of.setdefault(path, []).append(seconds)
                    cpu_ms.setdefault(path, []).append(cpu * 1000 / items[name])
                    busy.setdefault(path, []).append((busy_after - busy_before) / max(1, total_after - total_before))
                    print(f"{name}: {items[name] / seconds:.1f} items/s", file=sys.stderr)
            finally:
                local.close()
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(timeout=60)
    finally:
        slow.terminate()
        fast.terminate()
    return {"rates": rates, "seconds": seconds_of, "cpu_ms": cpu_ms, "busy": busy, "load_before": load_before, "load_after": os.getloadavg()}


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.1f}" for x in values)


def report(args: argparse.Namespace, measured: dict[str, Any]) -> str:
    rates = measured["rates"]
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu = {k: statistics.median(v) for k, v in measured["cpu_ms"].items()}
    busy = {k: statistics.median(v) for k, v in measured["busy"].items()}
    ceiling = args.concurrency / args.latency  # one worker's items/s if requests were all it did
    lines = [
        f"`python bench/distributed.py --items {args.items} --latency {args.latency} --concurrency {args.concurrency} "
        f"--rounds {args.rounds}`. {os.cpu_count()} cores; load average (1/5/15 min) {_load(measured['load_before'])} at the start "
        f"and {_load(measured['load_after'])} at the end: the machine was shared with other jobs (other agents building and "
        "testing), so the figures are lower bounds and vary between rounds.",
        "",
        f"Stub answering after {args.latency * 1000:.0f} ms, {args.items} items per run, each worker capped at {args.concurrency} "
        f"items in flight (so one worker can do at most {ceiling:.0f} items/s):",
        "",
        "| path | items/s (median) | rounds | vs 1 worker | of the ceiling | CPU per item | machine busy |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
        f"| local run, concurrency {args.concurrency} | {med['local-slow']:.1f} | {_rounds(rates['local-slow'])} | | "
        f"{med['local-slow'] / ceiling:.0%} | {cpu['local-slow']:.1f} ms | {busy['local-slow']:.0%} |",
    ]
    for w in WORKERS:
        path = f"w{w}-slow"
        lines.append(
            f"| {w} worker{'s' if w > 1 else ''} | {med[path]:.1f} | {_rounds(rates[path])} | {med[path] / med['w1-slow']:.2f}x | "
            f"{med[path] / (w * ceiling):.0%} | {cpu[path]:.1f} ms | {busy[path]:.0%} |"
        )
    lines.append(
        f"| experiment, {len(EXPERIMENT_AGENTS)} arms, local | {med['local-exp']:.1f} | {_rounds(rates['local-exp'])} | | "
        f"{med['local-exp'] / ceiling:.0%} | {cpu['local-exp']:.1f} ms | {busy['local-exp']:.0%} |"
    )
    path = f"w{EXPERIMENT_WORKERS}-exp"
    lines.append(
        f"| experiment, {len(EXPERIMENT_AGENTS)} arms, {EXPERIMENT_WORKERS} workers | {med[path]:.1f} | {_rounds(rates[path])} | "
        f"{med[path] / med['local-exp']:.2f}x local | {med[path] / (EXPERIMENT_WORKERS * ceiling):.0%} | {cpu[path]:.1f} ms | {busy[path]:.0%} |"
    )
    lines += [
        "",
        f"Experiments: {args.items} inputs through {len(EXPERIMENT_AGENTS)} agents on the slow stub (items/s counts answers); "
        f"the local one at concurrency {args.concurrency} (one pool for both arms), the distributed one on {EXPERIMENT_WORKERS} workers.",
        "",
        "CPU per item: user + system time of the processes executing the run (the local runner, or all four workers) per item; "
        "machine busy: the share of both cores busy during the run, other jobs included.",
    ]
    seconds = {k: statistics.median(v) for k, v in measured["seconds"].items()}
    extra = (LARGE - 1) * args.items

    def slope(path: str) -> float:  # ms per item
        return (seconds[f"{path}-fastlarge"] - seconds[f"{path}-fastsmall"]) * 1000 / extra

    def fixed(path: str) -> float:  # s per run
        return seconds[f"{path}-fastsmall"] - slope(path) * args.items / 1000

    local, dist = slope("local"), slope("w1")
    lines += [
        "",
        f"Per-item cost against the stub that answers at once, at concurrency {args.concurrency}: the slope between runs of "
        f"{args.items} and {LARGE * args.items} items (wall time; fixed costs per run cancel out), one worker against a local run:",
        "",
        "| path | ms per item | fixed per run | items/s on the large run | CPU per item on the large run |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| local run | {local:.1f} | {fixed('local'):.2f} s | {med['local-fastlarge']:.1f} | {cpu['local-fastlarge']:.1f} ms |",
        f"| distributed, 1 worker | {dist:.1f} | {fixed('w1'):.2f} s | {med['w1-fastlarge']:.1f} | "
        f"{cpu['w1-fastlarge']:.1f} ms (all 4 workers' processes) |",
        "",
        f"Overhead of the task queue: {cpu['w1-fastlarge'] - cpu['local-fastlarge']:+.1f} ms of CPU per item "
        f"({(cpu['w1-fastlarge'] - cpu['local-fastlarge']) / cpu['local-fastlarge']:+.0%}); in wall time {dist - local:+.1f} ms "
        "per item, which on a shared machine is mostly noise (see the fixed costs).",
    ]
    return "\n".join(lines)


def _rounds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the slow stub takes per answer")
    parser.add_argument("--concurrency", type=int, default=4, help="items in flight per worker, and the local run's concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"replace the '{SECTION}' section of BENCHMARKS.md")
    parser.add_argument("--local-runner", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.local_runner:
        local_runner(args.local_runner)
        return
    body = report(args, measure(args))
    print(body)
    if args.write:
        from bench.report import update_benchmarks_md

        update_benchmarks_md(REPO / "BENCHMARKS.md", {SECTION: body})


if __name__ == "__main__":
    main()
