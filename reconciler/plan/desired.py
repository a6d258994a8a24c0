"""The desired state: manifests reduced to essences comparable with the database's snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.kinds import BY_NAME
from reconciler.kinds.base import Fingerprint
from reconciler.kinds.run import inputs_digest
from reconciler.manifests.loader import Manifest, ManifestSet
from reconciler.records import frozen_from

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


class DesiredMemo:
    """The desired resources of the manifests of the last call, for a caller that loads the same
    ``Manifest`` objects again (``watch``: the files that did not change, ``ParsedFiles``). A manifest
    that is the same object with the same resolved file contents has the same desired resource; a
    kind with a sensitive field has its essence computed every time (it holds the HMAC of a secret
    read now). The result is the same with or without it."""

    def __init__(self) -> None:
        self.kept: dict[int, tuple[Manifest, dict[str, Any], DesiredResource]] = {}
        self.hits = 0


def desired_state(
    manifests: ManifestSet, fingerprint_secret: Fingerprint | None = None, memo: DesiredMemo | None = None
) -> dict[ResourceKey, DesiredResource]:
    """Essences of every manifest. ``fingerprint_secret(ref, manifest)`` returns the HMAC of a
    provider's resolved secret; it is only called for providers that have an api_key. ``memo``:
    the desired resources of manifests seen in the last call (kept for the next one)."""
    if memo is None:
        return {(m.kind, m.name): _desired(m, fingerprint_secret) for m in manifests.manifests}
    out: dict[ResourceKey, DesiredResource] = {}
    before = memo.kept if memo is not None else {}
    kept: dict[int, tuple[Manifest, dict[str, Any], DesiredResource]] = {}
    for m in manifests.manifests:
        k = BY_NAME[m.kind]
        entry = before.get(id(m))
        if entry is not None and entry[0] is m and entry[1] == m.resolved:
            d = entry[2]
            if k.sensitive:
                essence = k.essence(m, fingerprint_secret)
                if essence != d.essence:
                    d = replace(d, essence=essence)
                    entry = (m, entry[1], d)
            hits = 1
        else:
            d = _desired(m, fingerprint_secret)
            entry = (m, dict(m.resolved), d)
            hits = 0
        if memo is not None:
            memo.hits += hits
            kept[id(m)] = entry
        out[m.key] = d
    if memo is not None:
        memo.kept = kept
    return out


def _desired(m: Manifest, fingerprint_secret: Fingerprint | None) -> DesiredResource:
    k = BY_NAME[m.kind]
    values = {
        "kind": m.kind,
        "name": m.name,
        "essence": k.essence(m, fingerprint_secret),
        "source": str(m.location),
        "labels": m.labels,
        "annotations": m.annotations,
        "secret_source": k.secret_source(m) if k.secret_source else None,
        "payload": k.payload(m) if k.payload else None,
    }
    return frozen_from(DesiredResource, values)


__all__ = ["DesiredMemo", "DesiredResource", "ResourceKey", "desired_state", "inputs_digest"]
