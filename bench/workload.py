"""Synthetic workloads: N resources as plain data, a deterministic mutation of them, and both tools'
renderings (reconciler manifests, Terraform ``terraform_data`` config) of the same resources.

The mix follows what a team with many agents has: few providers, many agents with multi-line
prompts, tasks with response schemas, and assignments tying agents to tasks.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

MIX = {"Provider": 0.05, "Agent": 0.35, "Task": 0.25, "Assignment": 0.35}
KINDS = tuple(MIX)
DOCS_PER_FILE = 1_000  # well under the loader's 20,000 documents / 16 MiB per file
SECRET_ENV = "BENCH_LLM_API_KEY"
TEAMS = ("support", "sales", "research", "ops", "billing", "legal", "growth", "platform")
CATEGORIES = ("bug", "feature", "question", "discussion", "billing", "security", "praise", "other")

Spec = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    kind: str
    name: str
    labels: dict[str, str]
    spec: Spec


@dataclass(frozen=True)
class Workload:
    """Resources keyed by (kind, name), in a stable order."""

    resources: dict[tuple[str, str], Resource]

    def __len__(self) -> int:
        return len(self.resources)

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.kind == kind]


def _counts(n: int) -> dict[str, int]:
    counts = {kind: max(1, round(n * share)) for kind, share in MIX.items()}
    counts["Assignment"] = max(1, n - sum(v for k, v in counts.items() if k != "Assignment"))
    return counts


def _prompt(rng: random.Random, team: str, i: int) -> str:
    cats = rng.sample(CATEGORIES, 4)
    lines = [
        f"You are assistant number {i} of the {team} team.",
        f"Classify each message as exactly one of: {', '.join(cats)}.",
        *(f"- {c}: messages about {c} matters, as described in the {team} playbook section {rng.randint(1, 40)}." for c in cats),
        "Answer with JSON only, following the response schema.",
    ]
    return "\n".join(lines) + "\n"


def _schema(rng: random.Random) -> Spec:
    cats = rng.sample(CATEGORIES, rng.randint(3, 6))
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "category": {"type": "string", "enum": cats},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "summary": {"type": "string", "maxLength": rng.choice((80, 120, 200))},
        },
        "required": ["category", "confidence"],
        "additionalProperties": False,
    }


def _provider(i: int) -> Resource:
    name = f"provider-{i:06d}"
    if i % 3 == 0:
        spec: Spec = {"type": "ollama", "base_url": f"http://ollama-{i}.internal:11434"}
    else:
        spec = {"type": "openai", "base_url": f"https://llm-{i}.example.com/v1", "api_key": {"from_env": SECRET_ENV}}
    return Resource("Provider", name, {"tier": "shared" if i % 2 else "dedicated"}, spec)


def generate(n: int, seed: int = 42) -> Workload:
    """About ``n`` resources in the MIX proportions; the same n and seed give the same workload."""
    rng = random.Random(seed)
    counts = _counts(n)
    out: dict[tuple[str, str], Resource] = {}
    providers = [_provider(i) for i in range(counts["Provider"])]
    agents = [_agent(rng, i, providers) for i in range(counts["Agent"])]
    tasks = [_task(rng, i) for i in range(counts["Task"])]
    for r in (*providers, *agents, *tasks, *_assignments(counts["Assignment"], agents, tasks)):
        out[(r.kind, r.name)] = r
    return Workload(out)


def _agent(rng: random.Random, i: int, providers: list[Resource]) -> Resource:
    team = TEAMS[i % len(TEAMS)]
    spec = {
        "description": f"Triage agent {i} for the {team} team",
        "provider": providers[i % len(providers)].name,
        "model_name": rng.choice(("gpt-4o-mini", "llama3.1:8b", "qwen2.5:7b", "gemma3-270m")),
        "system_prompt": _prompt(rng, team, i),
        "temperature": rng.choice((0.0, 0.2, 0.5, 0.7)),
        "max_tokens": rng.choice((64, 256, 1024)),
    }
    return Resource("Agent", f"agent-{i:06d}", {"team": team}, spec)


def _task(rng: random.Random, i: int) -> Resource:
    spec = {"description": f"Categorise incoming messages, variant {i}", "response_schema": _schema(rng)}
    return Resource("Task", f"task-{i:06d}", {"team": TEAMS[i % len(TEAMS)]}, spec)


def _assignments(count: int, agents: list[Resource], tasks: list[Resource], prefix: str = "assign") -> list[Resource]:
    """Distinct (agent, task) pairs: each lap over the agents shifts their task by one."""
    out = []
    for i in range(count):
        lap, a = divmod(i, len(agents))
        agent, task = agents[a], tasks[(a + lap) % len(tasks)]
        out.append(Resource("Assignment", f"{prefix}-{i:06d}", {}, {"agent": agent.name, "task": task.name}))
    return out


def mutate(workload: Workload, seed: int = 7) -> Workload:
    """10% of resources changed, 1% deleted (assignments, which nothing refers to), 1% added."""
    rng = random.Random(seed)
    resources = dict(workload.resources)
    n = len(resources)
    keys = list(resources)
    for key in rng.sample(keys, max(1, n // 10)):
        resources[key] = _changed(resources[key], rng)
    assignments = [k for k in keys if k[0] == "Assignment"]
    for key in rng.sample(assignments, max(1, n // 100)):
        del resources[key]
    agents = [r for r in resources.values() if r.kind == "Agent"]
    tasks = [r for r in resources.values() if r.kind == "Task"]
    added = max(1, n // 100)
    new_agents = [_agent(rng, len(agents) + i, workload.of_kind("Provider")) for i in range(added // 2)]
    new_tasks = [_task(rng, len(tasks) + i) for i in range(max(1, added // 4))]
    # new agents only, so the new pairs cannot collide with existing ones
    new_assignments = _assignments(added - len(new_agents) - len(new_tasks), new_agents, tasks, "assign-new") if new_agents else []
    for r in (*new_agents, *new_tasks, *new_assignments):
        resources[(r.kind, r.name)] = r
    return Workload(resources)


def _changed(r: Resource, rng: random.Random) -> Resource:
    spec = dict(r.spec)
    if r.kind == "Provider":
        spec["base_url"] = spec["base_url"].replace("://", "://v2-")
    elif r.kind == "Agent":
        spec["temperature"] = round(1.0 + rng.random(), 2)
        spec["system_prompt"] = spec["system_prompt"] + "Be concise.\n"
    elif r.kind == "Task":
        spec["description"] = spec["description"] + " (revised)"
    else:
        spec["is_active"] = False
    return replace(r, spec=spec)


# --- rendering ---------------------------------------------------------------------------------


class _ManifestDumper(yaml.CSafeDumper if hasattr(yaml, "CSafeDumper") else yaml.SafeDumper):  # type: ignore[misc]
    """Multi-line strings as literal blocks, as people write prompts."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_ManifestDumper.add_representer(str, _str)


