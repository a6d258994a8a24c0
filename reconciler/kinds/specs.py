"""Every kind's manifest spec as pydantic models: what a document must hold to be valid.

The models live apart from the kinds' modules (``reconciler/kinds/<kind>.py``, which own
everything else about a kind) because they are needed only to validate a document. A validated
spec travels through the pipeline as a ``kinds.base.Record`` of plain values, and a file the
parse cache holds is read back into records without validating again, so a plan whose files
are all in the cache imports neither this module nor pydantic (about a third of a no-change
plan's start-up). ``Kind.spec`` names each kind's model here; ``manifests.models`` wraps them in
their envelopes, and ``schemas/*.json`` are generated from them.

A new field goes into its kind's model here and into its kind's essence (see docs/development.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from reconciler.kinds.base import NAME_PATTERN
from reconciler.kinds.provider import ProviderType

# -- what every kind uses ---------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class FileRef(Strict):
    """Read a value from a file, relative to the manifest that names it."""

    from_file: str = Field(min_length=1)


class SecretRef(Strict):
    """Where a secret comes from. Manifests never hold the secret itself."""

    from_env: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    from_file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _reject_literal(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise PydanticCustomError(
                "literal_secret",
                "a literal API key is not allowed in a manifest (it would end up in git)",
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.from_env is None) == (self.from_file is None):
            raise PydanticCustomError("secret_ref_shape", "give exactly one of from_env or from_file")
        return self


class Metadata(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits and '-', unique per kind")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# -- Run and Experiment: the fields they share, then Run ----------------------------------------

RunInput = str | dict[str, Any]


class ExpectedFields(TypedDict):
    """Where the right answer is: a field of each input, compared with a field of the model's output.
    A plain dict (not a model) so it is stored and compared as it was written."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    input: Annotated[str, Field(min_length=1, description="the input field holding the right answer")]
    output: Annotated[str, Field(min_length=1, description="the property of the task's response_schema compared with it")]


def _expected_form(value: Any) -> str:
    return "fields" if isinstance(value, dict) else "name"


# a callable discriminator: a mistake in one form is reported for that form only
Expected = Annotated[
    Annotated[str, Field(min_length=1), Tag("name")] | Annotated[ExpectedFields, Tag("fields")],
    Discriminator(_expected_form),
]


# the fields a Run and an Experiment share: their types and limits (each spec keeps its own order)
RunInputs = Annotated[list[RunInput] | None, Field(min_length=1)]
InputsFile = Annotated[str | None, Field(min_length=1, description="JSONL or CSV, relative to the manifest")]
PromptTemplate = Annotated[str | None, Field(description="'{field}' placeholders filled from each input")]
ExpectedAt = Annotated[
    Expected | None,
    Field(description="where the right answer is: {input: FIELD, output: PROPERTY}, or one name for both (accuracy)"),
]
Retries = Annotated[int, Field(ge=0, le=10)]
TimeoutSeconds = Annotated[float, Field(gt=0, le=3600)]
Trigger = Literal["manual", "on_apply"]


def one_input_source(spec: Any, code: str) -> None:
    """A batch reads exactly one of ``inputs`` or ``inputs_file``."""
    if (spec.inputs is None) == (spec.inputs_file is None):
        raise PydanticCustomError(code, "give exactly one of inputs or inputs_file")


class RunSpec(Strict):
    assignment: str = Field(pattern=NAME_PATTERN)
    inputs: RunInputs = None
    inputs_file: InputsFile = None
    prompt_template: PromptTemplate = None
    concurrency: int = Field(default=4, ge=1, le=256)
    max_retries: Retries = 2
    timeout_seconds: TimeoutSeconds = 120.0
    expected: ExpectedAt = None
    trigger: Trigger = "manual"

    @model_validator(mode="after")
    def _one_input_source(self) -> RunSpec:
        one_input_source(self, "run_inputs")
        return self


# -- Provider ------------------------------------------------------------------------------------


class RateLimit(Strict):
    """Requests and tokens per minute; every run, experiment arm and test in a process shares them."""

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _at_least_one(self) -> RateLimit:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise PydanticCustomError("rate_limit_empty", "give requests_per_minute, tokens_per_minute or both")
        return self


class ProviderSpec(Strict):
    type: ProviderType
    base_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://\S+$",
        description="required for ollama and openai-compatible; anthropic and google default to the public API (give the root, without /v1)",
    )
    api_key: SecretRef | None = Field(default=None, description="required for anthropic and google, and for openai without a base_url")
    model_path: str | None = Field(default=None, description="llamacpp only: a GGUF file to serve")
    rate_limit: RateLimit | None = None
    is_active: bool = True

    @model_validator(mode="after")
    def _check_type_fields(self) -> ProviderSpec:
        if self.type == "ollama" and not self.base_url:
            raise PydanticCustomError("ollama_base_url", "an ollama provider needs base_url (e.g. http://localhost:11434)")
        if self.type == "openai-compatible" and not self.base_url:
            raise PydanticCustomError(
                "compatible_base_url", "an openai-compatible provider needs base_url, the server's API root (e.g. http://localhost:8000/v1)"
            )
        if self.type in ("anthropic", "google") and self.api_key is None:
            raise PydanticCustomError(
                "provider_api_key",
                "an {type} provider needs api_key, a reference such as from_env: {var}",
                {"type": self.type, "var": "ANTHROPIC_API_KEY" if self.type == "anthropic" else "GEMINI_API_KEY"},
            )
        if self.model_path is not None and self.type != "llamacpp":
            raise PydanticCustomError("model_path_type", "model_path is only for type: llamacpp")
        return self


