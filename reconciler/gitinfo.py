"""Which git commit the manifests come from, recorded with every apply (no git, no record)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcilerError


def run_git(cwd: Path, *args: str, binary: bool = False, timeout: float = 10.0, hint: str = "install git") -> subprocess.CompletedProcess[Any]:
    """``git -C cwd ARGS``: the one place reconciler runs git.

    A missing git, one that cannot start or one that outlives ``timeout`` is a ReconcilerError; a
    command that fails is not (the caller reads ``returncode`` and ``stderr``). Never reads the
    terminal, so a credential prompt cannot hang ``watch``; undecodable output is replaced, not fatal.
    """
    command = ["git", "-C", str(cwd), *args]
    try:
        if binary:
            return subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        return subprocess.run(
            command, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False, encoding="utf-8", errors="replace"
        )
    except FileNotFoundError:
        raise ReconcilerError("git is not installed", hint=hint) from None
    except subprocess.TimeoutExpired:
        raise ReconcilerError(f"git {' '.join(args[:2])} timed out after {timeout:g} s in {cwd}") from None
    except OSError as exc:
        raise ReconcilerError(f"git could not be started in {cwd}: {exc.strerror or exc}", hint=hint) from None


def git_output(cwd: Path, *args: str) -> str | None:
    """The output of a git command that succeeded, else None: for what is only recorded when known."""
    try:
        out = run_git(cwd, *args)
    except ReconcilerError:
        return None
    return out.stdout if out.returncode == 0 else None


def describe_checkout(paths: list[str]) -> dict[str, Any] | None:
    """Commit, dirtiness, author and subject of the checkout holding ``paths`` (None outside git)."""
    if not paths:
        return None
    first = Path(paths[0]).resolve()
    cwd = first if first.is_dir() else first.parent
    head = git_output(cwd, "rev-parse", "HEAD")
    if head is None:
        return None
    status_out, log_out, branch_out = _git_outputs(
        cwd,
        ("status", "--porcelain", "--", *[str(Path(p).resolve()) for p in paths]),
        ("log", "-1", "--format=%an <%ae>%x00%s"),
        ("rev-parse", "--abbrev-ref", "HEAD"),
    )
    status = status_out or ""
    log = (log_out or "\x00").rstrip("\n").split("\x00", 1)
    branch = (branch_out or "").strip() or None
    return {
        "commit": head.strip(),
        "dirty": bool(status.strip()),
        "ref": branch[:255] if branch else None,  # VARCHAR(255) columns: a long branch name must not fail the apply
        "author": log[0][:255] or None,
        "subject": log[1] if len(log) > 1 else None,
    }


def _git_outputs(cwd: Path, *commands: tuple[str, ...]) -> list[str | None]:
    """``git_output`` of each command, all at once: each thread only waits on its own git process,
    so every plan in a checkout waits for one git start-up instead of three in a row (about 4 ms)."""
    results: list[str | None] = [None] * len(commands)

    def run(index: int, args: tuple[str, ...]) -> None:
        results[index] = git_output(cwd, *args)

    threads = [threading.Thread(target=run, args=(i, args), daemon=True) for i, args in enumerate(commands)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
