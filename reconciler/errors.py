"""Errors are values with a location, so every message can say where, what and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: How a problem counts. ``error``: the command fails (exit 1) and changes nothing; ``warning``:
#: reported, the command goes on; ``summary``: the closing line after a list of errors ("nothing was
#: changed"), rendered as its bare message and not counted as an error itself.
Severity = Literal["error", "warning", "summary"]


@dataclass(frozen=True, order=True)
class Location:
    """A place in a manifest file (1-based line and column)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where, in which document, which field, what and a hint."""

    message: str
    location: Location | None = None
    document: str = ""  # e.g. 'Agent "triage"'
    field: str = ""  # dotted path, e.g. "spec.temperature"
    hint: str = ""
    severity: Severity = "error"

    def render(self) -> str:
        if self.severity == "summary":
            return self.message
        where = f"{self.location}: " if self.location else ""
        subject = " ".join(p for p in (self.document, self.field) if p)
        text = f"{where}{self.severity}: " + (f"{subject}: " if subject else "") + self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "file": self.location.file if self.location else None,
            "line": self.location.line if self.location else None,
            "column": self.location.column if self.location else None,
            "document": self.document,
            "field": self.field,
            "message": self.message,
            "hint": self.hint,
        }


def name_list(names: list[str] | set[str], shown: int = 10) -> str:
    """'a', 'b' and 3 more: a message stays readable when thousands of resources are involved."""
    ordered = sorted(names)
    text = ", ".join(repr(n) for n in ordered[:shown])
    return text + (f" and {len(ordered) - shown} more" if len(ordered) > shown else "")


def first_line(exc: BaseException) -> str:
    """An unexpected error's first line: a driver's reason without the statement and parameters after it."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ReconcilerError(Exception):
    """A user-facing failure: the CLI prints its problems and exits 1, never a traceback."""

    def __init__(self, problems: list[Problem] | Problem | str, hint: str = "") -> None:
        if isinstance(problems, str):
            problems = [Problem(problems, hint=hint)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(p.render() for p in self.problems))


class StateError(ReconcilerError):
    """The database cannot be reached, read or written."""


class LockTimeout(ReconcilerError):
    """Another apply holds the lock for longer than we are willing to wait."""


class StalePlan(ReconcilerError):
    """A saved plan no longer matches the database it was computed against."""


class GatesFailed(ReconcilerError):
    """An evaluated change failed a gate of its task's evaluation: `plan --evaluate` exits 1, apply
    and watch apply nothing (watch reports it once as ``gated``)."""


class RunAlreadyStarted(ReconcilerError):
    """A run that was to start from ``pending`` has been started by someone else (never twice)."""

    def __init__(self, problems: list[Problem] | Problem | str, hint: str = "", status: str = "running") -> None:
        super().__init__(problems, hint)
        self.status = status


@dataclass
class ProblemList:
    """Collects problems so validation can report all of them at once."""

    items: list[Problem] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        self.items.append(problem)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "warning"]
