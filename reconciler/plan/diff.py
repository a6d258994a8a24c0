"""Compare the desired state with the database snapshot: pure set algebra on (kind, name) keys.

In the manifests but not the database: create. In both: compare essences field by field. In the
database, managed by reconciler, but no longer in the manifests: delete (prune). Rows reconciler
never managed are listed as unmanaged and never touched.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.errors import Problem, ReconcilerError
from reconciler.kinds import BY_NAME, KINDS
from reconciler.kinds.base import ROW_NAME, row_name
from reconciler.plan.desired import DesiredResource
from reconciler.plan.model import Action, Change, FieldChange, Plan, UnmanagedResource
from reconciler.records import frozen_from
from reconciler.state.snapshot import ActualResource, StateSnapshot

ResourceKey = tuple[str, str]


def _sensitive_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return a.get("hmac") is not None and a.get("hmac") == b.get("hmac")


def diff_fields(kind: str, desired: dict[str, Any], actual: ActualResource) -> tuple[FieldChange, ...]:
    sensitive = BY_NAME[kind].sensitive
    if not sensitive and desired == actual.essence:
        return ()  # the common case, compared at C speed: every field equal
    applied = actual.applied
    changes = []
    for name, new in desired.items():
        old = actual.essence.get(name)
        if name in sensitive:
            if not _sensitive_equal(old, new):
                drift = applied is not None and not _sensitive_equal(old, applied.get(name))
                changes.append(FieldChange(name, None, None, sensitive=True, drift=drift))
        elif old != new:
            drift = applied is not None and name in applied and applied.get(name) != old
            changes.append(FieldChange(name, old, new, drift=drift))
    return tuple(changes)


def _metadata_changes(d: DesiredResource, a: ActualResource) -> tuple[FieldChange, ...]:
    out = []
    if d.labels != a.labels:
        out.append(FieldChange("metadata.labels", a.labels, d.labels))
    if d.annotations != a.annotations:
        out.append(FieldChange("metadata.annotations", a.annotations, d.annotations))
    return tuple(out)


def _renamed(d: DesiredResource, a: ActualResource) -> tuple[FieldChange, ...]:
    """The row's name against the one the manifest gives it (``reconciler/row-name``, else its
    name): drift when someone renamed the row outside reconciler; apply renames it."""
    if (a.row_name is None and ROW_NAME not in d.annotations) or not BY_NAME[d.kind].keeps_row_names:
        return ()  # the common case: both named after the manifest
    want = row_name(d.name, d.annotations)
    if a.db_name == want:
        return ()
    return (FieldChange("name", a.db_name, want, drift=a.db_name != a.applied_row_name),)


def _row_name_taken(
    d: DesiredResource, desired: dict[ResourceKey, DesiredResource], by_row_name: dict[ResourceKey, ActualResource]
) -> Problem | None:
    """A row name (kept by ``reconciler/row-name``) another row of the kind holds and keeps."""
    want = row_name(d.name, d.annotations)
    other = by_row_name.get((d.kind, want))
    if other is None or other.key == (d.kind, d.name):
        return None
    moving = other.key in desired and row_name(other.name, desired[other.key].annotations) != want
    if other.managed and moving:
        return None
    if not other.managed:
        return _conflict(d, f"its row would be named {want!r}, the name of an existing {d.kind.lower()} that reconciler does not manage")
    return Problem(
        f"its row would be named {want!r}, which {d.kind} {other.name!r} holds in the database",
        None,
        f'{d.kind} "{d.name}"',
        hint=f"row names are unique per kind: change {ROW_NAME} of one of the two (defined at {d.source})",
    )


def _create(d: DesiredResource) -> Change:
    """``Change(Action.CREATE, d.kind, d.name, desired=..., source=d.source, labels=d.labels,
    annotations=d.annotations)``, made by ``frozen_from`` (4.4 -> 1.7 us: a first apply makes one a resource)."""
    values = {
        "action": Action.CREATE,
        "kind": d.kind,
        "name": d.name,
        "fields": (),
        "desired": _desired_payload(d),
        "row_id": None,
        "source": d.source,
        "labels": d.labels,
        "annotations": d.annotations,
        "reason": "",
    }
    return frozen_from(Change, values)


def _desired_payload(d: DesiredResource) -> dict[str, Any]:
    payload = dict(d.essence)
    if d.secret_source is not None:
        payload["_secret_source"] = d.secret_source
    for key, value in (d.payload or {}).items():
        payload[f"_{key}"] = value
    return payload


def _started_run(d: DesiredResource, a: ActualResource) -> Problem:
    what = d.kind.lower()
    return Problem(
        f"{what} {d.name!r} has already started, so its spec cannot change",
        None,
        f'{d.kind} "{d.name}"',
        hint=f"a {what} is immutable once started: give the changed {what} a new name (e.g. {d.name}-2) at {d.source}; "
        f"the started {what} and its results stay as they are",
    )


def _maybe_changed(desired: dict[ResourceKey, DesiredResource], resources: dict[ResourceKey, ActualResource], kept_names: bool) -> list[ResourceKey]:
    """The desired resources ``diff`` must look at: all but those whose managed row is known
    unchanged at a glance (essence, labels and annotations equal, no secret to compare, no row
    name of its own in play), for which it would find no change and no problem. The no-change plan
    of 10,000 resources sorted and walked each of them."""
    # kind -> (may keep a row name, has sensitive fields): either means the full comparison
    kinds = {str(k.name): (k.keeps_row_names, bool(k.sensitive)) for k in KINDS}
    out = []
    for key, d in desired.items():
        a = resources.get(key)
        if a is not None and a.managed:
            keeps_row_names, sensitive = kinds[d.kind]
            named_as_manifest = not keeps_row_names or (not kept_names and a.row_name is None and ROW_NAME not in d.annotations)
            if named_as_manifest and not sensitive and d.essence == a.essence and d.labels == a.labels and d.annotations == a.annotations:
                continue
        out.append(key)
    return out


def diff(
    desired: dict[ResourceKey, DesiredResource],
    actual: StateSnapshot,
    *,
    prune: bool = True,
    sources: tuple[str, ...] = (),
    git: dict[str, Any] | None = None,
) -> Plan:
    """The plan that makes ``actual`` equal ``desired``; raises ReconcilerError when it cannot."""
    problems: list[Problem] = []
    upserts: dict[str, list[Change]] = {k.name: [] for k in KINDS}
    deletes: dict[str, list[Change]] = {k.name: [] for k in KINDS}
    resources = actual.resources

    # the natural names (AGENT+TASK) of managed unnamed rows: an unmanaged twin of one is not listed
    # (found at the first unmanaged row: most databases have none)
    managed_natural: set[ResourceKey] | None = None
    # rows named otherwise than their manifests (reconciler/row-name): a name one row keeps may be another's
    kept_names = any(r.row_name is not None for r in resources.values()) or any(ROW_NAME in d.annotations for d in desired.values())
    by_row_name = {(r.kind, r.db_name): r for r in resources.values() if BY_NAME[r.kind].keeps_row_names} if kept_names else {}
    for key in sorted(_maybe_changed(desired, resources, kept_names)):
        d = desired[key]
        a = resources.get(key)
        natural = BY_NAME[d.kind].natural_name
        if natural is not None and a is None:
            twin = resources.get((d.kind, natural(d.essence)))
            if twin is not None and not twin.managed:
                refs = ", ".join(f"{f} {d.essence[f]!r}" for f in BY_NAME[d.kind].references)
                problems.append(_conflict(d, f"{d.kind} {twin.name!r} ({refs}) already exists as a row reconciler does not manage"))
                continue
        if a is not None and not a.managed:
            problems.append(_conflict(d, f"{d.kind} {d.name!r} already exists in the database but is not managed by reconciler"))
            continue
        taken = _row_name_taken(d, desired, by_row_name) if kept_names and BY_NAME[d.kind].keeps_row_names else None
        if taken is not None:
            problems.append(taken)
            continue
        if a is None:
            upserts[d.kind].append(_create(d))
            continue
        fields = _renamed(d, a) + diff_fields(d.kind, d.essence, a) + _metadata_changes(d, a)
        if fields and BY_NAME[d.kind].history and a.essence.get("started"):
            problems.append(_started_run(d, a))
            continue
        if fields:
            upserts[d.kind].append(
                Change(
                    Action.UPDATE,
                    d.kind,
                    d.name,
                    fields,
                    _desired_payload(d),
                    a.row_id,
                    d.source,
                    d.labels,
                    d.annotations,
                    reason=f"apply #{a.apply_id}" if a.apply_id else "",
                )
            )

    deleted: set[ResourceKey] = set()
    unmanaged: list[UnmanagedResource] = []
    # only rows nobody manages and managed rows the manifests dropped are listed or deleted below
    for key in sorted(key for key, a in resources.items() if not a.managed or key not in desired):
        a = resources[key]
        if BY_NAME[a.kind].history:
            continue  # runs are history: never pruned, never listed as unmanaged
        if not a.managed:
            if managed_natural is None:
                managed_natural = _managed_natural_names(resources)
            if (a.kind, a.name) not in managed_natural:
                unmanaged.append(UnmanagedResource(a.kind, a.name))
            continue
        if key in desired or not prune:
            continue
        deleted.add(key)
        deletes[a.kind].append(
            Change(Action.DELETE, a.kind, a.name, row_id=a.row_id, labels=a.labels, annotations=a.annotations, reason="no longer in the manifests")
        )

    for kind, name in sorted(actual.vanished):
        if prune and (kind, name) not in desired and (kind, name) not in resources:
            # its row was deleted outside reconciler and the manifests dropped it too: forget it
            deletes[kind].append(Change(Action.DELETE, kind, name, reason="already deleted outside reconciler"))

    problems += _blocked_deletes(deleted, resources, desired)
    if problems:
        raise ReconcilerError(problems)
    ordered: list[Change] = []
    for k in KINDS:  # creates and updates in dependency order, deletes after them in reverse
        ordered += (deletes[k.name] if k.delete_first else []) + upserts[k.name]
    for k in reversed(KINDS):
        if not k.delete_first and not k.history:
            ordered += deletes[k.name]
    return Plan(
        changes=tuple(ordered),
        state_fingerprint=actual.fingerprint,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        prune=prune,
        unmanaged=tuple(unmanaged),
        sources=sources,
        git=git,
    )


def _managed_natural_names(resources: dict[ResourceKey, ActualResource]) -> set[ResourceKey]:
    naturals = {str(k.name): k.natural_name for k in KINDS if k.natural_name is not None}
    return {(r.kind, naturals[r.kind](r.essence)) for r in resources.values() if r.managed and r.kind in naturals}


def _conflict(d: DesiredResource, message: str) -> Problem:
    kind = d.kind.lower()
    return Problem(
        message,
        None,
        f'{d.kind} "{d.name}"',
        hint=f"adopt it with `reconciler adopt {kind}/{d.name}`, or rename the manifest (defined at {d.source})",
    )


def _blocked_deletes(
    deleted: set[ResourceKey], resources: dict[ResourceKey, ActualResource], desired: dict[ResourceKey, DesiredResource]
) -> list[Problem]:
    """A delete is refused when a row that stays (unmanaged, or kept) still refers to it. A kept row
    refers to what its manifest says: updates are applied before deletes, so re-pointing an agent
    away from a provider and removing the provider in one plan is fine."""
    problems: list[Problem] = []
    if not deleted:
        return problems  # nothing deleted, nothing referred to: the common plan, without a pass over every row
    for key, r in resources.items():
        if key in deleted or BY_NAME[r.kind].history:  # a run keeps its results when its assignment goes
            continue
        essence = desired[key].essence if key in desired and r.managed else r.essence
        for field_name, reference in BY_NAME[r.kind].references.items():
            target = reference.kind
            ref = (target, essence.get(field_name))
            if ref in deleted:
                problems.append(
                    Problem(
                        f"cannot delete {target} {ref[1]!r}: {r.kind} {r.name!r} still refers to it"
                        + ("" if r.managed else " (a row reconciler does not manage)"),
                        hint=f"keep {target} {ref[1]!r} in the manifests, or first remove or re-point {r.kind} {r.name!r}",
                    )
                )
    return problems
