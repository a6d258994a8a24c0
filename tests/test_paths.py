"""reconciler.paths.resolve_within: a referenced file stays inside the manifests' root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.paths import ALLOW_OUTSIDE_ROOT_ENV, FileRefError, resolve_within


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "schemas").mkdir(parents=True)
    (tmp_path / "root" / "schemas" / "s.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("sk-outside")
    (tmp_path / "root" / "link.txt").symlink_to(tmp_path / "secret.txt")
    return tmp_path / "root"


@pytest.mark.parametrize(
    ("relative", "must_exist", "resolved"),
    [("schemas/s.json", True, "schemas/s.json"), ("./schemas/../schemas/s.json", True, "schemas/s.json"), ("new.txt", False, "new.txt")],
    ids=["inside", "dot-segments-inside", "missing-but-not-needed"],
)
def test_inside_the_root(root: Path, relative: str, must_exist: bool, resolved: str) -> None:
    assert resolve_within(root, root / "m.yaml", relative, must_exist=must_exist) == (root / resolved).resolve()


@pytest.mark.parametrize(
    ("relative", "must_exist", "message"),
    [
        ("../secret.txt", True, "resolves outside the manifests root"),
        ("../secret.txt", False, "resolves outside the manifests root"),  # validate checks the place before the file exists
        ("link.txt", True, "resolves outside the manifests root"),  # a symlink out is followed, then refused
        ("/etc/passwd", True, "resolves outside the manifests root"),
        ("schemas/none.json", True, "does not exist"),
        ("schemas", True, "does not exist"),  # a directory is not a file
    ],
    ids=["dot-dot", "dot-dot-unchecked-file", "symlink-out", "absolute", "missing", "directory"],
)
def test_refused(root: Path, relative: str, must_exist: bool, message: str) -> None:
    with pytest.raises(FileRefError, match=message):
        resolve_within(root, root / "m.yaml", relative, must_exist=must_exist)


def test_outside_allowed_only_when_the_user_says_so(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_OUTSIDE_ROOT_ENV, "1")
    assert resolve_within(root, root / "m.yaml", "../secret.txt") == (root.parent / "secret.txt").resolve()


def test_too_large(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("reconciler.paths.MAX_REFERENCED_FILE_BYTES", 1)
    with pytest.raises(FileRefError, match="is larger than 1 bytes"):
        resolve_within(root, root / "m.yaml", "schemas/s.json")


def test_secret_references_no_longer_import_the_manifests_package() -> None:
    code = "import sys, reconciler.providers.secrets; print(sorted(m for m in sys.modules if m.startswith('reconciler.manifests')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"
