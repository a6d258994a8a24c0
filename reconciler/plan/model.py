"""A plan is plain immutable data: what changes, from what to what, and why.

Rendering (``render.py``) and applying (``reconciler.apply``) are separate functions over it, and a
plan round-trips through JSON so ``plan --out`` / ``apply FILE`` apply exactly what was shown.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.plan.behaviour import BehaviourDiff  # --evaluate only: imported when a saved plan has evaluations

PLAN_FORMAT_VERSION = 1


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any
    sensitive: bool = False
    drift: bool = False  # the database value differs from what the reconciler last applied

    def to_dict(self) -> dict[str, Any]:
        if self.sensitive:
            return {"field": self.field, "sensitive": True, "drift": self.drift}
        return {"field": self.field, "old": self.old, "new": self.new, "sensitive": False, "drift": self.drift}


@dataclass(frozen=True)
class Change:
    action: Action
    kind: str
    name: str
    fields: tuple[FieldChange, ...] = ()
    desired: dict[str, Any] | None = None  # the essence to write (create/update); secrets only as HMAC
    row_id: str | None = None  # the database row (update/delete)
    source: str | None = None  # file:line of the manifest
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "kind": self.kind,
            "name": self.name,
            "source": self.source,
            "row_id": self.row_id,
            "reason": self.reason,
            "fields": [f.to_dict() for f in self.fields],
            "desired": None if self.desired is None else dict(self.desired),
            "labels": self.labels,
            "annotations": self.annotations,
        }


@dataclass(frozen=True)
class UnmanagedResource:
    kind: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class EnumShortfall:
    """Values the plan writes into a column the database types as an enum that lacks them.

    PostgreSQL refuses such a row; after ``apply --extend-enums`` adds the values, the service that
    owns the database still cannot read the row (its own enum lacks them)."""

    table: str
    column: str
    enum: str  # the enum type, schema-qualified when not on the search path
    values: tuple[str, ...]  # what the enum has now
    missing: tuple[str, ...]
    resources: tuple[str, ...]  # "provider local", ... : who writes them

    def describe(self) -> str:
        has = ", ".join(repr(v) for v in self.values)
        needs = ", ".join(repr(v) for v in self.missing)
        who = ", ".join(self.resources[:5]) + (f" and {len(self.resources) - 5} more" if len(self.resources) > 5 else "")
        return (
            f"{self.table}.{self.column} is the PostgreSQL enum {self.enum} ({has}); {who} would write {needs}, which it lacks. "
            f"The service that owns this database cannot read a row with a value its enum lacks."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "enum": self.enum,
            "values": list(self.values),
            "missing": list(self.missing),
            "resources": list(self.resources),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnumShortfall:
        return cls(d["table"], d["column"], d["enum"], tuple(d["values"]), tuple(d["missing"]), tuple(d["resources"]))


_ACTION = attrgetter("action")


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    state_fingerprint: str
    created_at: str
    prune: bool = True
    unmanaged: tuple[UnmanagedResource, ...] = ()
    sources: tuple[str, ...] = ()
    git: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    enum_shortfalls: tuple[EnumShortfall, ...] = ()  # apply refuses these unless --extend-enums
    evaluations: tuple[BehaviourDiff, ...] | None = None  # --evaluate: the behaviour diff per changed assignment
    evaluation_tasks: tuple[str, ...] = ()  # --evaluate: the tasks that had an evaluation (apply FILE checks their assignments)
    gates_ignored: bool = False  # applied with --ignore-gates although a gate failed (kept in the history)

    @property
    def failed_gates(self) -> tuple[BehaviourDiff, ...]:
        return tuple(d for d in self.evaluations or () if not d.passed)

    @property
    def is_empty(self) -> bool:
        return not self.changes

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    def summary(self) -> dict[str, int]:
        counts = Counter(map(_ACTION, self.changes))  # one pass (an apply asks four times, of 10,000 changes)
        return {"create": counts[Action.CREATE], "update": counts[Action.UPDATE], "delete": counts[Action.DELETE]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "created_at": self.created_at,
            "state_fingerprint": self.state_fingerprint,
            "prune": self.prune,
            "sources": list(self.sources),
            "git": self.git,
            "summary": self.summary(),
            "changes": [c.to_dict() for c in self.changes],
            "unmanaged": [u.to_dict() for u in self.unmanaged],
            "warnings": list(self.warnings),
            "enum_values_missing": [e.to_dict() for e in self.enum_shortfalls],
            # only when evaluated, so plans made without --evaluate read as they always did
            **({} if self.evaluations is None else self._evaluation_dict()),
            **({"gates_ignored": True} if self.gates_ignored else {}),
        }

    def _evaluation_dict(self) -> dict[str, Any]:
        return {"evaluations": [d.to_dict() for d in self.evaluations or ()], "evaluation_tasks": list(self.evaluation_tasks)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        from reconciler.plan.behaviour import BehaviourDiff

        if data.get("format_version") != PLAN_FORMAT_VERSION:
            raise ValueError(f"unsupported plan format_version {data.get('format_version')!r}")
        changes = tuple(
            Change(
                action=Action(c["action"]),
                kind=c["kind"],
                name=c["name"],
                fields=tuple(
                    FieldChange(f["field"], f.get("old"), f.get("new"), f.get("sensitive", False), f.get("drift", False)) for f in c["fields"]
                ),
                desired=c.get("desired"),
                row_id=c.get("row_id"),
                source=c.get("source"),
                labels=c.get("labels") or {},
                annotations=c.get("annotations") or {},
                reason=c.get("reason", ""),
            )
            for c in data["changes"]
        )
        return cls(
            changes=changes,
            state_fingerprint=data["state_fingerprint"],
            created_at=data["created_at"],
            prune=data.get("prune", True),
            unmanaged=tuple(UnmanagedResource(u["kind"], u["name"]) for u in data.get("unmanaged", [])),
            sources=tuple(data.get("sources", [])),
            git=data.get("git"),
            warnings=tuple(data.get("warnings", [])),
            enum_shortfalls=tuple(EnumShortfall.from_dict(e) for e in data.get("enum_values_missing", [])),
            evaluations=None if data.get("evaluations") is None else tuple(BehaviourDiff.from_dict(d) for d in data["evaluations"]),
            evaluation_tasks=tuple(data.get("evaluation_tasks", [])),
            gates_ignored=bool(data.get("gates_ignored", False)),
        )
