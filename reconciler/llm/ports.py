"""The LLM layer's ports: framework-agnostic configuration, results, errors and interfaces.

The runner and ``reconciler test`` speak only these types; ``pydantic_ai_adapter`` is the one
adapter that implements them. Nothing here imports an LLM framework.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from reconciler.hashing import sha256_hex


@dataclass(frozen=True)
class RateLimit:
    """A provider's declared limits; every run, experiment arm and test in a process shares them."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    @staticmethod
    def from_value(value: Any) -> RateLimit | None:
        """From its stored form ({requests_per_minute, tokens_per_minute} or None)."""
        if not value:
            return None
        return RateLimit(value.get("requests_per_minute"), value.get("tokens_per_minute"))


@dataclass(frozen=True)
class ProviderConfig:
    """Where and how to reach a provider: what a run, ``reconciler test`` and a validation probe need.
    ``api_key`` is plain text in memory only, never serialised (``public()`` leaves it out)."""

    name: str
    type: str  # a key of reconciler.llm.provider_types.PROVIDER_TYPES
    base_url: str | None = None
    # by keyword only: two optional strings side by side are too easy to swap by position
    api_key: str | None = field(default=None, repr=False, kw_only=True)
    model_path: str | None = field(default=None, kw_only=True)  # llamacpp: a GGUF file; None means the bundled default
    rate_limit: RateLimit | None = field(default=None, kw_only=True)  # shapes when requests are sent, never what they say

    def public(self) -> dict[str, Any]:
        """What reaches the model, without the secret (for snapshots and hashes); not the rate limit,
        which changes when requests are sent, not what they say."""
        return {"name": self.name, "type": self.type, "base_url": self.base_url, "model_path": self.model_path}


@dataclass(frozen=True)
class Example:
    """A worked example the model sees before the prompt: a user turn and the answer it should give."""

    input: str
    output: Any  # a value fitting the task's response schema (sent as JSON), or text


@dataclass(frozen=True)
class AgentConfig:
    """How to execute: model, prompt, settings (the seed's AgentConfig)."""

    name: str
    model_name: str
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    prices: dict[str, float] | None = None  # input_per_mtok / output_per_mtok overrides
    examples: tuple[Example, ...] = ()  # sent as user/assistant message pairs before the prompt

    @staticmethod
    def examples_from(value: Any) -> tuple[Example, ...]:
        """Examples from their stored form (a list of {input, output} mappings, or None)."""
        return tuple(Example(e["input"], e["output"]) for e in value or ())


@dataclass(frozen=True)
class TaskConfig:
    """What to output: the response JSON Schema (the seed's TaskConfig)."""

    name: str
    response_schema: dict[str, Any]


@dataclass(frozen=True)
class ExecutionSettings:
    """Per-run knobs that shape every call: output retries, per-attempt timeout."""

    max_retries: int = 2
    timeout_seconds: float = 120.0


def config_digest(*parts: Any) -> str:
    """SHA-256 of a canonical JSON rendering: equal configurations give equal digests."""
    payload = [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts]
    for p in payload:
        if isinstance(p, dict):
            p.pop("api_key", None)
    return sha256_hex(payload)


@dataclass(frozen=True)
class AgentResult:
    """One answered prompt: the validated output and what it cost."""

    output: Any
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 1  # model requests made, including retries with validation feedback
    elapsed_seconds: float = 0.0
    raw_text: str | None = None


class LLMError(Exception):
    """Base of the errors adapters raise; ``attempts``/tokens say what was spent before failing."""

    def __init__(self, message: str, *, attempts: int = 1, input_tokens: int = 0, output_tokens: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


class InvalidOutput(LLMError):
    """The model kept answering outside the task's schema after every retry with feedback."""


class RequestRejected(LLMError):
    """The provider refused this request (400, auth, unknown model): sending it again will not help."""


class RetryableError(LLMError):
    """Rate limited, overloaded or a server error: worth retrying after ``retry_after`` seconds or a backoff.
    Transient: an item whose every attempt failed this way is left unfinished, never counted as failed."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """HTTP 429: the provider asks to slow down (throttling, not an outage, until retries run out)."""


class RequestTimeout(RetryableError):
    """One attempt took longer than the run's timeout_seconds."""


class ProviderUnreachable(RetryableError):
    """The connection failed: the provider is down or unreachable, so the run stops and can resume."""


@runtime_checkable
class LLMAgent(Protocol):
    """An agent bound to one task: runs a prompt, returns a schema-checked result."""

    config_sha256: str

    async def run(self, prompt: str) -> AgentResult: ...


class ModelFactory(Protocol):
    """Builds a framework model object for one provider type (a string key selects the factory)."""

    def create_model(self, provider: ProviderConfig, model_name: str, settings: ExecutionSettings) -> Any: ...


class AgentFactory(Protocol):
    """Creates agents for (agent, task, provider); the registry caches what it returns."""

    def __call__(self, agent: AgentConfig, task: TaskConfig, provider: ProviderConfig, settings: ExecutionSettings) -> LLMAgent: ...
