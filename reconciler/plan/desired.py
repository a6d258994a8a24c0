"""The desired state: manifests reduced to essences comparable with the database's snapshot."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.manifests.loader import Manifest, ManifestSet

ResourceKey = tuple[str, str]


@dataclass(frozen=True)
class DesiredResource:
    kind: str
    name: str
    essence: dict[str, Any]
    source: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    secret_source: dict[str, Any] | None = None  # how apply re-resolves the secret (never the value)
    payload: dict[str, Any] | None = None  # data apply writes but the diff does not compare (a run's inputs)


def _essence(m: Manifest, fingerprint_secret: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    s = m.spec
    if m.kind == "Provider":
        secret = None
        api_key = None
        if s.api_key is not None:
            ref = s.api_key.model_dump(exclude_none=True)
            secret = {"ref": ref, "manifest": str(Path(m.raw.file).resolve()), "root": str(m.root)}
            api_key = {"ref": s.api_key.describe(), "hmac": fingerprint_secret(ref, m)}
        return {"type": s.type, "base_url": s.base_url, "is_active": s.is_active, "api_key": api_key, "model_path": s.model_path}, secret
    if m.kind == "Agent":
        return {
            "description": s.description,
            "provider": s.provider,
            "model_name": s.model_name,
            "system_prompt": s.system_prompt,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "is_active": s.is_active,
            "prices": s.prices.model_dump() if s.prices is not None else None,
            "examples": [e.model_dump() for e in s.examples] or None,
        }, None
    if m.kind == "Task":
        return {"description": s.description, "response_schema": m.resolved["response_schema"], "is_active": s.is_active}, None
    if m.kind == "Assignment":
        return {"agent": s.agent, "task": s.task, "is_active": s.is_active}, None
    if m.kind == "Run":
        return run_essence(m), None
    raise ValueError(f"no essence for kind {m.kind}")


def inputs_digest(inputs: list[dict[str, Any]]) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def run_essence(m: Manifest) -> dict[str, Any]:
    """A run compares by the digest of its inputs; the inputs themselves travel in the payload."""
    s = m.spec
    inputs = m.resolved.get("inputs") or []
    return {
        "assignment": s.assignment,
        "inputs_file": s.inputs_file,
        "inputs_sha256": inputs_digest(inputs),
        "items": len(inputs),
        "prompt_template": s.prompt_template,
        "concurrency": s.concurrency,
        "max_retries": s.max_retries,
        "timeout_seconds": s.timeout_seconds,
        "expected": s.expected,
        "trigger": s.trigger,
    }


CONFIG_KINDS = ("Provider", "Agent", "Task", "Assignment", "Run")


def desired_state(manifests: ManifestSet, fingerprint_secret: Any = None) -> dict[ResourceKey, DesiredResource]:
    """Essences of the configuration kinds. ``fingerprint_secret(ref, manifest)`` returns the HMAC
    of a provider's resolved secret; it is only called for providers that have an api_key."""
    out: dict[ResourceKey, DesiredResource] = {}
    for m in manifests.manifests:
        if m.kind not in CONFIG_KINDS:
            continue
        essence, secret = _essence(m, fingerprint_secret)
        payload = {"inputs": m.resolved.get("inputs") or []} if m.kind == "Run" else None
        out[m.key] = DesiredResource(m.kind, m.name, essence, str(m.location), m.labels, m.annotations, secret, payload)
    return out
