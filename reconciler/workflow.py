"""The pipeline in one place: manifests -> desired state; database -> snapshot; diff -> plan; apply.

The CLI, watch mode and tests call these functions; each stage below is a module of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class PlanRequest:
    paths: list[str]
    db: str | None = None
    prune: bool = True
    git: dict[str, Any] | None = None
    guards: GuardOptions | None = None


def _needs_secrets(manifests: ManifestSet) -> bool:
    return any(m.kind == "Provider" and m.spec.api_key is not None for m in manifests.manifests)


def secret_fingerprinter() -> Callable[[dict[str, str], Manifest], str]:
    from reconciler.providers.secrets import load_secret_box, resolve_secret

    box = load_secret_box(create=True)

    def fingerprint(ref: dict[str, str], m: Manifest) -> str:
        return box.fingerprint(resolve_secret(ref, m.raw.file, str(m.root), m.name))

    return fingerprint


def secret_encrypter() -> Callable[[Change], tuple[bytes, str]]:
    from reconciler.providers.secrets import load_secret_box, resolve_secret

    box = load_secret_box(create=True)

    def encrypt(change: Change) -> tuple[bytes, str]:
        source = (change.desired or {})["_secret_source"]
        value = resolve_secret(source["ref"], source["manifest"], source["root"], change.name)
        return box.encrypt(value), box.fingerprint(value)

    return encrypt


def desired_from(manifests: ManifestSet) -> dict[tuple[str, str], DesiredResource]:
    return desired_state(manifests, secret_fingerprinter() if _needs_secrets(manifests) else None)


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
    desired = desired_from(manifests)
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
