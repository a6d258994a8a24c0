"""Run: a batch of inputs through one assignment (the seed's ``analysis_runs``), with the exact
configuration snapshot it used. A run is history once it starts: never pruned, never changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler.hashing import sha256_hex
from reconciler.kinds.base import (
    Essence,
    Fingerprint,
    Ids,
    Kind,
    KindName,
    Names,
    Reference,
    RowRead,
    RowSource,
    id_column,
    not_exported,
    select_sql,
    table_metadata,
    timestamp_columns,
)

if TYPE_CHECKING:
    from sqlalchemy import Table

    from reconciler.manifests.loader import Manifest


def _table(name: str) -> Table:
    from sqlalchemy import JSON, Column, DateTime, Float, ForeignKey, Integer, String, Table, Text, Uuid

    return Table(
        name,
        table_metadata(),
        id_column(),
        Column("name", String(255), unique=True, index=True),
        Column("agent_assignment_id", Uuid, ForeignKey("agent_task_assignments.id", ondelete="SET NULL"), index=True),
        Column("spec", JSON),
        Column("config_snapshot", JSON),
        Column("config_sha256", String(64), index=True),
        Column("time_window_start", DateTime(timezone=True)),
        Column("time_window_end", DateTime(timezone=True)),
        Column("status", String(16), nullable=False, default="pending"),
        Column("error", Text),
        Column("started_at", DateTime(timezone=True)),
        Column("completed_at", DateTime(timezone=True)),
        Column("items_total", Integer, nullable=False, default=0),
        Column("items_succeeded", Integer, nullable=False, default=0),
        Column("items_failed", Integer, nullable=False, default=0),
        Column("input_tokens", Integer, nullable=False, default=0),
        Column("output_tokens", Integer, nullable=False, default=0),
        Column("accuracy", Float),
        Column("elapsed_seconds", Float),
        Column("proposals_total", Integer, nullable=False, default=0),
        Column("proposals_approved", Integer, nullable=False, default=0),
        Column("proposals_rejected", Integer, nullable=False, default=0),
        Column("llm_tokens_used", Integer, nullable=False, default=0),
        Column("cost_estimate", Float, nullable=False, default=0.0),
        Column("runner", String(255)),  # host:pid executing it, so two never run at once
        Column("heartbeat_at", DateTime(timezone=True)),
        *timestamp_columns(),
    )


def inputs_digest(inputs: list[dict[str, Any]]) -> str:
    return "sha256:" + sha256_hex(inputs)


def batch_essence(m: Manifest, fields: tuple[str, ...]) -> dict[str, Any]:
    """The spec's ``fields`` in that order (the order a plan lists changes in), ``inputs`` standing
    for the inputs file, their digest and count: a batch compares by the digest of its inputs,
    the inputs themselves travel in the payload."""
    out: dict[str, Any] = {}
    for f in fields:
        if f == "inputs":
            inputs = m.resolved.get("inputs") or []
            out.update(inputs_file=m.spec.inputs_file, inputs_sha256=inputs_digest(inputs), items=len(inputs))
        else:
            out[f] = getattr(m.spec, f)
    return out


def inputs_payload(m: Manifest) -> dict[str, Any]:
    return {"inputs": m.resolved.get("inputs") or []}


def batch_kind(name: KindName, spec: str, essence: Essence, table: tuple[str, Callable[[str], Table]], field: str, reference: Reference) -> Kind:
    """A Run or an Experiment (see ``batch_essence``): its row holds the applied essence and the
    inputs in ``spec`` and the one reference (``field``); read back, it tells only whether it
    started (then it is immutable). History: never exported."""

    def row_values(d: dict[str, Any], ids: Ids) -> dict[str, Any]:
        spec = {k: v for k, v in d.items() if not k.startswith("_")}
        spec["inputs"] = d.get("_inputs") or []
        return {reference.column: ids[(reference.kind, d[field])], "spec": spec, "items_total": d["items"], "status": "pending"}

    table_name, make_table = table
    # named rows only (an unnamed run is no manifest's); the essence is what was applied
    # (from the bookkeeping), not the status itself: progress must not stale saved plans
    query = select_sql(table_name, ("id", "name", "status"), where='"name" IS NOT NULL')

    def read(source: RowSource, names: Names) -> list[RowRead]:
        return [RowRead(row_name, row_id, {"started": status != "pending"}) for row_id, row_name, status in source.rows(query)]

    return Kind(
        name=name,
        table_name=table_name,
        make_table=make_table,
        spec=spec,
        essence=essence,
        row_values=row_values,
        read=read,
        export=not_exported(f"{name.lower()}s"),
        references={field: reference},
        payload=inputs_payload,
        history=True,
    )


_FIELDS = ("assignment", "inputs", "prompt_template", "concurrency", "max_retries", "timeout_seconds", "expected", "trigger")


def _essence(m: Manifest, fingerprint: Fingerprint | None) -> dict[str, Any]:
    return batch_essence(m, _FIELDS)


RUN = batch_kind(KindName.RUN, "RunSpec", _essence, ("analysis_runs", _table), "assignment", Reference("agent_assignment_id", KindName.ASSIGNMENT))
