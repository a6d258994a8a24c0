"""``reconciler run FILE``: apply the Run manifests in FILE (under the apply lock, recorded in the
history like any apply), so a run started from a file is the same row a directory apply would make."""

from __future__ import annotations

from sqlalchemy import Engine

from reconciler.errors import Problem, ReconcilerError


def submit_run_file(engine: Engine, path: str, lock_timeout: float | None = None) -> list[str]:
    """The names of the runs in ``path``, created (or updated while pending) in the database."""
    from reconciler.manifests.loader import ManifestSet, load_manifests
    from reconciler.plan.desired import desired_state
    from reconciler.plan.diff import diff
    from reconciler.state.db import translate_db_errors
    from reconciler.state.lock import DEFAULT_LOCK_TIMEOUT, apply_lock
    from reconciler.state.snapshot import load_snapshot
    from reconciler.workflow import apply_meta, run_apply

    manifests = load_manifests([path], external_refs=True)
    runs = manifests.of_kind("Run")
    others = [m for m in manifests.manifests if m.kind != "Run"]
    if others:
        raise ReconcilerError(
            Problem(
                f"`reconciler run FILE` takes only Run manifests; {others[0].title} is a {others[0].kind}",
                others[0].location,
                hint=f"apply the configuration first: reconciler apply {path}",
            )
        )
    if not runs:
        raise ReconcilerError(f"{path} holds no Run manifest", hint="pass a run's name or a file with kind: Run documents")
    with apply_lock(engine, DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout):
        with translate_db_errors(engine.url, "reading the current state"):
            snapshot = load_snapshot(engine)
        missing = [m for m in runs if ("Assignment", m.spec.assignment) not in snapshot.resources]
        if missing:
            raise ReconcilerError(
                [
                    Problem(
                        f"refers to Assignment {m.spec.assignment!r}, which is not in the database",
                        m.raw.where(("spec", "assignment")),
                        m.title,
                        "spec.assignment",
                        "apply the assignment first (reconciler apply PATH), or fix the name",
                    )
                    for m in missing
                ]
            )
        plan = diff(desired_state(ManifestSet(tuple(runs))), snapshot, prune=False, sources=(path,))
        if not plan.is_empty:
            run_apply(engine, plan, apply_meta("run", [path], None))
    return [m.name for m in runs]