def _document(r: Resource) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": r.name}
    if r.labels:
        metadata["labels"] = r.labels
    return {"apiVersion": "reconciler/v1", "kind": r.kind, "metadata": metadata, "spec": r.spec}


def write_manifests(workload: Workload, directory: Path, docs_per_file: int = DOCS_PER_FILE) -> Path:
    """Files of at most ``docs_per_file`` documents, one kind per file."""
    directory.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        docs = [_document(r) for r in workload.of_kind(kind)]
        for part, start in enumerate(range(0, len(docs), docs_per_file)):
            text = yaml.dump_all(docs[start : start + docs_per_file], Dumper=_ManifestDumper, sort_keys=False, width=200)
            (directory / f"{kind.lower()}s-{part:03d}.yaml").write_text(text, encoding="utf-8")
    return directory


def _tf_name(kind: str, name: str) -> str:
    return f"{kind.lower()}_{name}"


def _ref(kind: str, name: str) -> str:
    """A reference to another resource's output, which also orders them, like our references."""
    return "${terraform_data.%s.output.name}" % _tf_name(kind, name)


def _tf_input(r: Resource) -> dict[str, Any]:
    spec = dict(r.spec)
    if r.kind == "Provider" and "api_key" in spec:
        spec["api_key"] = "${var.llm_api_key}"
    elif r.kind == "Agent":
        spec["provider"] = _ref("Provider", spec["provider"])
    elif r.kind == "Assignment":
        spec["agent"] = _ref("Agent", spec["agent"])
        spec["task"] = _ref("Task", spec["task"])
    return {"name": r.name, "labels": r.labels, "is_active": spec.pop("is_active", True), **spec}


def write_terraform(workload: Workload, directory: Path) -> Path:
    """The same resources as ``terraform_data`` (built into Terraform >= 1.4, no provider download),
    in JSON configuration syntax, files of at most DOCS_PER_FILE resources."""
    directory.mkdir(parents=True, exist_ok=True)
    variables = {"variable": {"llm_api_key": {"type": "string", "sensitive": True, "default": "bench-key"}}}
    (directory / "variables.tf.json").write_text(json.dumps(variables, indent=1), encoding="utf-8")
    resources = list(workload.resources.values())
    for part, start in enumerate(range(0, len(resources), DOCS_PER_FILE)):
        block = {_tf_name(r.kind, r.name): {"input": _tf_input(r)} for r in resources[start : start + DOCS_PER_FILE]}
        text = json.dumps({"resource": {"terraform_data": block}}, indent=1)
        (directory / f"resources-{part:03d}.tf.json").write_text(text, encoding="utf-8")
    return directory


def write_terraform_count(n: int, directory: Path, changed: bool) -> Path:
    """The simplest Terraform workload of the same size: one ``terraform_data`` block with
    ``count = n``. After changes, one instance in ten holds another value (10% modified)."""
    directory.mkdir(parents=True, exist_ok=True)
    kind = '${count.index %% 10 == 3 ? "agent-v2" : "agent"}' if changed else "agent"
    block = {"items": {"count": n, "input": {"name": "item-${count.index}", "kind": kind.replace("%%", "%")}}}
    text = json.dumps({"resource": {"terraform_data": block}}, indent=1)
    (directory / "resources.tf.json").write_text(text, encoding="utf-8")
    return directory
