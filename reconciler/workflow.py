"""The pipeline in one place: manifests -> desired state; database -> snapshot; diff -> plan; apply.

The CLI, watch mode and tests call these functions; each stage below is a module of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from reconciler.apply import ApplyMeta, ApplyResult, execute_plan
from reconciler.gitops.guards import GuardOptions, guard_plan
from reconciler.manifests.loader import Manifest, ManifestSet, load_manifests
from reconciler.plan.desired import DesiredResource, desired_state
from reconciler.plan.diff import diff
from reconciler.plan.model import Change, Plan
from reconciler.state.db import database_url, open_engine, translate_db_errors
from reconciler.state.lock import DEFAULT_LOCK_TIMEOUT, apply_lock, holder_identity
from reconciler.state.snapshot import StateSnapshot, load_snapshot

if TYPE_CHECKING:
    from reconciler.providers.secrets import SecretBox


@dataclass(frozen=True)
class PlanRequest:
    paths: list[str]
    db: str | None = None
    prune: bool = True
    git: dict[str, Any] | None = None
    guards: GuardOptions | None = None


def _needs_secrets(manifests: ManifestSet) -> bool:
    return any(m.kind == "Provider" and m.spec.api_key is not None for m in manifests.manifests)


def resolve_manifest_secrets(manifests: ManifestSet) -> dict[str, str]:
    """Provider name -> plain API key, for every provider with an api_key. Every unreadable or
    disallowed reference is reported at once, located at its manifest field."""
    from reconciler.errors import Problem, ReconcilerError
    from reconciler.providers.secrets import SecretRefError, read_reference

    values: dict[str, str] = {}
    problems: list[Problem] = []
    for m in manifests.of_kind("Provider"):
        if m.spec.api_key is None:
            continue
        ref = m.spec.api_key.model_dump(exclude_none=True)
        try:
            values[m.name] = read_reference(ref, Path(m.raw.file), m.root)
        except SecretRefError as err:
            field_path = ("spec", "api_key", err.field or next(iter(ref)))
            problems.append(Problem(err.message, m.raw.where(field_path), m.title, ".".join(field_path), err.hint))
    if problems:
        raise ReconcilerError(problems)
    return values


def secret_box_for(manifests: ManifestSet, snapshot: StateSnapshot | None) -> SecretBox:
    """The key ring for planning: it must decrypt the API keys reconciler itself stored for the
    providers in the manifests, or the HMAC comparison would claim every key changed (a wrong or
    lost key). A ciphertext written by someone else (the seed service, an edit outside reconciler)
    is not checked: the plan shows it as changed and apply replaces it."""
    from reconciler.errors import name_list
    from reconciler.providers.secrets import load_secret_box, undecryptable

    wanted = {m.name for m in manifests.of_kind("Provider") if m.spec.api_key is not None}
    stored = {
        name: r.secret_ciphertext
        for (kind, name), r in (snapshot.resources.items() if snapshot is not None else ())
        if kind == "Provider" and r.secret_ciphertext is not None and (r.essence.get("api_key") or {}).get("hmac")
    }
    box = load_secret_box(
        create=not stored,
        needed_for=f"the database holds API keys encrypted for providers {name_list(set(stored))}",
    )
    bad = sorted(name for name, token in stored.items() if name in wanted and not box.can_decrypt(token))
    if bad:
        raise undecryptable(bad, box.source)
    return box


def secret_encrypter() -> Callable[[Change], tuple[bytes, str]]:
    from reconciler.providers.secrets import load_secret_box, resolve_secret

    box = load_secret_box(create=True)

    def encrypt(change: Change) -> tuple[bytes, str]:
        source = (change.desired or {})["_secret_source"]
        value = resolve_secret(source["ref"], source["manifest"], source["root"], change.name)
        return box.encrypt(value), box.fingerprint(value)

    return encrypt


def desired_from(manifests: ManifestSet, snapshot: StateSnapshot | None = None) -> dict[tuple[str, str], DesiredResource]:
    """The desired state; provider secrets are read (references first, then the key) only if present."""
    if not _needs_secrets(manifests):
        return desired_state(manifests, None)
    values = resolve_manifest_secrets(manifests)
    box = secret_box_for(manifests, snapshot)

    def fingerprint(ref: dict[str, str], m: Manifest) -> str:
        return box.fingerprint(values[m.name])

    return desired_state(manifests, fingerprint)


def compute_plan(
    manifests: ManifestSet,
    snapshot: StateSnapshot,
    *,
    prune: bool,
    sources: list[str],
    git: dict[str, Any] | None,
    guards: GuardOptions | None = None,
) -> Plan:
    """Diff, then the guard rails (--target/--exclude, prevent-destroy, mass delete)."""
    desired = desired_from(manifests, snapshot)
    the_plan = diff(desired, snapshot, prune=prune, sources=tuple(sources), git=git)
    return guard_plan(the_plan, snapshot, set(desired) | set(snapshot.resources), guards or GuardOptions())


def plan_from_paths(request: PlanRequest) -> tuple[Plan, ManifestSet]:
    """Read-only: validate manifests and diff them against the database (creates nothing)."""
    manifests = load_manifests(request.paths)
    engine = open_engine(request.db, create=False)
    with translate_db_errors(database_url(request.db), "reading the current state"):
        snapshot = load_snapshot(engine)
    return compute_plan(manifests, snapshot, prune=request.prune, sources=request.paths, git=request.git, guards=request.guards), manifests


def open_for_apply(db: str | None) -> Engine:
    engine = open_engine(db, create=True)
    assert engine is not None
    return engine


def apply_meta(command: str, sources: list[str], git: dict[str, Any] | None) -> ApplyMeta:
    return ApplyMeta(user=holder_identity(), command=command, source=" ".join(sources), git=git)


def run_apply(engine: Engine, plan: Plan, meta: ApplyMeta) -> ApplyResult:
    """Execute a plan (the caller holds the lock); secrets are encrypted only if the plan needs it."""
    needs = any(c.desired and c.desired.get("_secret_source") for c in plan.changes)
    with translate_db_errors(engine.url, "applying the plan"):
        return execute_plan(engine, plan, meta, secret_encrypter() if needs else None)


__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "PlanRequest",
    "apply_lock",
    "apply_meta",
    "compute_plan",
    "open_for_apply",
    "plan_from_paths",
    "run_apply",
]
