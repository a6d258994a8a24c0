"""The pydantic-ai adapter: implements the ports in ``reconciler.llm.ports``.

A model factory per provider type is chosen by its string key (``reconciler.llm.provider_types``:
one module per type, each building pydantic-ai's own model for its API). Every model is wrapped so
its requests wait for the provider's shared rate limiter (``reconciler.llm.ratelimit``). The task's
response schema becomes the agent's structured output (native JSON-schema mode where the model
supports it, prompted mode otherwise, plain text plus our own parsing for schemas pydantic-ai cannot
carry); every output is then checked with jsonschema and a failing one is retried with the errors fed
back. Importing this module imports pydantic-ai: only the runner and ``reconciler test`` do.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import (
    Agent,
    ModelRetry,
    NativeOutput,
    PromptedOutput,
    StructuredDict,
    capture_run_messages,
)
from pydantic_ai import exceptions as pe
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from reconciler.llm.conversation import example_turns, instructions, output_name
from reconciler.llm.output_schema import OutputSchema, feedback
from reconciler.llm.ports import (
    AgentConfig,
    AgentResult,
    ExecutionSettings,
    InvalidOutput,
    LLMError,
    ModelFactory,
    ProviderConfig,
    ProviderUnreachable,
    RateLimited,
    RequestRejected,
    RequestTimeout,
    RetryableError,
    TaskConfig,
    config_digest,
)
from reconciler.llm.provider_types import PROVIDER_TYPE_NAMES, provider_type
from reconciler.llm.ratelimit import ProviderLimiter, estimate_tokens, limiter_for


def _typed(name: str) -> Callable[[], ModelFactory]:
    """The factory of provider type ``name`` (its module is imported on first use)."""
    return lambda: provider_type(name)


# A model factory per provider type, chosen by its string key (tests replace entries).
MODEL_FACTORIES: dict[str, Callable[[], ModelFactory]] = {name: _typed(name) for name in PROVIDER_TYPE_NAMES}


class RateLimitedModel(WrapperModel):
    """Every request the agent makes (output retries included) waits for the provider's shared
    limiter; a 429 with Retry-After holds that limiter back for every caller."""

    def __init__(self, wrapped: Any, limiter: ProviderLimiter, instructions: str = "") -> None:
        super().__init__(wrapped)
        self.limiter = limiter
        self._instructions = instructions

    async def request(self, messages: list[ModelMessage], model_settings: Any, model_request_parameters: Any) -> ModelResponse:
        estimate = estimate_tokens(self._instructions, *(_text_of(m) for m in messages))
        await self.limiter.acquire(estimate)
        try:
            response = await self.wrapped.request(messages, model_settings, model_request_parameters)
        except pe.ModelAPIError as exc:
            if _is_rate_limit(exc) and exc.retry_after:
                self.limiter.hold(exc.retry_after)
            raise
        used = (response.usage.input_tokens or 0) + (response.usage.output_tokens or 0)
        await self.limiter.settle(used, estimate)
        return response


def _text_of(message: ModelMessage) -> str:
    return "".join(str(content) for part in message.parts if isinstance(content := getattr(part, "content", None), str))


def _is_rate_limit(exc: BaseException) -> bool:
    """A 429 asking to slow down; not an exhausted quota (OpenAI sends those as 429 too), which waiting won't fix."""
    if isinstance(exc, pe.ModelQuotaExceededError):
        return False
    return isinstance(exc, pe.ModelRateLimitError) or (isinstance(exc, pe.ModelHTTPError) and exc.status_code == 429)


@dataclass
class _CallState:
    """Per-call scratch space the output validator writes to (passed as the agent's deps)."""

    problems: list[str] = field(default_factory=list)


