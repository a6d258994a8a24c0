"""Runner overhead, measured side by side in one process run.

1. Stub: a local OpenAI-compatible stub server (its own process) that answers at once. N items at
   concurrency C through (a) a bare loop of raw OpenAI-client calls, (b) a bare loop of pydantic-ai
   ``Agent.run`` calls with the same structured output, (c) the full runner: registry, schema
   validation, results stored in SQLite, counters, accuracy. Rounds alternate; the median is reported.
2. Local model: the embedded llama.cpp server; plain concurrent HTTP calls (same payload shape)
   vs the full runner, at the server's parallelism.

    python bench/runner_overhead.py [--items 1000] [--concurrency 32] [--rounds 3] [--local-items 24]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["bug", "feature", "question", "discussion"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["category", "confidence"],
    "additionalProperties": False,
}
SYSTEM = "Classify the user's message as bug, feature, question or discussion. Answer with JSON only."
MESSAGES = [
    "The app crashes when I log in on iOS",
    "Please add an option to export reports as PDF",
    "How do I reset my password?",
    "I think the new design looks cleaner than the old one",
]


def prompts(n: int) -> list[str]:
    return [f"Message: {MESSAGES[i % len(MESSAGES)]} (#{i})" for i in range(n)]


def start_stub() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stub_openai"], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def _pool(n_workers: int, items: list[str], call) -> float:  # type: ignore[no-untyped-def]
    it = iter(items)

    async def worker() -> None:
        for p in it:
            await call(p)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(n_workers)))
    return time.perf_counter() - t0


def raw_openai(base_url: str, items: list[str], concurrency: int, model: str = "stub", parse: bool = True) -> float:
    from openai import AsyncOpenAI

    async def main() -> float:
        client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
        fmt = {"type": "json_schema", "json_schema": {"name": "classify", "schema": SCHEMA}}

        async def call(p: str) -> None:
            r = await client.chat.completions.create(
                model=model, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}],
                response_format=fmt, temperature=0.0, max_tokens=64,  # type: ignore[arg-type]
            )
            if parse:  # the stub always answers valid JSON; a real model may not (the runner retries those)
                json.loads(r.choices[0].message.content or "")

        try:
            return await _pool(concurrency, items, call)
        finally:
            await client.close()

    return asyncio.run(main())


def bare_pydantic_ai(base_url: str, items: list[str], concurrency: int) -> float:
    from pydantic_ai import Agent, NativeOutput, StructuredDict
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from openai import AsyncOpenAI

    async def main() -> float:
        # the same client set-up the runner uses (a fresh client per event loop, no SDK retries), so the
        # comparison measures the runner, not two HTTP stacks
        client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
        model = OpenAIChatModel("stub", provider=OpenAIProvider(openai_client=client))
        agent = Agent(model, output_type=NativeOutput(StructuredDict(SCHEMA, name="classify")), instructions=SYSTEM,
                      model_settings={"temperature": 0.0, "max_tokens": 64})

        async def call(p: str) -> None:
            await agent.run(p)

        try:
            return await _pool(concurrency, items, call)
        finally:
            await client.close()

    return asyncio.run(main())


MANIFESTS = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: bench}
spec: {type: PTYPE, base_url: "BASE"}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: classifier}
spec: {provider: bench, model_name: MODEL, system_prompt: "SYSTEM", temperature: 0.0, max_tokens: 64}
---
apiVersion: reconciler/v1
kind: Task
metadata: {name: classify}
spec:
  response_schema: SCHEMA
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: classifier-classify}
spec: {agent: classifier, task: classify}
"""


