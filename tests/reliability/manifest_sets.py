"""Large generated manifest sets for the crash and concurrency scenarios."""

from __future__ import annotations

from pathlib import Path

import yaml


def _doc(kind: str, name: str, spec: dict[str, object], labels: dict[str, str] | None = None) -> dict[str, object]:
    metadata: dict[str, object] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "reconciler/v1", "kind": kind, "metadata": metadata, "spec": spec}


def manifest_set(size: int, variant: int) -> list[dict[str, object]]:
    """About ``size`` resources. Variants share half their names, so going from one to another
    updates, deletes and creates resources of every kind, all in one apply."""
    groups = max(size // 4, 1)
    offset = variant * groups // 2  # variant v covers [offset, offset + groups)
    docs = [_doc("Provider", f"p{i}", {"type": "openai", "base_url": f"http://127.0.0.1:{9000 + i}/v{variant}"}) for i in range(3)]
    for i in range(offset, offset + groups):
        task = f"t{i}"
        docs.append(
            _doc(
                "Task",
                task,
                {"description": f"task {i} v{variant}", "response_schema": {"type": "object", "properties": {"n": {"type": "integer", "maximum": i + variant}}}},
                {"set": str(variant)},
            )
        )
        agent = f"a{i}"
        docs.append(
            _doc(
                "Agent",
                agent,
                {"provider": f"p{i % 3}", "model_name": "m", "system_prompt": f"You are agent {i} of set {variant}.", "temperature": round((i + variant) % 20 / 10, 1), "max_tokens": 64 + variant},
            )
        )
        docs.append(_doc("Assignment", f"a{i}-t{i}", {"agent": agent, "task": task, "is_active": (i + variant) % 2 == 0}))
        j = (i + 1) if i + 1 < offset + groups else offset
        docs.append(_doc("Assignment", f"a{i}-t{j}", {"agent": agent, "task": f"t{j}"}))
    return docs


def write_set(root: Path, size: int, variant: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "all.yaml").write_text(yaml.safe_dump_all(manifest_set(size, variant), sort_keys=False, width=200), encoding="utf-8")
    return root