def _output_spec(task: TaskConfig, schema: OutputSchema, native: bool) -> tuple[Any, str]:
    """(pydantic-ai output_type, mode) for a response schema; an empty schema means free text."""
    if not task.response_schema:
        return str, "plain"
    if schema.is_object:
        try:
            structured = StructuredDict(copy.deepcopy(task.response_schema), name=output_name(task.name))
        except pe.UserError:  # recursive $ref: pydantic-ai cannot carry it, fall back to text
            structured = None
        if structured is not None:
            return (NativeOutput(structured) if native else PromptedOutput(structured)), ("native" if native else "prompted")
    return str, "text"


def _example_messages(agent: AgentConfig) -> list[ModelMessage]:
    """The agent's examples as earlier turns of the conversation: each input a user message, each
    output the assistant's answer (JSON unless it is text). Small models follow these far better
    than examples written into the system prompt."""
    out: list[ModelMessage] = []
    for question, answer in example_turns(agent):
        out += [ModelRequest(parts=[UserPromptPart(question)]), ModelResponse(parts=[TextPart(answer)])]
    return out


def _tokens(messages: list[Any]) -> tuple[int, int, int, str | None]:
    """(input tokens, output tokens, requests, last text) from captured messages."""
    inp = out = requests = 0
    last: str | None = None
    for m in messages:
        if isinstance(m, ModelResponse):
            requests += 1
            inp += m.usage.input_tokens or 0
            out += m.usage.output_tokens or 0
            texts = [p.content for p in m.parts if isinstance(p, TextPart)]
            if texts:
                last = "".join(texts)
    return inp, out, requests, last


def translate_error(exc: BaseException, spent: tuple[int, int, int]) -> LLMError:
    """pydantic-ai's exception taxonomy -> the ports' errors (what the runner decides on)."""
    inp, out, requests = spent
    kw: dict[str, Any] = {"attempts": max(requests, 1), "input_tokens": inp, "output_tokens": out}
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, (pe.ModelTimeoutError, pe.ModelRequestTimeout)):
        return RequestTimeout(f"timed out: {text}", **kw)
    if isinstance(exc, pe.ModelConnectionError):
        return ProviderUnreachable(f"cannot reach the provider: {text}", retry_after=exc.retry_after, **kw)
    if isinstance(exc, pe.ModelAPIError) and _is_rate_limit(exc):
        return RateLimited(text, retry_after=exc.retry_after, **kw)
    if isinstance(exc, (pe.ModelUnavailableError, pe.ModelServerError)):
        return RetryableError(text, retry_after=exc.retry_after, **kw)
    if isinstance(exc, (pe.ModelRequestRejectedError, pe.ModelQuotaExceededError)):
        return RequestRejected(text, **kw)
    if isinstance(exc, pe.ModelHTTPError):
        if exc.status_code >= 500:
            return RetryableError(text, retry_after=exc.retry_after, **kw)
        return RequestRejected(text, **kw)
    if isinstance(exc, pe.ModelAPIError):
        return RetryableError(text, retry_after=exc.retry_after, **kw)
    return InvalidOutput(text, **kw)


