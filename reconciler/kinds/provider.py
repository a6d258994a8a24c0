"""Provider: where a model is served (the seed's ``llm_providers``)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from reconciler.kinds.base import (
    ExportedSpec,
    ExportSource,
    Fingerprint,
    Kind,
    KindName,
    Names,
    RowRead,
    RowSource,
    column_writer,
    inactive_flag,
    iso,
    listing,
    named_table,
    plain_dump,
    select_sql,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table

    from reconciler.llm.ports import ProviderConfig
    from reconciler.manifests.loader import Manifest

# keep equal to reconciler.llm.provider_types.PROVIDER_TYPE_NAMES (a test checks it)
ProviderType = Literal["ollama", "openai", "openai-compatible", "anthropic", "google", "llamacpp"]
ValidationStatus = Literal["pending", "validating", "connected", "error"]  # the seed's statuses, in order


def _table(name: str) -> Table:
    from sqlalchemy import Boolean, Column, DateTime, LargeBinary, String, Text

    return named_table(
        name,
        Column("type", String(32), nullable=False),
        Column("base_url", String(2048)),
        Column("api_key_encrypted", LargeBinary),
        Column("is_active", Boolean, nullable=False, default=True),
        Column("validation_status", String(16), nullable=False, default="pending"),
        Column("validation_error", Text),
        Column("validated_at", DateTime(timezone=True)),
    )


def describe_secret(ref: Any) -> str:
    """Where a secret reference (``kinds.specs.SecretRef``) reads from, as the plan shows it."""
    return f"env:{ref.from_env}" if ref.from_env is not None else f"file:{ref.from_file}"


def ciphertext_digest(token: bytes | None) -> str | None:
    return None if token is None else "sha256:" + hashlib.sha256(token).hexdigest()


def secret_source(m: Manifest) -> dict[str, Any] | None:
    """How apply re-resolves a provider's secret (never the value itself)."""
    if m.spec.api_key is None:
        return None
    # str(Path(file).resolve()) of a file that was read, without the Path objects and resolve's
    # extra stat of the result: 19 -> 8 us a provider
    return {"ref": plain_dump(m.spec.api_key, exclude_none=True), "manifest": os.path.realpath(m.raw.file), "root": str(m.root)}


def _essence(m: Manifest, fingerprint: Fingerprint | None) -> dict[str, Any]:
    s = m.spec
    api_key = None
    if s.api_key is not None:
        assert fingerprint is not None, "a provider with an api_key needs the secret fingerprint function"
        api_key = {"ref": describe_secret(s.api_key), "hmac": fingerprint(plain_dump(s.api_key, exclude_none=True), m)}
    rate_limit = plain_dump(s.rate_limit, exclude_none=True) if s.rate_limit is not None else None
    return {
        "type": s.type,
        "base_url": s.base_url,
        "is_active": s.is_active,
        "api_key": api_key,
        "model_path": s.model_path,
        "rate_limit": rate_limit,
    }


_READ = select_sql("llm_providers", ("id", "name", "type", "base_url", "api_key_encrypted", "is_active"))


def _read(source: RowSource, names: Names) -> list[RowRead]:
    out = []
    for row_id, name, type_, base_url, ciphertext, is_active in source.rows(_READ):
        if ciphertext is not None and ciphertext.__class__ is not bytes:
            ciphertext = bytes(ciphertext)  # a memoryview, from some drivers
        digest = ciphertext_digest(ciphertext)
        essence = {
            "type": type_,
            "base_url": base_url,
            "is_active": bool(is_active),
            "api_key": None if digest is None else {"hmac": None, "digest": digest},
        }
        out.append(RowRead(name, row_id, essence, ciphertext))
    return out


def provider_config(name: str, row: Mapping[str, Any], applied: Mapping[str, Any]) -> ProviderConfig:
    """The LLM port's view of a provider, without its key (``row["api_key_encrypted"]`` holds it):
    its columns (``row``: type, base_url) and the fields kept in the bookkeeping (``applied``)."""
    from reconciler.llm.ports import ProviderConfig  # the ports' dataclasses: not built for plan, which needs none
    from reconciler.llm.ports import RateLimit as RateLimitConfig

    return ProviderConfig(
        name=name,
        type=row["type"],
        base_url=row["base_url"],
        model_path=applied.get("model_path"),
        rate_limit=RateLimitConfig.from_value(applied.get("rate_limit")),
    )


def placeholder_env(provider_name: str) -> str:
    """The environment variable an export names for a key whose source it does not know."""
    import re

    return re.sub(r"[^A-Z0-9]+", "_", provider_name.upper()).strip("_") + "_API_KEY"


def _export(source: ExportSource) -> ExportedSpec:
    """Secrets are written as references, never values; for a row reconciler never managed the
    reference is unknown, so a ``from_env`` placeholder named after the provider is written."""
    essence = source.essence
    spec: dict[str, Any] = {"type": essence["type"]}
    if essence.get("base_url"):
        spec["base_url"] = essence["base_url"]
    notes: list[str] = []
    if essence.get("api_key") is not None:
        applied = (source.applied or {}).get("api_key")
        ref = applied.get("ref") if isinstance(applied, dict) else None
        if isinstance(ref, str) and ref.startswith("env:"):
            spec["api_key"] = {"from_env": ref[4:]}
        elif isinstance(ref, str) and ref.startswith("file:"):
            spec["api_key"] = {"from_file": ref[5:]}
            notes.append(f"api_key is read from {ref[5:]!r}, relative to this file: copy the secret file next to it (never into git)")
        else:
            var = placeholder_env(source.name)
            spec["api_key"] = {"from_env": var}
            notes.append(
                f"api_key: the database holds an encrypted key but not where it came from; {var} is a placeholder: "
                f"export {var} with the key (or point api_key at your secret) before planning"
            )
    if essence.get("model_path"):
        spec["model_path"] = essence["model_path"]
    if essence.get("rate_limit"):
        spec["rate_limit"] = essence["rate_limit"]
    return ExportedSpec(inactive_flag(essence, spec), tuple(notes))


def _list_rows(conn: Connection, managed: Mapping[str, str]) -> list[dict[str, Any]]:
    from sqlalchemy import select

    providers = PROVIDER.table
    fields = ("name", "type", "base_url")
    status = ("is_active", "validation_status", "validation_error", "validated_at")
    return [
        listing(r, fields, managed, api_key="(set, encrypted)" if r.api_key_encrypted else None, **{f: iso(getattr(r, f)) for f in status})
        for r in conn.execute(select(providers).order_by(providers.c.name))
    ]


PROVIDER = Kind(
    name=KindName.PROVIDER,
    table_name="llm_providers",
    make_table=_table,
    spec="ProviderSpec",
    essence=_essence,
    row_values=column_writer(("type", "base_url", "is_active")),
    read=_read,
    export=_export,
    sensitive=("api_key",),
    extra_fields=("model_path", "rate_limit"),
    secret_source=secret_source,
    secret_column="api_key_encrypted",
    validation_fields=("api_key", "type", "base_url"),
    create_defaults={"validation_status": "pending"},
    status_values={"validation_status": get_args(ValidationStatus)},
    get_columns=("name", "type", "base_url", "is_active", "validation_status", "validated_at", "validation_error", "managed"),
    list_rows=_list_rows,
)
