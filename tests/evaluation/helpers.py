"""A classifier behind the stub OpenAI server whose task has an evaluation: the careful system prompt
answers by keywords (every item right), the lazy one always says bug (two of six right)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.runs.conftest import STUB_CONFIG
from tests.runs.experiment_helpers import BAD, GOOD, ITEMS

GATE = {"min_accuracy": 0.6, "max_drop": 0.1}


def evaluation(gate: dict[str, Any] | None = None, items: list[dict[str, Any]] = ITEMS) -> dict[str, Any]:
    return {
        "inputs": items,
        "prompt_template": "Message: {text}",
        "expected": {"input": "category", "output": "category"},
        "gate": GATE if gate is None else gate,
        "concurrency": 2,
    }


def config(base_url: str, prompt: str = GOOD, gate: dict[str, Any] | None = None) -> str:
    """The run tests' stub configuration, the agent's system prompt ``prompt``, its task with an evaluation (JSON is YAML)."""
    text = STUB_CONFIG.replace("BASE", base_url).replace("temperature: 0.0}", f"temperature: 0.0, system_prompt: {json.dumps(prompt)}}}")
    required = "    required: [category, confidence]\n"
    assert required in text
    return text.replace(required, required + f"  evaluation: {json.dumps(evaluation(gate))}\n")


def write_config(write_manifests: Any, base_url: str, prompt: str = GOOD, gate: dict[str, Any] | None = None) -> Path:
    return write_manifests({"config.yaml": config(base_url, prompt, gate)})


__all__ = ["BAD", "GOOD", "ITEMS", "write_config"]
