"""Which values a plan would write into enum columns that lack them: a pure function of the plan's
changes and the database's column types (``reconciler.state.columns``).

`plan` shows the result before anything is written, `apply` refuses it unless ``--extend-enums``,
and the executor checks again inside its transaction (a saved plan, or a database changed since).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from reconciler.errors import Problem, ReconcilerError
from reconciler.kinds import BY_NAME, Kind
from reconciler.plan.model import Action, Change, EnumShortfall
from reconciler.state.columns import DbColumns

ResourceKey = tuple[str, str]
EXTEND_HINT = (
    "add the values with `reconciler apply --extend-enums` (ALTER TYPE ... ADD VALUE, committed before the apply and "
    "recorded in history) only if the service that owns the database can read them; otherwise use a value the enum has"
)


class _AnyIds(Mapping[ResourceKey, uuid.UUID]):
    """References resolve to some id: enum columns never hold ids, so which one does not matter."""

    def __getitem__(self, key: ResourceKey) -> uuid.UUID:
        return uuid.UUID(int=0)

    def __iter__(self) -> Iterator[ResourceKey]:
        return iter(())

    def __len__(self) -> int:
        return 0


def written_values(k: Kind, change: Change) -> dict[str, tuple[Any, ...]]:
    """Column -> the values a create or update writes into it now or later: its row values, the
    columns set on create, and the statuses a provider's validation writes after a change."""
    assert change.desired is not None
    out = {column: (value,) for column, value in k.row_values(change.desired, _AnyIds()).items()}
    if change.action is Action.CREATE:
        for column, value in k.create_defaults.items():
            out[column] = (*out.get(column, ()), value)
    if change.action is Action.CREATE or any(f.field in k.validation_fields for f in change.fields):
        for column, values in k.status_values.items():
            out[column] = (*out.get(column, ()), *values)
    return out


def enum_shortfalls(changes: Iterable[Change], columns: DbColumns) -> tuple[EnumShortfall, ...]:
    """Every enum column the changes would write a value into that its enum lacks."""
    if not columns.enums:
        return ()
    missing: dict[tuple[str, str], dict[str, None]] = {}
    who: dict[tuple[str, str], dict[str, None]] = {}
    for c in changes:
        if c.action is Action.DELETE or c.desired is None:
            continue
        k = BY_NAME[c.kind]
        for column, values in written_values(k, c).items():
            e = columns.enum(k.table.name, column)
            if e is None:
                continue
            lacking = [v for v in values if isinstance(v, str) and v not in e.values]
            if lacking:
                missing.setdefault((e.table, e.column), {}).update(dict.fromkeys(lacking))
                who.setdefault((e.table, e.column), {})[f"{c.kind.lower()} {c.name}"] = None
    out = []
    for key, lacking_values in sorted(missing.items()):
        e = columns.enums[key]
        out.append(EnumShortfall(e.table, e.column, e.qualified_name, e.values, tuple(lacking_values), tuple(who[key])))
    return tuple(out)


def refusal(shortfalls: Iterable[EnumShortfall]) -> ReconcilerError:
    """The error apply gives for values the database's enums lack, when not told to extend them."""
    problems = [Problem(s.describe(), hint=EXTEND_HINT) for s in shortfalls]
    return ReconcilerError([*problems, Problem("nothing was changed", severity="summary")])


__all__ = ["EXTEND_HINT", "enum_shortfalls", "refusal", "written_values"]
