"""The manifest envelope of every kind: ``apiVersion``, ``kind``, ``metadata`` and the kind's spec.

Each kind's spec model lives in ``reconciler/kinds/specs.py`` (the single source of truth for its
fields, types and ranges; ``Kind.spec`` names it); this module wraps them. Only validating a
document imports it: a spec read from the parse cache needs no model (``modelcodec``).
``schemas/*.json`` are generated from these models (``python -m reconciler.manifests.schemas``) and
a test proves the committed files agree.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from reconciler.kinds import KINDS
from reconciler.kinds.base import API_VERSION, NAME_PATTERN
from reconciler.kinds.provider import ProviderType
from reconciler.kinds.specs import (
    AgentExample,
    AgentSpec,
    AssignmentSpec,
    FileRef,
    Metadata,
    Prices,
    ProviderSpec,
    RunInput,
    RunSpec,
    SecretRef,
    Strict,
    TaskSpec,
)

SPEC_MODELS: dict[str, type[BaseModel]] = {str(k.name): k.spec_model for k in KINDS}
KIND_NAMES = tuple(SPEC_MODELS)


class Envelope(Strict):
    """What every manifest model has; ``_envelope`` narrows ``kind`` to its name and ``spec`` to its model."""

    apiVersion: Literal["reconciler/v1"]
    kind: str
    metadata: Metadata
    spec: BaseModel


def _envelope(kind: str, spec: type[BaseModel]) -> type[Envelope]:
    return type(
        f"{kind}Manifest",
        (Envelope,),
        {
            "__annotations__": {
                "kind": Literal[kind],
                "spec": spec,
            },
            "__doc__": f"A reconciler/v1 {kind} manifest.",
        },
    )


MANIFEST_MODELS: dict[str, type[Envelope]] = {kind: _envelope(kind, spec) for kind, spec in SPEC_MODELS.items()}

__all__ = [
    "API_VERSION",
    "KIND_NAMES",
    "MANIFEST_MODELS",
    "NAME_PATTERN",
    "SPEC_MODELS",
    "AgentExample",
    "AgentSpec",
    "AssignmentSpec",
    "Envelope",
    "FileRef",
    "Metadata",
    "Prices",
    "ProviderSpec",
    "ProviderType",
    "RunInput",
    "RunSpec",
    "SecretRef",
    "TaskSpec",
]
