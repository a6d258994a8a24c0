"""Pure computations over a run: config snapshot and its hash, prompts, accuracy, cost, final status."""

from __future__ import annotations

import json
from typing import Any

from reconciler.hashing import sha256_hex
from reconciler.kinds.expected import expected_fields
from reconciler.llm.ports import AgentConfig, ProviderConfig, TaskConfig
from reconciler.llm.provider_types import provider_type


def config_snapshot(provider: ProviderConfig, agent: AgentConfig, task: TaskConfig, model_file: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fully resolved configuration a run used (never a secret). Runs with equal snapshots share a hash."""
    provider_part: dict[str, Any] = {"name": provider.name, "type": provider.type, "base_url": provider.base_url}
    if provider.type == "llamacpp":  # the model file answers, whatever the agent's model_name
        provider_part["model_path"] = provider.model_path
        if model_file:
            provider_part["model_file"] = model_file
    return {
        "provider": provider_part,
        "agent": {
            "name": agent.name,
            "model_name": agent.model_name,
            "system_prompt": agent.system_prompt,
            "temperature": agent.temperature,
            "max_tokens": agent.max_tokens,
            "prices": agent.prices,
            # only when there are some, so snapshots (and hashes) of runs without examples stay as they were
            **({"examples": [{"input": e.input, "output": e.output} for e in agent.examples]} if agent.examples else {}),
        },
        "task": {"name": task.name, "response_schema": task.response_schema},
    }


def snapshot_sha256(snapshot: dict[str, Any]) -> str:
    return sha256_hex(snapshot)


def render_prompt(item: dict[str, Any], template: str | None, expected: Any) -> str:
    """The prompt for one input: the template filled in, a bare string as is, else the fields as JSON
    (without the expected answer, which the model must not see)."""
    if template is not None:
        return template.format_map(item)
    if set(item) == {"input"}:
        return str(item["input"])
    fields = expected_fields(expected)
    hidden = fields[0] if fields else None
    shown = {k: v for k, v in item.items() if k != hidden}
    if len(shown) == 1:
        return str(next(iter(shown.values())))
    return json.dumps(shown, ensure_ascii=False)


def _norm(value: Any) -> str:
    return str(value).strip().lower() if not isinstance(value, (dict, list)) else json.dumps(value, sort_keys=True)


def answer_of(output: Any, field: str) -> Any:
    """The part of an output compared with the expected answer: its ``field``, else the whole output
    (a task whose answer is a string or a number)."""
    if isinstance(output, dict) and field in output:
        return output[field]
    return output


def comparable(value: Any) -> str | None:
    """An answer as compared: trimmed and lower-cased text (or canonical JSON); None for no answer."""
    return None if value is None else _norm(value)


def is_correct(output: Any, item: dict[str, Any], expected: Any) -> bool:
    """Does a valid ``output`` give the answer ``item`` expects? ``expected`` as stored in the spec."""
    fields = expected_fields(expected)
    if fields is None or output is None or not isinstance(item, dict):
        return False
    return _norm(answer_of(output, fields[1])) == _norm(item.get(fields[0]))


def expected_value(item: Any, expected: Any) -> Any:
    """The right answer an input carries (None without ``expected``)."""
    fields = expected_fields(expected)
    return item.get(fields[0]) if fields is not None and isinstance(item, dict) else None


def accuracy(valid: list[tuple[Any, Any]], finished: int, expected: Any) -> float | None:
    """Share of finished items whose valid output matches the expected field: ``valid`` holds the
    (input, output) of valid results only; failed items count as wrong."""
    if not expected or not finished:
        return None
    correct = sum(1 for item, output in valid if is_correct(output, item, expected))
    return correct / finished


def estimate_cost(
    provider_type_name: str,
    model_name: str,
    prices: dict[str, float] | None,
    input_tokens: int,
    output_tokens: int,
    *,
    base_url: str | None = None,
) -> float:
    """USD: the agent's own prices if given, zero for local models, else genai-prices (zero if unknown):
    by the type's provider id, or for an OpenAI-compatible server by its URL (OpenRouter, Groq, ...)."""
    if prices:
        return (input_tokens * prices["input_per_mtok"] + output_tokens * prices["output_per_mtok"]) / 1_000_000
    try:
        kind = provider_type(provider_type_name)
    except KeyError:
        return 0.0
    if kind.local or not (input_tokens or output_tokens):
        return 0.0
    try:
        from genai_prices import Usage, calc_price

        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        if kind.prices_provider is not None:
            price = calc_price(usage, model_ref=model_name, provider_id=kind.prices_provider)
        else:
            url = kind.price_url(ProviderConfig("", provider_type_name, base_url))
            if url is None:
                return 0.0
            price = calc_price(usage, model_ref=model_name, provider_api_url=url)
    except (LookupError, ValueError):
        return 0.0
    return float(price.total_price)


def final_status(total: int, succeeded: int, failed: int) -> str:
    """completed: every item valid; partial: every item finished, some failed; failed: every item
    finished, none valid; interrupted: items are unfinished (stopped early, or only transient errors
    came back for them), and `reconciler run NAME` resumes it."""
    if succeeded + failed < total:
        return "interrupted"
    if failed == 0:
        return "completed"
    return "partial" if succeeded else "failed"
