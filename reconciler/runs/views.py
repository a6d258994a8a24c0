"""Read-only views of runs for the CLI (plain dicts, ready to render)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, inspect

from reconciler.runs import metrics, store
from reconciler.state.tables import run_chunks


def iso(v: Any) -> Any:
    return v.isoformat(timespec="seconds") if hasattr(v, "isoformat") else v


def current_status(record: store.Claimable, error: str | None, kept: str = "items") -> tuple[str, str | None]:
    """(status, error) of a run or experiment as they are now: one left ``running`` by a process
    that is gone is interrupted (its finished ``kept`` are kept)."""
    if not store.owner_gone(record):
        return record.status, error
    return "interrupted", (
        f"the process that ran it ({record.runner}) is gone; run `reconciler run {record.name}` to resume "
        f"(finished {kept} are kept, the rest are processed)"
    )


def _status(row: dict[str, Any]) -> tuple[str, str | None]:
    return current_status(store.run_record(row), row["error"])


def run_rows(engine: Engine | None) -> list[dict[str, Any]]:
    rows = []
    for r in store.list_runs(engine):
        status, error = _status(r)
        rows.append(
            {
                "name": r["name"],
                "status": status,
                "items": r["items_total"],
                "succeeded": r["items_succeeded"],
                "failed": r["items_failed"],
                "accuracy": f"{r['accuracy']:.0%}" if r["accuracy"] is not None else None,
                "tokens": (r["input_tokens"] or 0) + (r["output_tokens"] or 0),
                "cost_usd": round(r["cost_estimate"] or 0.0, 6),
                "elapsed_s": round(r["elapsed_seconds"], 1) if r["elapsed_seconds"] is not None else None,
                "config": (r["config_sha256"] or "")[:12] or None,
                "started_at": iso(r["started_at"]),
                "completed_at": iso(r["completed_at"]),
                "error": error,
            }
        )
    return rows


def run_detail(engine: Engine, name: str) -> dict[str, Any]:
    record = store.find_run(engine, name)
    row = next(r for r in store.list_runs(engine) if r["name"] == name)
    spec = dict(record.spec)
    inputs = spec.pop("inputs", [])
    spec["inputs"] = f"{len(inputs)} items"
    status, error = _status(row)
    return {
        "name": row["name"],
        "status": status,
        "error": error,
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "completed_at": iso(row["completed_at"]),
        "elapsed_seconds": row["elapsed_seconds"],
        "items_total": row["items_total"],
        "items_succeeded": row["items_succeeded"],
        "items_failed": row["items_failed"],
        "accuracy": row["accuracy"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cost_estimate": row["cost_estimate"],
        "runner": row["runner"],
        "runner_alive": status == "running" if row["status"] == "running" else None,
        "config_sha256": row["config_sha256"],
        **distribution_view(engine, [row["id"]]),
        "spec": spec,
        "config_snapshot": row["config_snapshot"],
    }


def distribution_view(engine: Engine, run_ids: list[Any]) -> dict[str, Any]:
    """A distributed run's chunks and workers (host, pid, items stored, chunks held), summed over
    ``run_ids`` (an experiment's arms); nothing for one that never was."""
    from reconciler.runs.distributed import store as dstore
    from reconciler.runs.distributed.chunks import WorkerName

    with engine.connect() as conn:
        if not inspect(conn).has_table(run_chunks.name):  # a database from before distributed runs
            return {}
    shown = dstore.distribution(engine, run_ids)
    if shown is None:
        return {}
    workers = []
    for w in shown.workers:
        name = WorkerName.parse(w.worker)
        workers.append(
            {"host": name.host, "pid": name.pid, "items": w.items, "last_result_at": iso(w.last_result_at), "chunks_running": list(w.chunks_running)}
        )
    return {
        "chunks": {"total": shown.chunks, **{state: shown.by_state.get(state, 0) for state in ("queued", "running", "done", "stopped")}},
        "chunk_stopped": shown.stopped_reason,
        "workers": workers,
    }


def result_rows(engine: Engine, name: str) -> tuple[list[dict[str, Any]], str | None]:
    record = store.find_run(engine, name)
    expected = record.spec.get("expected")
    template = record.spec.get("prompt_template")
    out = []
    for r in store.all_results(engine, record.id):
        item = r["input"] or {}
        out.append(
            {
                "item": r["item_index"],
                "input": item,
                "prompt": metrics.render_prompt(item, template, expected) if isinstance(item, dict) else item,
                "output": r["output"],
                "valid": r["valid"],
                "expected": metrics.expected_value(item, expected),
                "correct": metrics.is_correct(r["output"], item, expected) if expected and r["valid"] else (False if expected else None),
                "error": r["error"],
                "attempts": r["attempts"],
                "input_tokens": r["input_tokens"],
                "output_tokens": r["output_tokens"],
                "latency_ms": r["latency_ms"],
                "reused": bool(r.get("reused")),
            }
        )
    return out, expected