def full_runner(base_url: str, items: list[str], concurrency: int, ptype: str = "openai", model: str = "stub", require_valid: bool = True) -> float:
    """Apply config + a run into a fresh SQLite database, then time ``execute_run`` alone."""
    from reconciler.cli import main as cli_main
    from reconciler.llm import registry
    from reconciler.runs.service import RunOptions, execute_run
    from reconciler.state.db import open_engine

    work = Path(tempfile.mkdtemp(prefix="bench-runner-"))
    (work / "m").mkdir()
    text = (MANIFESTS.replace("PTYPE", ptype).replace("BASE", base_url.removesuffix("/v1")).replace("MODEL", model)
            .replace("SYSTEM", SYSTEM).replace("SCHEMA", json.dumps(SCHEMA)))
    (work / "m" / "config.yaml").write_text(text)
    run = {"apiVersion": "reconciler/v1", "kind": "Run", "metadata": {"name": "bench"},
           "spec": {"assignment": "classifier-classify", "inputs": items, "concurrency": concurrency}}
    (work / "m" / "run.yaml").write_text(json.dumps(run))
    db = f"sqlite:///{work / 'state.db'}"
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cli_main(["apply", str(work / "m"), "--db", db, "--auto-approve"])
    except SystemExit as exc:
        assert exc.code == 0
    registry._default = None  # a fresh registry: creation cost is part of the measurement
    engine = open_engine(db, create=False)
    t0 = time.perf_counter()
    summary = execute_run(engine, "bench", RunOptions())
    elapsed = time.perf_counter() - t0
    assert summary.items_unfinished == 0 and (summary.items_succeeded == len(items) or not require_valid), summary
    return elapsed


def stub_section(n: int, concurrency: int, rounds: int) -> dict[str, list[float]]:
    proc, base_url = start_stub()
    items = prompts(n)
    rates: dict[str, list[float]] = {"raw openai client": [], "bare pydantic-ai Agent.run": [], "full runner (registry, validation, SQLite)": []}
    try:
        raw_openai(base_url, items[:50], concurrency)  # warm-up
        for _ in range(rounds):
            rates["raw openai client"].append(n / raw_openai(base_url, items, concurrency))
            rates["bare pydantic-ai Agent.run"].append(n / bare_pydantic_ai(base_url, items, concurrency))
            rates["full runner (registry, validation, SQLite)"].append(n / full_runner(base_url, items, concurrency))
    finally:
        proc.terminate()
        proc.wait()
    return rates


def local_section(n: int, concurrency: int, rounds: int) -> dict[str, list[float]]:
    from reconciler.llm.llamacpp_shared import ensure_server, stop_shared_servers

    base_url = ensure_server()
    items = prompts(n)
    rates: dict[str, list[float]] = {"plain concurrent HTTP (openai client)": [], "full runner": []}
    try:
        raw_openai(base_url, items[:2], concurrency, model="gemma3-270m", parse=False)  # warm-up
        for _ in range(rounds):
            rates["plain concurrent HTTP (openai client)"].append(n / raw_openai(base_url, items, concurrency, model="gemma3-270m", parse=False))
            rates["full runner"].append(n / full_runner(base_url, items, concurrency, ptype="llamacpp", model="gemma3-270m", require_valid=False))
    finally:
        stop_shared_servers()
    return rates


def report(title: str, rates: dict[str, list[float]], baseline: str) -> str:
    lines = [f"{title}", "", "| path | items/s (median) | rounds | vs " + baseline + " |", "| --- | ---: | --- | ---: |"]
    base = statistics.median(rates[baseline])
    for name, values in rates.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:.3g} | {', '.join(f'{v:.3g}' for v in values)} | {med / base:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-items", type=int, default=24, help="0 skips the local-model section")
    parser.add_argument("--local-concurrency", type=int, default=2)
    parser.add_argument("--local-rounds", type=int, default=2)
    args = parser.parse_args()
    import pydantic_ai.models

    pydantic_ai.models.ALLOW_MODEL_REQUESTS = True
    os.chdir(tempfile.mkdtemp(prefix="bench-cwd-"))
    stub = stub_section(args.items, args.concurrency, args.rounds)
    print(report(f"Stub server, {args.items} items at concurrency {args.concurrency}", stub, "bare pydantic-ai Agent.run"))
    if args.local_items:
        local = local_section(args.local_items, args.local_concurrency, args.local_rounds)
        print()
        print(report(f"Embedded llama.cpp (Gemma 3 270M), {args.local_items} items at concurrency {args.local_concurrency}",
                     local, "plain concurrent HTTP (openai client)"))


if __name__ == "__main__":
    main()
