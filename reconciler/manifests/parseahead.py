"""Parse the files the parse cache does not hold on the second core, while this process parses the others.

A first apply of 10,000 resources spends about half its time composing YAML and validating it,
one file after another, on one core of two. When the cache misses at least ``MIN_BYTES`` of files
and the other core is idle, a forked child parses and validates the last files (about half the
lines) and stores them in the parse cache, exactly as this process would; this process parses
the first ones meanwhile, waits for the child, then reads the child's files from the cache
(reading an entry is several times faster than parsing). What both would set up first (the
YAML modules, the validators of the kinds both start with) is set up once, before the fork
(``_prepare``). So the result, problems and their
order are those of a serial read: a file the child could not store (it has a problem, the child
died) is a miss, and this process parses it itself and reports what it finds.

Written here with ``os.fork`` rather than ``concurrent.futures``: a pool would start a fresh
interpreter (imports cost more than the parse saved at 1,000 resources) or pickle the parsed
manifests back (unpickling 5,000 of them took as long as parsing them); the cache already is the
way parsed files travel between processes.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.manifests.parsecache import ParseCache

ENV = "RECONCILER_PARSE_PROCESSES"  # "1": never fork; "2": fork whenever two files miss; unset: when a core is idle now
MIN_BYTES = 1 << 20  # below this the fork and reading the entries back cost more than they save


@dataclass
class Ahead:
    """A child parsing ``found[first:]`` into the cache."""

    pid: int
    first: int
    done: bool = False

    def wait(self) -> None:
        """Until the child has ended (whatever became of it: a file it did not store is parsed here)."""
        if not self.done:
            self.done = True
            os.waitpid(self.pid, 0)


def _wanted(miss_bytes: int, misses: int) -> bool:
    setting = os.environ.get(ENV, "").strip()
    if setting == "1" or misses < 2:
        return False
    if setting == "2":
        return True
    return miss_bytes >= MIN_BYTES and _core_free()


def _core_free() -> bool:
    """Whether a core is idle now (on a busy machine the child only competes with this process for
    the same core): Linux's count of tasks running or ready to run (``/proc/loadavg``'s fourth field,
    this process included) below the cores; elsewhere the 1-minute load below cores - 1. That
    average lags: for a minute after a busy one it calls an idle machine busy."""
    cores = os.cpu_count() or 1
    if cores < 2:
        return False
    runnable = _runnable()
    return runnable < cores if runnable is not None else os.getloadavg()[0] < cores - 1


def _runnable() -> int | None:
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return int(fh.read().split()[3].partition("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def parse_ahead(found: list[tuple[Path, str]], cache: ParseCache, parse: Callable[[Path, str], None]) -> Ahead | None:
    """Fork a child that runs ``parse`` (which stores a file's manifests in ``cache``) on the last
    of the files of ``found`` that ``cache`` misses, about half their lines; None when not worth it."""
    if not hasattr(os, "fork") or threading.active_count() > 1:  # forking a process with threads is unsafe
        return None
    # every file a miss is the most there can be: when even that is not worth a fork (turned off, a
    # busy machine, a small set), no file is read and hashed here on top of the read that follows
    try:
        if not _wanted(sum(path.stat().st_size for path, _ in found), len(found)):
            return None
    except OSError:
        pass  # reported when the file is read for real
    misses: list[tuple[int, int, int]] = []  # (index in found, size, lines)
    first_kinds: dict[int, str] = {}  # index in found -> the kind of a missed file's first document
    for i, (path, _) in enumerate(found):
        try:
            content = path.read_bytes()
        except OSError:
            continue  # reported when the file is read for real
        if not cache.has(cache.key(content, path)):
            misses.append((i, len(content), content.count(b"\n") + 1))
            first_kinds[i] = _first_kind(content)
    if not _wanted(sum(size for _, size, _ in misses), len(misses)):
        return None
    # the work is about proportional to the lines (a YAML node each, roughly): 3-5 us a line for
    # every kind, where per byte a file of assignments costs four times a file of agents
    half = sum(lines for _, _, lines in misses) / 2
    child_lines, first = 0, len(found)
    for i, _, lines in reversed(misses[1:]):  # this process keeps at least the first miss
        if child_lines + lines / 2 > half:
            break
        child_lines, first = child_lines + lines, i
    _prepare({k for i, k in first_kinds.items() if i < first} & {k for i, k in first_kinds.items() if i >= first})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (its work is checked through the cache it fills)
        code = 1
        try:
            for path, display in found[first:]:
                parse(path, display)
            code = 0
        finally:
            os._exit(code)  # no exit handlers, no flushing of the parent's buffered output
    return Ahead(pid, first)


def _first_kind(content: bytes) -> str:
    """The ``kind:`` of the first document in a file's bytes (at the start of a line), "" if none is found."""
    if content.startswith(b"kind:"):
        at = 0
    else:
        at = content.find(b"\nkind:") + 1
        if at == 0:
            return ""
    end = content.find(b"\n", at)
    return content[at + 5 : end if end >= 0 else len(content)].strip().strip(b"\"'").decode("ascii", "replace")


def _prepare(shared_kinds: set[str]) -> None:
    """Before the fork, what both processes would set up after it, so that it is done once: the
    YAML reader's modules (~20 ms), and the validators of the kinds that start files of both
    (pydantic builds a model's validator on its first use; the first one also imports
    importlib.metadata and looks up pydantic's plugins, ~25 ms). What only one of them needs is
    left to it: done here it would delay the child. A kind found only further down a file, or
    named wrongly, is set up by whichever process meets it, as before."""
    from reconciler.manifests import yamlfile
    from reconciler.manifests.models import MANIFEST_MODELS

    importlib.import_module("reconciler.manifests.yamlfast" if yamlfile.FAST_YAML else "reconciler.manifests.yamlparse")
    for kind in sorted(shared_kinds):
        model = MANIFEST_MODELS.get(kind)
        if model is not None:
            model.model_rebuild(raise_errors=False)  # what the first model_validate does (the same core schema; a failure is left to it)
