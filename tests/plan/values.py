"""Plain values for the pure core's tests: desired resources, database rows and snapshots, built
directly (no manifests, no database), so each test shows every input it depends on."""

from __future__ import annotations

from typing import Any

from reconciler.plan.desired import DesiredResource
from reconciler.plan.model import Plan
from reconciler.state.snapshot import ActualResource, StateSnapshot

FINGERPRINT = "f" * 64
AS_APPLIED: Any = object()  # actual(): the applied essence is the essence (no drift)


def desired(
    kind: str, name: str, essence: dict[str, Any], *, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
    secret_source: dict[str, Any] | None = None, payload: dict[str, Any] | None = None,
) -> DesiredResource:
    return DesiredResource(kind, name, essence, f"{kind.lower()}s.yaml:1:1", labels or {}, annotations or {}, secret_source, payload)


def actual(
    kind: str, name: str, essence: dict[str, Any], *, managed: bool = True, applied: Any = AS_APPLIED, apply_id: int | None = 1,
    labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None, row_name: str | None = None,
) -> ActualResource:
    if applied is AS_APPLIED:
        applied = dict(essence) if managed else None
    return ActualResource(
        kind, name, f"row-{kind.lower()}-{name}", essence, managed, applied, labels or {}, annotations or {},
        apply_id if managed else None, row_name=row_name,
    )


def snapshot(*rows: ActualResource, vanished: dict[tuple[str, str], int | None] | None = None) -> StateSnapshot:
    return StateSnapshot({(r.kind, r.name): r for r in rows}, FINGERPRINT, vanished or {})


def desired_state(*resources: DesiredResource) -> dict[tuple[str, str], DesiredResource]:
    return {(d.kind, d.name): d for d in resources}


def plan_of(*changes: Any, **fields: Any) -> Plan:
    return Plan(changes=tuple(changes), state_fingerprint=FINGERPRINT, created_at="2024-05-06T07:08:09+00:00", **fields)
