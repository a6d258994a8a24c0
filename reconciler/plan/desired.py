"""The desired state: manifests reduced to essences comparable with the database's snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.kinds import BY_NAME
from reconciler.kinds.base import Fingerprint
from reconciler.kinds.run import inputs_digest
from reconciler.manifests.loader import ManifestSet

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


def desired_state(manifests: ManifestSet, fingerprint_secret: Fingerprint | None = None) -> dict[ResourceKey, DesiredResource]:
    """Essences of every manifest. ``fingerprint_secret(ref, manifest)`` returns the HMAC of a
    provider's resolved secret; it is only called for providers that have an api_key."""
    out: dict[ResourceKey, DesiredResource] = {}
    for m in manifests.manifests:
        k = BY_NAME[m.kind]
        out[m.key] = DesiredResource(
            m.kind,
            m.name,
            k.essence(m, fingerprint_secret),
            str(m.location),
            m.labels,
            m.annotations,
            k.secret_source(m) if k.secret_source else None,
            k.payload(m) if k.payload else None,
        )
    return out


__all__ = ["DesiredResource", "ResourceKey", "desired_state", "inputs_digest"]
