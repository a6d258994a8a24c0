"""Fixtures for the GitOps tests: a small manifest set and real git repositories."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path


PROVIDER = """
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: {name}{annotations}}}
spec: {{type: openai, base_url: "http://127.0.0.1:9/v1"}}
"""
AGENT = """
apiVersion: reconciler/v1
kind: Agent
metadata: {{name: {name}{annotations}}}
spec: {{provider: {provider}, model_name: m, system_prompt: "{prompt}", temperature: {temperature}}}
"""
TASK = """
apiVersion: reconciler/v1
kind: Task
metadata: {{name: {name}}}
spec: {{response_schema: {{type: object}}}}
"""
ASSIGNMENT = """
apiVersion: reconciler/v1
kind: Assignment
metadata: {{name: {name}}}
spec: {{agent: {agent}, task: {task}}}
"""


def _annotations(protected: bool) -> str:
    return ', annotations: {"reconciler/prevent-destroy": "true"}' if protected else ""


def provider(name: str = "openai", protected: bool = False) -> str:
    return PROVIDER.format(name=name, annotations=_annotations(protected))


def agent(name: str, provider: str = "openai", temperature: float = 0.2, prompt: str = "be brief", protected: bool = False) -> str:
    return AGENT.format(name=name, provider=provider, temperature=temperature, prompt=prompt, annotations=_annotations(protected))


def task(name: str) -> str:
    return TASK.format(name=name)


def assignment(name: str, agent: str, task: str) -> str:
    return ASSIGNMENT.format(name=name, agent=agent, task=task)


def config(agents: dict[str, float] | None = None, protected: set[str] = frozenset()) -> dict[str, str]:  # type: ignore[assignment]
    """A provider, one agent per entry (name -> temperature), a task and one assignment per agent."""
    agents = {"triage": 0.2} if agents is None else agents
    docs = {"providers.yaml": provider("openai", "provider/openai" in protected), "tasks.yaml": task("classify")}
    docs["agents.yaml"] = "---".join(agent(n, temperature=t, protected=f"agent/{n}" in protected) for n, t in agents.items()) or "# none\n"
    docs["assignments.yaml"] = "---".join(assignment(f"{n}-classify", n, "classify") for n in agents) or "# none\n"
    return docs


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Ada Lovelace",
    "GIT_COMMITTER_EMAIL": "ada@example.org",
}


class GitRepo:
    """A real git repository in a temporary directory; ``commit(files, message)`` writes and commits."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        out = subprocess.run(["git", *args], cwd=self.root, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def write(self, files: dict[str, str | None], under: str = "manifests") -> None:
        for name, text in files.items():
            path = self.root / under / name
            if text is None:
                path.unlink(missing_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")

    def commit(self, files: dict[str, str | None], message: str, under: str = "manifests") -> str:
        self.write(files, under)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")
