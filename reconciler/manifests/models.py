"""The manifest kinds as pydantic models: the single source of truth for fields, types and ranges.

``schemas/*.json`` are generated from these models (``python -m reconciler.manifests.schemas``) and a
test proves the committed files agree with them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

API_VERSION = "reconciler/v1"
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
ProviderType = Literal["ollama", "openai", "llamacpp"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FileRef(_Strict):
    """Read a value from a file, relative to the manifest that names it."""

    from_file: str = Field(min_length=1)


class SecretRef(_Strict):
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

    def describe(self) -> str:
        return f"env:{self.from_env}" if self.from_env is not None else f"file:{self.from_file}"


class Metadata(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits and '-', unique per kind")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ProviderSpec(_Strict):
    type: ProviderType
    base_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    api_key: SecretRef | None = None
    model_path: str | None = Field(default=None, description="llamacpp only: a GGUF file to serve")
    is_active: bool = True

    @model_validator(mode="after")
    def _check_type_fields(self) -> ProviderSpec:
        if self.type == "ollama" and not self.base_url:
            raise PydanticCustomError("ollama_base_url", "an ollama provider needs base_url (e.g. http://localhost:11434)")
        if self.model_path is not None and self.type != "llamacpp":
            raise PydanticCustomError("model_path_type", "model_path is only for type: llamacpp")
        return self


class Prices(_Strict):
    """Overrides for cost estimates, in USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class AgentExample(_Strict):
    """A worked example, sent to the model as a user message and its answer before every prompt."""

    input: str = Field(min_length=1, description="the user message, written as the run's prompt_template renders a prompt")
    output: Any = Field(description="the answer: a value that fits the response_schema of every task the agent is assigned to")


class AgentSpec(_Strict):
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


class TaskSpec(_Strict):
    description: str | None = None
    response_schema: Union[FileRef, dict[str, Any]] = Field(
        description="an inline JSON Schema, or {from_file: path} relative to the manifest"
    )
    is_active: bool = True

    @field_validator("response_schema", mode="before")
    @classmethod
    def _file_or_inline(cls, value: Any) -> Any:
        if isinstance(value, dict) and "from_file" in value and len(value) == 1:
            return FileRef(from_file=value["from_file"]) if isinstance(value["from_file"], str) else value
        if isinstance(value, dict):
            return value
        raise PydanticCustomError("schema_shape", "expected a JSON Schema mapping or {from_file: path}")


class AssignmentSpec(_Strict):
    agent: str = Field(pattern=NAME_PATTERN)
    task: str = Field(pattern=NAME_PATTERN)
    is_active: bool = True


RunInput = Union[str, dict[str, Any]]


class RunSpec(_Strict):
    assignment: str = Field(pattern=NAME_PATTERN)
    inputs: list[RunInput] | None = Field(default=None, min_length=1)
    inputs_file: str | None = Field(default=None, min_length=1, description="JSONL or CSV, relative to the manifest")
    prompt_template: str | None = Field(default=None, description="'{field}' placeholders filled from each input")
    concurrency: int = Field(default=4, ge=1, le=256)
    max_retries: int = Field(default=2, ge=0, le=10)
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    expected: str | None = Field(default=None, description="the input field holding the expected answer")
    trigger: Literal["manual", "on_apply"] = "manual"

    @model_validator(mode="after")
    def _one_input_source(self) -> RunSpec:
        if (self.inputs is None) == (self.inputs_file is None):
            raise PydanticCustomError("run_inputs", "give exactly one of inputs or inputs_file")
        return self


SPEC_MODELS: dict[str, type[BaseModel]] = {
    "Provider": ProviderSpec,
    "Agent": AgentSpec,
    "Task": TaskSpec,
    "Assignment": AssignmentSpec,
    "Run": RunSpec,
}
KINDS = tuple(SPEC_MODELS)


def _envelope(kind: str, spec: type[BaseModel]) -> type[BaseModel]:
    return type(
        f"{kind}Manifest",
        (_Strict,),
        {
            "__annotations__": {
                "apiVersion": Literal["reconciler/v1"],
                "kind": Literal[kind],  # type: ignore[valid-type]
                "metadata": Metadata,
                "spec": spec,
            },
            "__doc__": f"A reconciler/v1 {kind} manifest.",
        },
    )


MANIFEST_MODELS: dict[str, type[BaseModel]] = {kind: _envelope(kind, spec) for kind, spec in SPEC_MODELS.items()}
AnyManifest = Annotated[Union[tuple(MANIFEST_MODELS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]
