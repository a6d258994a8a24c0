"""The answer cache: a valid answer, stored under what produced it, reused by any later run or arm
that would send exactly the same thing.

The key is (settings SHA-256, messages SHA-256, repeat index). The settings are everything besides
the messages that reaches the model: provider type, URL and model file, model, temperature,
max_tokens, response schema, output mode and the output's name (every field of the LLM ports but
those listed in ``NOT_SENT``). The messages are the conversation the adapter sends (system
instructions, few-shot turns, the prompt; ``llm.conversation`` builds both). Nothing else is in the
key (names, prices, concurrency, retries, timeouts), so a change that cannot change an answer still
reuses it, and a change that can is a miss. Wrong hits from keys that
missed a setting are the most common complaint about promptfoo's cache; tests change each setting.

The repeat index keeps the k answers of an item asked k times apart: at temperature > 0 they are k
samples, and a later experiment with the same configuration reuses the same k samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from reconciler.hashing import sha256_hex
from reconciler.llm.conversation import conversation, output_name
from reconciler.llm.ports import AgentConfig, ProviderConfig, TaskConfig
from reconciler.state.tables import answer_cache, utcnow

KEY_FORMAT = 1  # part of every settings hash: bump it when what the key means changes
CHUNK = 500


@dataclass(frozen=True)
class CacheKey:
    config_sha256: str
    messages_sha256: str
    repeat: int


@dataclass(frozen=True)
class CachedAnswer:
    """A valid answer and what it cost when the model gave it (so reusing it keeps arms comparable)."""

    output: Any
    input_tokens: int
    output_tokens: int
    latency_ms: float | None


# Fields of the LLM ports that never reach the model. Every other field is in the key, so a field
# added to a port later is part of it from the start: at worst a needless miss, never a wrong hit.
# The system prompt and the examples do reach the model: as messages (see ``messages_sha256``).
NOT_SENT: dict[str, frozenset[str]] = {
    "provider": frozenset({"name", "api_key", "rate_limit"}),  # a rate limit shapes when requests go, not what they say
    "agent": frozenset({"name", "prices", "system_prompt", "examples"}),
    "task": frozenset({"name"}),
}


def _sent(part: str, config: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if k not in NOT_SENT[part]}


def request_settings(
    provider: ProviderConfig, agent: AgentConfig, task: TaskConfig, output_mode: str, model_file: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything besides the messages that reaches the model (no names, prices, retries or secrets)."""
    settings: dict[str, Any] = {
        "key_format": KEY_FORMAT,
        "provider": {**_sent("provider", provider), "model_file": model_file},
        "agent": _sent("agent", agent),
        "task": _sent("task", task),
        "output_mode": output_mode,
    }
    if output_mode in {"native", "prompted"}:  # the schema goes to the model under this name
        settings["output_name"] = output_name(task.name)
    return settings


def settings_sha256(settings: dict[str, Any]) -> str:
    return sha256_hex(settings)


def messages_sha256(agent: AgentConfig, task: TaskConfig, output_mode: str, prompt: str) -> str:
    return sha256_hex(conversation(agent, task, output_mode, prompt))


def lookup(engine: Engine, keys: Iterable[CacheKey], before: datetime | None = None) -> dict[CacheKey, CachedAnswer]:
    """The cached answers for those of ``keys`` that have one (a few queries per thousand keys); with
    ``before``, only answers stored before then (a distributed run's chunk reuses what its run could
    have reused when it started, as a local run looks answers up once, at its start)."""
    wanted: dict[str, dict[str, set[int]]] = {}
    for k in keys:
        wanted.setdefault(k.config_sha256, {}).setdefault(k.messages_sha256, set()).add(k.repeat)
    c = answer_cache.c
    found: dict[CacheKey, CachedAnswer] = {}
    with engine.connect() as conn:
        for config, by_messages in wanted.items():
            digests = sorted(by_messages)
            for i in range(0, len(digests), CHUNK):
                query = select(c.messages_sha256, c.repeat_index, c.output, c.input_tokens, c.output_tokens, c.latency_ms).where(
                    c.config_sha256 == config, c.messages_sha256.in_(digests[i : i + CHUNK])
                )
                if before is not None:
                    query = query.where(c.created_at < before)
                for row in conn.execute(query):
                    if row.repeat_index in by_messages[row.messages_sha256]:
                        key = CacheKey(config, row.messages_sha256, row.repeat_index)
                        found[key] = CachedAnswer(row.output, row.input_tokens, row.output_tokens, row.latency_ms)
    return found


def insert_answers(conn: Connection, answers: Sequence[tuple[CacheKey, CachedAnswer]]) -> None:
    """Store answers in the caller's transaction; a key already stored keeps its first answer (two
    processes that answered the same thing at once both succeed)."""
    if not answers:
        return
    dialect_insert: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    now = utcnow()
    rows = {
        (k.config_sha256, k.messages_sha256, k.repeat): {
            "config_sha256": k.config_sha256,
            "messages_sha256": k.messages_sha256,
            "repeat_index": k.repeat,
            "output": a.output,
            "input_tokens": a.input_tokens,
            "output_tokens": a.output_tokens,
            "latency_ms": a.latency_ms,
            "created_at": now,
        }
        for k, a in answers
    }
    values = [rows[key] for key in sorted(rows)]  # in key order: two writers of the same keys cannot deadlock
    for i in range(0, len(values), CHUNK):
        conn.execute(dialect_insert(answer_cache).on_conflict_do_nothing(), values[i : i + CHUNK])


def store(engine: Engine, answers: Sequence[tuple[CacheKey, CachedAnswer]]) -> None:
    """Store answers in a transaction of their own (callers that keep results elsewhere, e.g. in memory)."""
    with engine.begin() as conn:
        insert_answers(conn, answers)


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(answer_cache)).scalar_one())
