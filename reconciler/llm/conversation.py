"""What an agent sends the model, as plain data: its instructions, its few-shot turns, the prompt.

The adapter builds its requests from these functions and the answer cache hashes their result, so
the cache key is the conversation the model actually receives, not a description of it. Nothing here
imports an LLM framework.
"""

from __future__ import annotations

import json
from typing import Literal

from reconciler.llm.ports import AgentConfig, TaskConfig

OutputMode = Literal["native", "prompted", "text", "plain"]
TEXT_MODE_INSTRUCTIONS = "Answer with JSON only (no prose, no Markdown) that matches this JSON Schema:\n{schema}"


def output_name(task_name: str) -> str:
    """The name the structured output goes by in the request (letters, digits, '_' and '-')."""
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in task_name)[:64] or "output"


def instructions(agent: AgentConfig, task: TaskConfig, mode: str) -> str | None:
    """The system instructions: the agent's prompt, plus the schema itself when the answer is parsed from text."""
    parts = [agent.system_prompt] if agent.system_prompt else []
    if mode == "text":
        parts.append(TEXT_MODE_INSTRUCTIONS.format(schema=json.dumps(task.response_schema)))
    return "\n\n".join(parts) or None


def example_turns(agent: AgentConfig) -> list[tuple[str, str]]:
    """(user message, assistant answer) per few-shot example; a structured answer as the JSON the model should write."""
    return [(e.input, e.output if isinstance(e.output, str) else json.dumps(e.output, ensure_ascii=False)) for e in agent.examples]


def conversation(agent: AgentConfig, task: TaskConfig, mode: str, prompt: str) -> list[dict[str, str]]:
    """The messages of one request, in order: system, the example turns, the prompt."""
    system = instructions(agent, task, mode)
    messages = [{"role": "system", "content": system}] if system is not None else []
    for question, answer in example_turns(agent):
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": prompt})
    return messages
