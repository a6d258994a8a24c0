"""Which git commit the manifests come from, recorded with every apply (no git, no record)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def describe_checkout(paths: list[str]) -> dict[str, Any] | None:
    """Commit, dirtiness, author and subject of the checkout holding ``paths`` (None outside git)."""
    if not paths:
        return None
    first = Path(paths[0]).resolve()
    cwd = first if first.is_dir() else first.parent
    head = _git(cwd, "rev-parse", "HEAD")
    if head is None:
        return None
    status = _git(cwd, "status", "--porcelain", "--", *[str(Path(p).resolve()) for p in paths]) or ""
    log = (_git(cwd, "log", "-1", "--format=%an <%ae>%x00%s") or "\x00").rstrip("\n").split("\x00", 1)
    branch = (_git(cwd, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None
    return {
        "commit": head.strip(),
        "dirty": bool(status.strip()),
        "ref": branch[:255] if branch else None,  # VARCHAR(255) columns: a long branch name must not fail the apply
        "author": log[0][:255] or None,
        "subject": log[1] if len(log) > 1 else None,
    }