# -- Task ----------------------------------------------------------------------------------------


class EvaluationGate(Strict):
    """When `plan --evaluate` refuses a changed configuration of the task (exit 1, `apply --evaluate` applies nothing)."""

    min_accuracy: float | None = Field(default=None, ge=0, le=1, description="the lowest accuracy any assignment of the task may have")
    max_drop: float | None = Field(default=None, ge=0, le=1, description="the largest fall of accuracy allowed against the configuration applied now")
    significance: float | None = Field(
        default=None, gt=0, le=1, description="a fall beyond max_drop counts only when McNemar's exact p is below this (default: any fall counts)"
    )
    min_valid: float | None = Field(default=None, ge=0, le=1, description="the lowest share of schema-valid answers")

    @model_validator(mode="after")
    def _significance_needs_drop(self) -> EvaluationGate:
        if self.significance is not None and self.max_drop is None:
            raise PydanticCustomError("gate_significance", "significance qualifies max_drop: give max_drop as well")
        return self


class TaskEvaluation(Strict):
    """The labelled inputs `plan --evaluate` measures a changed configuration of the task on (never written to the database)."""

    inputs: RunInputs = None
    inputs_file: InputsFile = None
    prompt_template: PromptTemplate = None
    expected: ExpectedFields = Field(description="where the right answer is: {input: FIELD, output: PROPERTY}")
    gate: EvaluationGate = Field(default_factory=EvaluationGate)
    concurrency: int = Field(default=4, ge=1, le=256)
    max_retries: Retries = 2
    timeout_seconds: TimeoutSeconds = 120.0

    @model_validator(mode="after")
    def _one_input_source(self) -> TaskEvaluation:
        one_input_source(self, "evaluation_inputs")
        return self


class TaskSpec(Strict):
    description: str | None = None
    response_schema: FileRef | dict[str, Any] = Field(description="an inline JSON Schema, or {from_file: path} relative to the manifest")
    is_active: bool = True
    evaluation: TaskEvaluation | None = Field(
        default=None, description="labelled inputs and gates for `plan --evaluate`; how the task is tested, not configuration (never written)"
    )

    @field_validator("response_schema", mode="before")
    @classmethod
    def _file_or_inline(cls, value: Any) -> Any:
        if isinstance(value, dict) and "from_file" in value and len(value) == 1:
            return FileRef(from_file=value["from_file"]) if isinstance(value["from_file"], str) else value
        if isinstance(value, dict):
            return value
        raise PydanticCustomError("schema_shape", "expected a JSON Schema mapping or {from_file: path}")


# -- Agent ---------------------------------------------------------------------------------------


class Prices(Strict):
    """Overrides for cost estimates, in USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class AgentExample(Strict):
    """A worked example, sent to the model as a user message and its answer before every prompt."""

    input: str = Field(min_length=1, description="the user message, written as the run's prompt_template renders a prompt")
    output: Any = Field(description="the answer: a value that fits the response_schema of every task the agent is assigned to")


class AgentSpec(Strict):
    description: str | None = None
    provider: str = Field(pattern=NAME_PATTERN)
    model_name: str = Field(min_length=1, max_length=255)  # the column is VARCHAR(255)
    system_prompt: str = ""
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0, le=2**31 - 1)  # a 32-bit INTEGER column
    prices: Prices | None = None
    examples: list[AgentExample] = Field(
        default_factory=list,
        description="few-shot examples sent as user/assistant message pairs before each prompt (checked against the tasks' response_schema)",
    )
    is_active: bool = True


# -- Assignment ----------------------------------------------------------------------------------


class AssignmentSpec(Strict):
    agent: str = Field(pattern=NAME_PATTERN)
    task: str = Field(pattern=NAME_PATTERN)
    is_active: bool = True


# -- Experiment ----------------------------------------------------------------------------------


AgentName = Annotated[str, Field(pattern=NAME_PATTERN)]


class ExperimentSpec(Strict):
    task: str = Field(pattern=NAME_PATTERN)
    agents: list[AgentName] = Field(min_length=1, max_length=16, description="one arm per agent; each must be assigned to the task")
    baseline: str | None = Field(default=None, pattern=NAME_PATTERN, description="the agent the others are compared with (default: the first)")
    inputs: RunInputs = None
    inputs_file: InputsFile = None
    prompt_template: PromptTemplate = None
    expected: ExpectedAt = None
    repeats: int = Field(default=1, ge=1, le=100, description="each input is asked this many times per agent")
    concurrency: int = Field(default=4, ge=1, le=256, description="workers shared by every arm")
    max_retries: Retries = 2
    timeout_seconds: TimeoutSeconds = 120.0
    trigger: Trigger = "manual"

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        one_input_source(self, "experiment_inputs")
        twice = sorted({a for a in self.agents if self.agents.count(a) > 1})
        if twice:
            raise PydanticCustomError("experiment_agents", "agents are listed once each; repeated: {twice}", {"twice": ", ".join(twice)})
        if self.baseline is not None and self.baseline not in self.agents:
            raise PydanticCustomError(
                "experiment_baseline",
                "baseline '{baseline}' is not one of the agents ({agents})",
                {"baseline": self.baseline, "agents": ", ".join(self.agents)},
            )
        return self
