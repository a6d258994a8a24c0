"""reconciler.gitinfo.run_git: the one git subprocess (apply's commit record, --git-ref, watch's .git)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler.errors import ReconcilerError
from reconciler.gitinfo import describe_checkout, git_output, run_git
from reconciler.gitops.revisions import repo_root
from reconciler.gitops.watch import git_dir_of
from tests.gitops.helpers import GitRepo, config


def fake_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Put a ``git`` that runs ``script`` (sh) first on PATH, and nothing else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = bin_dir / "git"
    git.write_text(f"#!/bin/sh\n{script}\n")
    git.chmod(git.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_a_real_checkout_is_described(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    commit = repo.commit(config(), "Add the agents")
    manifests = str(repo.root / "manifests")
    assert describe_checkout([manifests]) == {
        "commit": commit, "dirty": False, "ref": "main", "author": "Ada Lovelace <ada@example.org>", "subject": "Add the agents",
    }
    (repo.root / "manifests" / "agents.yaml").write_text("changed: true\n")
    assert describe_checkout([manifests])["dirty"] is True  # type: ignore[index]
    assert git_dir_of(manifests) == (repo.root / ".git").resolve()
    assert repo_root(manifests) == repo.root.resolve()


def test_outside_git_is_no_record(tmp_path: Path) -> None:
    assert describe_checkout([str(tmp_path)]) is None
    assert git_dir_of(str(tmp_path)) is None
    assert run_git(tmp_path, "rev-parse", "HEAD").returncode != 0  # a failing command is not an exception


def test_missing_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git there
    with pytest.raises(ReconcilerError) as exc:
        run_git(tmp_path, "status")
    assert [(p.message, p.hint) for p in exc.value.problems] == [("git is not installed", "install git")]
    with pytest.raises(ReconcilerError) as exc:
        repo_root(str(tmp_path))
    assert exc.value.problems[0].hint == "install git to use --git-ref"
    assert git_output(tmp_path, "rev-parse", "HEAD") is None
    assert describe_checkout([str(tmp_path)]) is None and git_dir_of(str(tmp_path)) is None


def test_a_hanging_git_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_git(tmp_path, monkeypatch, "exec /bin/sleep 30")
    with pytest.raises(ReconcilerError) as exc:
        run_git(tmp_path, "fetch", "origin", timeout=0.3)
    assert str(exc.value) == f"error: git fetch origin timed out after 0.3 s in {tmp_path}"


def test_a_git_that_cannot_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_git(tmp_path, monkeypatch, "")
    (tmp_path / "bin" / "git").chmod(0o600)  # there, but not executable
    with pytest.raises(ReconcilerError) as exc:
        run_git(tmp_path, "status")
    assert exc.value.problems[0].message == f"git could not be started in {tmp_path}: Permission denied"
    assert git_output(tmp_path, "status") is None


def test_output_that_is_not_utf8_is_replaced_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_git(tmp_path, monkeypatch, r"printf 'Ren\351e <r@example.org>\n'")
    assert git_output(tmp_path, "log") == "Ren\ufffde <r@example.org>\n"
    assert run_git(tmp_path, "log", binary=True).stdout == b"Ren\xe9e <r@example.org>\n"
