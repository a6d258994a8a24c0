"""The manifest envelope of every kind: ``apiVersion``, ``kind``, ``metadata`` and the kind's spec.

Each kind's spec model lives in its module under ``reconciler/kinds/`` (the single source of truth
for its fields, types and ranges); this module wraps them. ``schemas/*.json`` are generated from
these models (``python -m reconciler.manifests.schemas``) and a test proves the committed files agree.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field

from reconciler.kinds import KINDS
from reconciler.kinds.agent import AgentExample, AgentSpec, Prices
from reconciler.kinds.assignment import AssignmentSpec
from reconciler.kinds.base import API_VERSION, NAME_PATTERN, FileRef, Metadata, SecretRef, Strict
from reconciler.kinds.provider import ProviderSpec, ProviderType
from reconciler.kinds.run import RunInput, RunSpec
from reconciler.kinds.task import TaskSpec

SPEC_MODELS: dict[str, type[BaseModel]] = {str(k.name): k.spec_model for k in KINDS}
KIND_NAMES = tuple(SPEC_MODELS)


def _envelope(kind: str, spec: type[BaseModel]) -> type[BaseModel]:
    return type(
        f"{kind}Manifest",
        (Strict,),
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

__all__ = [
    "API_VERSION", "NAME_PATTERN", "AgentExample", "AgentSpec", "AnyManifest", "AssignmentSpec", "FileRef", "KIND_NAMES",
    "MANIFEST_MODELS", "Metadata", "Prices", "ProviderSpec", "ProviderType", "RunInput", "RunSpec", "SPEC_MODELS",
    "SecretRef", "TaskSpec",
]
