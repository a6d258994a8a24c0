"""Provider types, one module each, chosen by the manifest's ``spec.type`` and imported on first use
(as pydantic-ai's own ``providers/`` folder does). A new type is a module here plus its name in
``PROVIDER_TYPE_NAMES`` (and in the manifests' ``ProviderType`` literal, which a test keeps equal)."""

from __future__ import annotations

import importlib
from functools import cache

from reconciler.llm.provider_types.base import (
    ListingRequest,
    ListingShape,
    ProviderType,
)

PROVIDER_TYPE_NAMES = ("ollama", "openai", "openai-compatible", "anthropic", "google", "llamacpp")


@cache
def provider_type(name: str) -> ProviderType:
    """The type named ``name``; a ``KeyError`` names the known ones."""
    if name not in PROVIDER_TYPE_NAMES:
        raise KeyError(f"unknown provider type {name!r} (known: {', '.join(PROVIDER_TYPE_NAMES)})")
    module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    found: ProviderType = module.TYPE
    return found


__all__ = ["PROVIDER_TYPE_NAMES", "ListingRequest", "ListingShape", "ProviderType", "provider_type"]