class PydanticAIAgent:
    """Implements ``LLMAgent`` over a pydantic-ai Agent with schema-checked structured output."""

    def __init__(
        self,
        agent: AgentConfig,
        task: TaskConfig,
        provider: ProviderConfig,
        settings: ExecutionSettings,
        model: Any,
        recover: Callable[[], bool] | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.agent_config, self.task_config, self.provider_config, self.settings = agent, task, provider, settings
        self.config_sha256 = config_digest(agent, task, provider.public(), settings)
        self.schema = OutputSchema(task.response_schema)
        profile = getattr(model, "profile", None) or {}
        native = (
            bool(profile.get("supports_json_schema_output", False))
            if isinstance(profile, dict)
            else bool(getattr(profile, "supports_json_schema_output", False))
        )
        output_type, self.output_mode = _output_spec(task, self.schema, native)
        model_settings: ModelSettings = {"timeout": settings.timeout_seconds}
        if agent.temperature is not None:
            model_settings["temperature"] = agent.temperature
        if agent.max_tokens is not None:
            model_settings["max_tokens"] = agent.max_tokens
        self.model = model
        self._recover = recover
        self._close = close
        self._examples = _example_messages(agent)
        system = instructions(agent, task, self.output_mode)
        limited = RateLimitedModel(model, limiter_for(provider), system or "")
        self._agent: Agent[_CallState, Any] = Agent(
            limited,
            name=agent.name,  # unnamed, pydantic-ai searches the caller's frame for a name on every run
            output_type=output_type,
            instructions=system,
            deps_type=_CallState,
            model_settings=model_settings,
            retries={"output": settings.max_retries},
            defer_model_check=True,
        )
        self._agent.output_validator(self._check_output)

    async def _check_output(self, ctx: Any, output: Any) -> Any:
        # async on purpose: pydantic-ai runs a plain ``def`` validator in a worker thread, one thread
        # hop per answer, which cost more than the whole check (it is microseconds)
        if self.output_mode == "plain":
            return output
        if self.output_mode == "text":
            value, problems = self.schema.parse_text(output)
        else:
            value, problems = output, self.schema.errors(output)
        if problems:
            ctx.deps.problems = problems
            raise ModelRetry(feedback(problems))
        return value

    async def run(self, prompt: str) -> AgentResult:
        state = _CallState()
        started = time.perf_counter()
        with capture_run_messages() as messages:
            try:
                result = await self._agent.run(prompt, deps=state, message_history=self._examples or None)
            except (pe.AgentRunError, pe.UserError) as exc:
                inp, out, requests, last = _tokens(messages[len(self._examples) :])
                error = translate_error(exc, (inp, out, requests))
                if isinstance(error, InvalidOutput):
                    reason = "; ".join(state.problems) or str(exc).splitlines()[0]
                    shown = f" (last answer: {last[:200]!r})" if last else ""
                    error = InvalidOutput(
                        f"no valid output after {error.attempts} attempts: {reason}{shown}",
                        attempts=error.attempts,
                        input_tokens=inp,
                        output_tokens=out,
                    )
                raise error from exc
        usage = result.usage
        return AgentResult(
            output=result.output,
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            attempts=max(usage.requests, 1),
            elapsed_seconds=time.perf_counter() - started,
        )

    def recover(self) -> bool:
        """Try to bring the provider back after ProviderUnreachable (the embedded server restarts)."""
        return bool(self._recover and self._recover())

    async def aclose(self) -> None:
        """Close the HTTP client (it belongs to the event loop that used it, which is ending)."""
        if self._close is not None:
            await self._close()
            return
        client = getattr(self.model, "client", None)
        if client is not None and hasattr(client, "close"):
            await client.close()


class PydanticAIFramework:
    """The ``AgentFactory`` the registry uses: picks the model factory by provider type."""

    def __init__(self, factories: dict[str, Callable[[], ModelFactory]] | None = None) -> None:
        self._factories = dict(MODEL_FACTORIES if factories is None else factories)

    def model_factory(self, provider_type: str) -> ModelFactory:
        make = self._factories.get(provider_type)
        if make is None:
            raise RequestRejected(
                f"no model factory for provider type {provider_type!r} (known: {', '.join(sorted(self._factories))})",
                attempts=0,
            )
        return make()

    def __call__(self, agent: AgentConfig, task: TaskConfig, provider: ProviderConfig, settings: ExecutionSettings) -> PydanticAIAgent:
        factory = self.model_factory(provider.type)
        model = factory.create_model(provider, agent.model_name, settings)
        recover = getattr(factory, "recover", None)
        close = getattr(factory, "aclose", None)
        return PydanticAIAgent(
            agent,
            task,
            provider,
            settings,
            model,
            (lambda: recover(provider, model)) if recover else None,
            (lambda: close(model)) if close else None,
        )
