"""Fixtures for run tests: manifests with a run, and a FunctionModel behind the llamacpp provider type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.messages import ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

# The task and its assignment every run test uses; only the provider and agent in front vary.
CLASSIFY_TASK = """
---
apiVersion: reconciler/v1
kind: Task
metadata: {name: classify}
spec:
  response_schema:
    type: object
    properties:
      category: {type: string, enum: [bug, feature, question]}
      confidence: {type: integer, minimum: 0, maximum: 100}
    required: [category, confidence]
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: classifier-classify}
spec: {agent: classifier, task: classify}
"""

CONFIG = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: local}
spec: {type: llamacpp}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: classifier}
spec: {provider: local, model_name: gemma3-270m, system_prompt: Classify the message., temperature: 0.0}""" + CLASSIFY_TASK

# The same behind an OpenAI-compatible server (tests.stub_openai); BASE is its base URL.
STUB_CONFIG = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: stub}
spec: {type: openai, base_url: "BASE"}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: classifier}
spec: {provider: stub, model_name: gpt-4o-mini, temperature: 0.0}""" + CLASSIFY_TASK

RUN = """
apiVersion: reconciler/v1
kind: Run
metadata: {name: sample}
spec:
  assignment: classifier-classify
  prompt_template: "Message: {text}"
  expected: category
  concurrency: 3
  inputs:
    - {text: "The app crashes on login", category: bug}
    - {text: "Please add dark mode", category: feature}
    - {text: "How do I reset my password?", category: question}
    - {text: "Export is broken", category: bug}
"""


def spawn_run(name: str, db: str, cwd: Path) -> subprocess.Popen[str]:
    """``reconciler run NAME --json`` in its own process (one a test can kill), this checkout first on the path."""
    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "run", name, "--db", db, "--json"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def keyword_classifier(prompt: str) -> dict[str, Any]:
    text = prompt.lower()
    category = "question" if "?" in text else "feature" if "add" in text else "bug"
    return {"category": category, "confidence": 80}


Answer = Callable[[str], "dict[str, Any] | str"]


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> Callable[[Answer], list[str]]:
    """Route provider type llamacpp to a FunctionModel answering ``answer(prompt)``; returns the prompts seen."""
    from reconciler.llm import pydantic_ai_adapter, registry

    def install(answer: Answer) -> list[str]:
        prompts: list[str] = []

        def fn(messages: list, info: AgentInfo) -> ModelResponse:
            prompt = next(p.content for p in messages[0].parts if getattr(p, "part_kind", "") == "user-prompt")
            prompts.append(prompt)
            value = answer(prompt)
            return ModelResponse(parts=[TextPart(value if isinstance(value, str) else json.dumps(value))])

        class Factory:
            def create_model(self, provider: Any, model_name: str, settings: Any) -> FunctionModel:
                return FunctionModel(fn)

        monkeypatch.setitem(pydantic_ai_adapter.MODEL_FACTORIES, "llamacpp", Factory)
        monkeypatch.setattr(registry, "_default", None)
        return prompts

    return install
