"""Manifests as of a git commit, read without checking it out or touching the working tree.

``git archive`` writes the commit's files under the requested paths into a temporary directory;
every message and plan then names files by their path in the repository, not the temporary copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import Location, Problem, ReconcilerError
from reconciler.gitinfo import describe_checkout, run_git
from reconciler.plan.model import Plan

if TYPE_CHECKING:
    import subprocess


@dataclass(frozen=True)
class ManifestSource:
    """Where to read manifests from (``paths``) and how to name them to people (``display``)."""

    paths: list[str]
    display: list[str]
    git: dict[str, Any] | None
    tmp_prefix: str | None = None

    def shown(self, text: str) -> str:
        return text.replace(self.tmp_prefix, "") if self.tmp_prefix and text else text

    def relocate_problem(self, p: Problem) -> Problem:
        loc = p.location
        if loc is not None:
            loc = Location(self.shown(loc.file), loc.line, loc.column)
        return replace(p, location=loc, message=self.shown(p.message), hint=self.shown(p.hint))

    def relocate_plan(self, plan: Plan) -> Plan:
        if not self.tmp_prefix:
            return plan
        changes = tuple(replace(c, source=self.shown(c.source or "") or None) for c in plan.changes)
        return replace(plan, changes=changes, sources=tuple(self.display))


def _git(repo: Path, *args: str, binary: bool = False) -> subprocess.CompletedProcess[Any]:
    return run_git(repo, *args, binary=binary, timeout=120, hint="install git to use --git-ref")


def _err_text(out: subprocess.CompletedProcess[Any]) -> str:
    err = out.stderr.decode(errors="replace") if isinstance(out.stderr, bytes) else out.stderr
    return (err.strip().splitlines() or [""])[-1].removeprefix("fatal: ")


def repo_root(repo: str | None) -> Path:
    start = Path(repo or ".")
    if not start.is_dir():
        raise ReconcilerError(f"--repo {repo}: no such directory")
    out = _git(start, "rev-parse", "--show-toplevel")
    if out.returncode != 0:
        raise ReconcilerError(f"{start.resolve()} is not inside a git repository", hint="pass --repo PATH to the repository")
    return Path(out.stdout.strip())


def resolve_commit(root: Path, ref: str) -> dict[str, Any]:
    """Commit, author and subject of ``ref``; a clear error when it does not exist."""
    out = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if out.returncode != 0 or not ref or ref.startswith("-"):
        raise ReconcilerError(
            f"git ref {ref!r} does not exist in {root}",
            hint="use a branch, tag or commit that exists (git log --oneline); fetch it first if it is remote",
        )
    commit = out.stdout.strip()
    log = _git(root, "log", "-1", "--format=%an <%ae>%x00%s", commit).stdout.rstrip("\n").split("\x00", 1)
    return {"commit": commit, "dirty": False, "ref": ref, "author": log[0] or None, "subject": log[1] if len(log) > 1 else None}


def _in_repo(root: Path, path: str) -> str:
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(root.resolve())
        except ValueError:
            raise ReconcilerError(f"{path} is outside the repository {root}", hint="with --git-ref, PATH is a path inside the repository") from None
    text = p.as_posix().strip("/")
    return text or "."


@contextlib.contextmanager
def manifests_at(paths: list[str], git_ref: str, repo: str | None) -> Iterator[ManifestSource]:
    """Extract ``paths`` (relative to the repository root) as of ``git_ref`` into a temporary directory."""
    import io  # only --git-ref needs these: not imported by every plan
    import tarfile
    import tempfile

    root = repo_root(repo)
    git = resolve_commit(root, git_ref)
    inside = [_in_repo(root, p) for p in paths]
    with tempfile.TemporaryDirectory(prefix="reconciler-ref-") as tmp:
        base = Path(tmp).resolve()
        for path in inside:
            out = _git(root, "archive", "--format=tar", git["commit"], "--", path, binary=True)
            if out.returncode != 0:
                raise ReconcilerError(
                    Problem(
                        f"does not exist at {git_ref} ({git['commit'][:10]}): {_err_text(out)}",
                        Location(path),
                        hint="check the path; with --git-ref it is relative to the repository root",
                    )
                )
            with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
                tar.extractall(base, filter="data")
        source = ManifestSource([str(base / p) for p in inside], inside, git, str(base) + "/")
        try:
            yield source
        except ReconcilerError as exc:
            raise type(exc)([source.relocate_problem(p) for p in exc.problems]) from None


@contextlib.contextmanager
def manifest_source(paths: list[str], git_ref: str | None, repo: str | None) -> Iterator[ManifestSource]:
    """The working tree as given, or the repository as of ``git_ref``."""
    if git_ref is None:
        if repo is not None:
            raise ReconcilerError("--repo only makes sense with --git-ref", hint="add --git-ref REF, or drop --repo")
        yield ManifestSource(list(paths), list(paths), describe_checkout(list(paths)))
        return
    with manifests_at(paths, git_ref, repo) as source:
        yield source
