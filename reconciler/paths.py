"""Paths that manifests point at (schemas, inputs, secret files), confined to the manifests' root.

A pull request must not be able to make CI read an arbitrary file, so every ``from_file`` and
``inputs_file`` path is resolved against the manifest and must stay inside the root directory
unless the user explicitly allows otherwise. A leaf module: the loader and the secret references
both use it, and neither imports the other's package for it.
"""

from __future__ import annotations

import os
from pathlib import Path

ALLOW_OUTSIDE_ROOT_ENV = "RECONCILER_ALLOW_FILES_OUTSIDE_ROOT"
MAX_REFERENCED_FILE_BYTES = 64 * 1024 * 1024


class FileRefError(Exception):
    """A referenced file is missing, outside the root, or malformed. ``line`` is 1-based when known."""

    def __init__(self, message: str, hint: str = "", line: int = 0) -> None:
        super().__init__(message)
        self.hint = hint
        self.line = line


def outside_root_allowed() -> bool:
    return os.environ.get(ALLOW_OUTSIDE_ROOT_ENV, "").lower() in {"1", "true", "yes"}


def resolve_within(root: Path, manifest_file: Path, relative: str, must_exist: bool = True) -> Path:
    """Resolve ``relative`` against the manifest's directory; refuse paths that leave ``root``."""
    target = (manifest_file.parent / relative).resolve()
    if not outside_root_allowed():
        root_resolved = root.resolve()
        if target != root_resolved and root_resolved not in target.parents:
            raise FileRefError(
                f"path {relative!r} resolves outside the manifests root {str(root)!r}",
                hint=f"keep referenced files under {root}, or set {ALLOW_OUTSIDE_ROOT_ENV}=1 if you trust these manifests",
            )
    if not must_exist:
        return target
    if not target.is_file():
        raise FileRefError(f"file {relative!r} does not exist (looked at {target})", hint="check the path; it is relative to the manifest file")
    if target.stat().st_size > MAX_REFERENCED_FILE_BYTES:
        raise FileRefError(f"file {relative!r} is larger than {MAX_REFERENCED_FILE_BYTES:,} bytes")
    return target
