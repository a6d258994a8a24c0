"""Drift: the database changed outside reconciler since the last apply (someone edited a prompt
with SQL or through another service). Compares each managed row with the essence reconciler last
applied, so it is independent of the manifests: a pure function of the snapshot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from reconciler.plan.model import FieldChange
from reconciler.plan.render import _is_long, _value
from reconciler.state.snapshot import SENSITIVE_FIELDS, StateSnapshot

ResourceKey = tuple[str, str]


@dataclass(frozen=True)
class Drift:
    """One managed resource that differs from what reconciler last applied (old = applied, new = now)."""

    kind: str
    name: str
    apply_id: int | None
    fields: tuple[FieldChange, ...] = ()
    vanished: bool = False  # the row was deleted outside reconciler

    @property
    def key(self) -> ResourceKey:
        return (self.kind, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "since_apply": self.apply_id,
            "deleted": self.vanished,
            "fields": [f.to_dict() for f in self.fields],
        }


def detect_drift(snapshot: StateSnapshot, only: set[ResourceKey] | None = None) -> list[Drift]:
    """Every managed resource whose row no longer matches its last-applied essence, sorted by key."""
    found: list[Drift] = []
    for key in sorted(snapshot.resources):
        r = snapshot.resources[key]
        if not r.managed or r.applied is None or (only is not None and key not in only):
            continue
        sensitive = SENSITIVE_FIELDS.get(r.kind, ())
        renamed = r.db_name != r.applied_row_name  # a kept row name (reconciler/row-name) is not drift
        fields = [FieldChange("name", r.applied_row_name, r.db_name, drift=True)] if renamed else []
        for name, applied in r.applied.items():
            actual = r.essence.get(name)
            if name in sensitive:
                # the snapshot shows the applied reference only while the ciphertext is the one we wrote
                if actual != applied:
                    fields.append(FieldChange(name, None, None, sensitive=True, drift=True))
            elif name in r.essence and actual != applied:
                fields.append(FieldChange(name, applied, actual, drift=True))
        if fields:
            found.append(Drift(r.kind, r.name, r.apply_id, tuple(fields)))
    for key, apply_id in sorted(snapshot.vanished.items()):
        if only is None or key in only:
            found.append(Drift(key[0], key[1], apply_id, vanished=True))
    return found


def _since(d: Drift) -> str:
    return f" since apply #{d.apply_id}" if d.apply_id else ""


def render_drift_text(drifts: list[Drift]) -> str:
    if not drifts:
        return "No drift. The database matches what reconciler last applied.\n"
    lines = []
    for d in drifts:
        title = f"{d.kind.lower()} {d.name}"
        if d.vanished:
            lines.append(f"  - {title}: deleted outside reconciler{_since(d)}")
            continue
        for f in d.fields:
            if f.sensitive:
                what = "(sensitive value changed)"
            elif _is_long(f.old) or _is_long(f.new):
                what = "changed (`reconciler plan` shows the lines)"
            else:
                what = f"{_value(f.old)} → {_value(f.new)}"
            lines.append(f"  ~ {title}: {f.field} {what} (drift: changed outside reconciler{_since(d)})")
    n = len(drifts)
    total = (
        f"Drift: {n} resource{'s' if n != 1 else ''} changed outside reconciler. "
        "`reconciler apply` (or `reconciler watch --self-heal`) puts them back."
    )
    lines += ["", total]
    return "\n".join(lines) + "\n"


def render_drift_json(drifts: list[Drift]) -> str:
    return json.dumps({"drift": [d.to_dict() for d in drifts], "count": len(drifts)}, indent=2, ensure_ascii=False, default=str) + "\n"
