"""Guard rails over a plan: pure functions, plan (and plain snapshot data) in, plan or problems out.

They run after the diff for both ``plan`` and ``apply``, so what a reviewer sees is what is refused.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, replace

from reconciler.errors import Problem, ReconcilerError
from reconciler.kinds import ALIASES, BY_NAME, CONFIG_KINDS
from reconciler.plan.model import Action, Change, Plan
from reconciler.state.snapshot import StateSnapshot

ResourceKey = tuple[str, str]
PREVENT_DESTROY = "reconciler/prevent-destroy"
DEFAULT_MASS_DELETE_SHARE = 0.5


@dataclass(frozen=True)
class Selector:
    """``KIND/NAME`` from --target/--exclude; NAME may be a glob (``agent/triage-*``, ``*/legacy``)."""

    text: str
    kind: str  # "*" for any kind
    name: str

    def matches(self, key: ResourceKey) -> bool:
        return (self.kind == "*" or self.kind == key[0]) and fnmatch.fnmatchcase(key[1], self.name)


@dataclass(frozen=True)
class GuardOptions:
    targets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    allow_mass_delete: bool = False
    mass_delete_share: float = DEFAULT_MASS_DELETE_SHARE

    @property
    def narrows(self) -> bool:
        return bool(self.targets or self.excludes)


def parse_selector(text: str, option: str = "--target") -> Selector:
    kind, sep, name = text.partition("/")
    found = ALIASES.get(kind.lower())
    kind_name = "*" if kind == "*" else (str(found.name) if found is not None else None)
    if not sep or not name or kind_name is None:
        raise ReconcilerError(
            f"{option} {text!r} is not KIND/NAME",
            hint=f"e.g. agent/triage, provider/openai or task/* (kinds: {', '.join(k.name.lower() for k in CONFIG_KINDS)})",
        )
    return Selector(text, kind_name, name)


def check_prevent_destroy(plan: Plan) -> list[Problem]:
    """A delete of a resource annotated ``reconciler/prevent-destroy: "true"`` is refused."""
    return [
        Problem(
            f'{c.kind} {c.name!r} is protected by the annotation {PREVENT_DESTROY}: "true"; the plan would delete it',
            document=f'{c.kind} "{c.name}"',
            hint='put its manifest back, or first apply it with the annotation removed (or set to "false"), then delete it',
        )
        for c in plan.changes
        if c.action is Action.DELETE and str(c.annotations.get(PREVENT_DESTROY, "")).strip().lower() == "true"
    ]


def check_mass_delete(plan: Plan, managed_count: int, options: GuardOptions) -> list[Problem]:
    """Refuse a plan that deletes more than a share of the managed resources (an empty or
    mis-pointed manifests directory must not wipe a database)."""
    deletes = plan.count(Action.DELETE)
    if options.allow_mass_delete or deletes == 0 or deletes <= options.mass_delete_share * managed_count:
        return []
    return [
        Problem(
            f"the plan would delete {deletes} of the {managed_count} resources reconciler manages "
            f"(more than {options.mass_delete_share:.0%}); refusing",
            hint="check that PATH points at the whole manifests directory; if the deletes are intended, pass --allow-mass-delete",
        )
    ]


def _references(change: Change, snapshot: StateSnapshot) -> Iterable[ResourceKey]:
    """The resources a change's row refers to (desired for create/update, current for delete)."""
    if change.action is Action.DELETE:
        actual = snapshot.resources.get(change.key)
        essence = actual.essence if actual is not None else {}
    else:
        essence = change.desired or {}
    for field_name, reference in BY_NAME[change.kind].references.items():
        if essence.get(field_name) is not None:
            yield (reference.kind, essence[field_name])


def select_changes(plan: Plan, snapshot: StateSnapshot, known: set[ResourceKey], options: GuardOptions) -> Plan:
    """Narrow a plan to --target and away from --exclude, keeping what the kept changes need:
    a created/updated row pulls in the creates it refers to, a delete pulls in the deletes of rows
    that refer to it. A target that matches nothing known is an error, not an empty plan."""
    if not options.narrows:
        return plan
    targets = [parse_selector(t, "--target") for t in options.targets]
    excludes = [parse_selector(t, "--exclude") for t in options.excludes]
    problems = [_matches_nothing(s, known) for s in targets if not any(s.matches(k) for k in known)]
    if problems:
        raise ReconcilerError(problems)
    by_key = {c.key: c for c in plan.changes}
    keep = {c.key for c in plan.changes if (not targets or any(s.matches(c.key) for s in targets))}
    keep = {k for k in keep if not any(s.matches(k) for s in excludes)}
    needs: dict[ResourceKey, set[ResourceKey]] = {c.key: set() for c in plan.changes}
    for c in plan.changes:
        for ref in _references(c, snapshot):
            other = by_key.get(ref)
            if other is None:
                continue
            if c.action is not Action.DELETE and other.action is Action.CREATE:
                needs[c.key].add(ref)
            elif c.action is Action.DELETE and other.action is Action.DELETE:
                needs[ref].add(c.key)  # deleting the target first needs the referrer gone
    pending = list(keep)
    problems = []
    while pending:
        key = pending.pop()
        for dep in needs[key]:
            if dep in keep:
                continue
            if any(s.matches(dep) for s in excludes):
                problems.append(
                    Problem(
                        f"{key[0]} {key[1]!r} cannot change without {dep[0]} {dep[1]!r}, which --exclude leaves out",
                        hint=f"drop --exclude for {dep[0].lower()}/{dep[1]}, or also exclude {key[0].lower()}/{key[1]}",
                    )
                )
                continue
            keep.add(dep)
            pending.append(dep)
    if problems:
        raise ReconcilerError(problems)
    unused = [s.text for s in excludes if not any(s.matches(k) for k in known)]
    left_out = len(plan.changes) - len(keep)
    note = (
        f"Targeted plan (--target/--exclude): {left_out} other change{'s' if left_out != 1 else ''} left out; "
        "the database will not fully match the manifests."
    )
    notes = (note, *(f"--exclude {text!r} matches nothing in the manifests or the database." for text in unused))
    return replace(plan, changes=tuple(c for c in plan.changes if c.key in keep), warnings=(*plan.warnings, *notes))


def _matches_nothing(selector: Selector, known: set[ResourceKey]) -> Problem:
    names = sorted(f"{k.lower()}/{n}" for k, n in known if selector.kind in ("*", k))
    close = difflib.get_close_matches(f"{selector.kind.lower()}/{selector.name}", names, n=1)
    return Problem(
        f"--target {selector.text!r} matches nothing in the manifests or the database",
        hint=(f"did you mean {close[0]!r}? " if close else "") + "list resources with `reconciler get KIND`",
    )


def guard_plan(plan: Plan, snapshot: StateSnapshot, known: set[ResourceKey], options: GuardOptions) -> Plan:
    """Narrow, then check: prevent-destroy annotations and the mass-delete threshold."""
    narrowed = select_changes(plan, snapshot, known, options)
    managed = sum(1 for r in snapshot.resources.values() if r.managed)
    problems = check_prevent_destroy(narrowed) + check_mass_delete(narrowed, managed, options)
    if problems:
        raise ReconcilerError([*problems, Problem("nothing was changed", severity="summary")])
    return narrowed
