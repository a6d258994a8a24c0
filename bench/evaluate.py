"""`plan --evaluate`, measured: its overhead over the model calls themselves (issue 13).

One assignment whose agent's system prompt the plan changes, its task's evaluation of N labelled
items: `plan --evaluate` answers them with the configuration before and after (2 x N calls) against
the stub server in its own process, answering every call after a fixed latency L. With concurrency C
the calls alone take at least 2 x N x L / C. Each round, in a fresh copy of an applied SQLite database
(the answer cache empty), wall time of the whole command, start-up included:

- `plan` (no evaluation): what planning costs anyway;
- `plan --evaluate`, cache empty: planning, the 2 x N calls, the behaviour diff;
- `plan --evaluate` again, every answer in the cache: the evaluation without any model call.

overhead = cold - plan - 2 x N x L / C: what the evaluation adds besides waiting for the model.

    python bench/evaluate.py [--items 200] [--latency 0.05] [--concurrency 4] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.runner_overhead import MESSAGES, SCHEMA  # noqa: E402

SECTION = "plan --evaluate: overhead over the model calls"

def _config(base_url: str, prompt: str, task: str) -> str:
    """The provider, the agent with ``prompt`` and its assignment to ``task`` (JSON documents are YAML)."""
    documents = [
        ("Provider", "bench", {"type": "openai-compatible", "base_url": base_url}),
        ("Agent", "classifier", {"provider": "bench", "model_name": "stub", "system_prompt": prompt, "temperature": 0.0, "max_tokens": 64}),
        ("Assignment", "classifier-classify", {"agent": "classifier", "task": "classify"}),
    ]
    texts = [json.dumps({"apiVersion": "reconciler/v1", "kind": k, "metadata": {"name": n}, "spec": spec}) for k, n, spec in documents]
    return "\n---\n".join([*texts, task]) + "\n"


def _task(items: int, concurrency: int) -> str:
    inputs = [{"text": f"{MESSAGES[i % len(MESSAGES)]} (#{i})", "category": "bug"} for i in range(items)]
    spec = {
        "response_schema": SCHEMA,
        "evaluation": {
            "inputs": inputs,
            "prompt_template": "Message: {text}",
            "expected": {"input": "category", "output": "category"},
            "gate": {"min_accuracy": 0.5},
            "concurrency": concurrency,
        },
    }
    return json.dumps({"apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": "classify"}, "spec": spec})


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "RECONCILER_NO_CACHE": "1"}


def _timed(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=cwd, env=_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 2):
        raise RuntimeError(f"reconciler {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed


def _start_stub(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stub_openai", "--latency", str(latency)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def measure(items: int, latency: float, concurrency: int, rounds: int) -> dict[str, object]:
    stub, base_url = _start_stub(latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            manifests = root / "manifests"
            manifests.mkdir()
            task = _task(items, concurrency)
            (manifests / "config.yaml").write_text(_config(base_url, "Classify.", task))
            applied = root / "applied.db"
            _timed(["apply", str(manifests), "--db", f"sqlite:///{applied}", "--auto-approve", "--no-validate"], root)
            (manifests / "config.yaml").write_text(_config(base_url, "Classify the message.", task))
            figures: dict[str, list[float]] = {"plan": [], "cold": [], "warm": []}
            for r in range(rounds):
                db = root / f"round-{r}.db"
                shutil.copy(applied, db)
                url = f"sqlite:///{db}"
                figures["plan"].append(_timed(["plan", str(manifests), "--db", url], root))
                figures["cold"].append(_timed(["plan", str(manifests), "--db", url, "--evaluate"], root))
                figures["warm"].append(_timed(["plan", str(manifests), "--db", url, "--evaluate"], root))
    finally:
        stub.terminate()
        stub.wait()
    medians = {k: statistics.median(v) for k, v in figures.items()}
    model = 2 * items * latency / concurrency
    return {
        "items": items,
        "latency": latency,
        "concurrency": concurrency,
        "rounds": figures,
        "medians": medians,
        "model_seconds": model,
        "overhead_seconds": medians["cold"] - medians["plan"] - model,
        "load": os.getloadavg()[0],
    }


def render(result: dict[str, object], argv: list[str]) -> str:
    m: dict[str, float] = result["medians"]  # type: ignore[assignment]
    rounds: dict[str, list[float]] = result["rounds"]  # type: ignore[assignment]
    items, latency, concurrency = result["items"], result["latency"], result["concurrency"]
    model, overhead = float(result["model_seconds"]), float(result["overhead_seconds"])  # type: ignore[arg-type]
    calls = 2 * int(items)  # type: ignore[call-overload]

    def row(label: str, key: str) -> str:
        return f"| {label} | {m[key]:.2f} s | {', '.join(f'{v:.2f}' for v in rounds[key])} |"

    return "\n".join(
        [
            f"`python bench/evaluate.py {' '.join(argv)}` (bench/evaluate.py says how). One assignment, {items} labelled items,",
            f"the stub server answering each call after {float(latency) * 1000:.0f} ms, evaluation concurrency {concurrency};",
            f"whole commands, start-up included; load average {float(result['load']):.1f} at the end (2-core machine shared with other jobs).",  # type: ignore[arg-type]
            "",
            "| command | wall (median) | rounds |",
            "| --- | ---: | --- |",
            row("`plan` (no evaluation)", "plan"),
            row(f"`plan --evaluate`, answer cache empty ({calls} calls)", "cold"),
            row("`plan --evaluate` again (every answer from the cache, no call)", "warm"),
            "",
            f"The calls alone take at least {model:.2f} s ({calls} x {float(latency) * 1000:.0f} ms / {concurrency}). Overhead of the evaluation",  # type: ignore[arg-type]
            f"besides planning and waiting for the model: **{overhead:.2f} s**, of which {m['warm'] - m['plan']:.2f} s is fixed (the warm",
            "evaluation over the plan: importing pydantic-ai and the SDK, creating the agents, the cache lookup, the report) and",
            f"{(m['cold'] - m['warm'] - model) / calls * 1000:.1f} ms per call (the runner's client and validation, the stub's own handling on the",
            "same two cores, the answer cache's writes). The runner-overhead section measures the per-call part on a quiet",
            "machine: about 4.5 ms per item (222 items/s).",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the stub takes per answer")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"replace the '{SECTION}' section of BENCHMARKS.md")
    args = parser.parse_args(argv)
    result = measure(args.items, args.latency, args.concurrency, args.rounds)
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write"]
    body = render(result, shown)
    print(body)
    if args.write:
        from bench.report import update_benchmarks_md

        update_benchmarks_md(REPO / "BENCHMARKS.md", {SECTION: body})


if __name__ == "__main__":
    main()
