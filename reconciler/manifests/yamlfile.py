"""Read YAML manifest files into plain documents that remember where every field came from.

Parsing itself (libyaml's nodes composed into data, bounded against hostile files) is in
``yamlparse``, imported only when a file has to be parsed: the loader first asks the parse cache
(``parsecache``), and a file it already holds needs no PyYAML at all.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import Location, Problem

MAX_FILE_BYTES = int(os.environ.get("RECONCILER_MAX_FILE_BYTES", 16 * 1024 * 1024))
MAX_DOCUMENTS_PER_FILE = int(os.environ.get("RECONCILER_MAX_DOCUMENTS", 20_000))
MAX_DEPTH = 64
MAX_NODES_PER_DOCUMENT = 200_000  # counts aliases each time they are expanded
# libyaml composes nodes by C recursion and crashes the process (SIGSEGV) between 20,000 and
# 40,000 levels with an 8 MiB stack, before MAX_DEPTH can be checked; documents that might nest
# deeper than this (a tenth of it, for smaller thread stacks) are first scanned event by event
# (libyaml's parser itself is iterative).
SAFE_COMPOSE_DEPTH = 2_000
# plain files are read by yaml_rs (see yamlfast), exactly as libyaml reads them; 0 reads all with libyaml
FAST_YAML = os.environ.get("RECONCILER_FAST_YAML", "1") != "0"

FieldPath = tuple[str | int, ...]

Mark = tuple[int, int]  # 0-based line and column, as libyaml reports them
NOT_PARSED: Any = type("NotParsed", (), {"__repr__": lambda self: "NOT_PARSED"})()


@dataclass(frozen=True)
class RawDocument:
    """One YAML document: its data, and where each field path inside it starts.

    Positions are needed only to report a problem, yet recording them for every field took half of
    the memory of a loaded manifest set and a fifth of the reading time. So each document keeps the
    text of its file (one string shared by all its documents) and positions are worked out from it
    on first use, for the whole file at once."""

    file: str
    index: int  # 0-based position of the document in its file
    parsed: Any  # the data, or NOT_PARSED: a document the parse cache gave (see ``data``)
    location: Location
    text: str = field(default="", repr=False, compare=False)  # the whole file, to find positions in

    @property
    def data(self) -> Any:
        """The document's data. A document from the parse cache (its models were stored, not its
        data) is parsed from the text on first use, like positions: only a problem needs it."""
        if self.parsed is not NOT_PARSED:
            return self.parsed
        from reconciler.manifests.yamlparse import _data_in

        return _data_in(self.text, self.file)[self.index]

    @property
    def marks(self) -> dict[FieldPath, Mark]:
        from reconciler.manifests.yamlparse import _marks_in

        per_document = _marks_in(self.text, self.file)
        return per_document[self.index] if self.index < len(per_document) else {}

    @property
    def positions(self) -> dict[FieldPath, Location]:
        return {path: self._location(mark) for path, mark in self.marks.items()}

    def _location(self, mark: Mark) -> Location:
        return Location(self.file, mark[0] + 1, mark[1] + 1)

    def where(self, path: FieldPath) -> Location:
        """The closest known location for a field path (falls back to its parents)."""
        marks = self.marks
        while path:
            mark = marks.get(path)
            if mark is not None:
                return self._location(mark)
            path = path[:-1]
        return self.location


def read_text(path: Path, display: str) -> tuple[bytes, str] | list[Problem]:
    """The file's bytes and text, or the problems that stop it being read."""
    loc = Location(display)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return [
                Problem(
                    f"file is {size:,} bytes, larger than the limit of {MAX_FILE_BYTES:,} bytes",
                    loc,
                    hint="split it into several files, or raise RECONCILER_MAX_FILE_BYTES",
                )
            ]
        data = path.read_bytes()
    except OSError as exc:
        return [Problem(f"cannot read file: {exc.strerror or exc}", loc)]
    if b"\x00" in data[:8192]:
        return [Problem("file is binary, not YAML text", loc, hint="remove it or rename it to a non-.yaml name")]
    try:
        return data, data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return [Problem(f"file is not valid UTF-8 text (byte {exc.start})", Location(display, line, 1))]


def _document_markers(text: str) -> list[int]:
    """Where a line starts with '---' or '...' followed by a space, a line break or the end (what
    ``re.compile(r"^(?:---|\\.\\.\\.)(?=[ \\t\\r\\n]|$)", re.MULTILINE).finditer`` finds, found with
    ``str.find``: the regular expression tried every position of the text, 0.03 s for 10,000 documents)."""
    found = []
    end = len(text)
    for marker in ("---", "..."):
        i = text.find(marker)
        while i != -1:
            if (i == 0 or text[i - 1] == "\n") and (i + 3 == end or text[i + 3] in " \t\r\n"):
                found.append(i)
            i = text.find(marker, i + 1)
    return sorted(found)


_ASCII_INDICATORS = tuple(c + b for c in "-?" for b in " \t\r\n")
_ALL_INDICATORS = tuple(c + b for c in "-?" for b in " \t\r\n\x85\u2028\u2029")
_DEEP_INDENT = " " * (SAFE_COMPOSE_DEPTH // 2)


def _levels_opened(chunk: str, indicators: tuple[str, ...]) -> int:
    """Levels a document can open besides indenting: block indicators ('- ', '? ') and flow
    brackets (a flow pair can add a mapping level inside a bracket, hence the factor 2)."""
    flow = chunk.count("[") + chunk.count("{")
    return 2 * flow + sum(chunk.count(i) for i in indicators) + chunk.endswith(("-", "?"))


def may_nest_deeply(text: str) -> bool:
    """Cheap, conservative: could some document in ``text`` nest deeper than SAFE_COMPOSE_DEPTH?

    Every level costs at least one character, so a document shorter than half the safe depth is
    safe whatever it holds; only longer documents have their level-opening characters counted."""
    if text.startswith(_DEEP_INDENT) or any(b + _DEEP_INDENT in text for b in "\n\r\x85\u2028\u2029"):
        return True
    short = SAFE_COMPOSE_DEPTH // 2
    if len(text) <= short:
        return False
    bounds = [0, *_document_markers(text), len(text)]
    long_documents = [(a, b) for a, b in itertools.pairwise(bounds) if b - a > short]
    if not long_documents:
        return False
    budget = SAFE_COMPOSE_DEPTH - len(_DEEP_INDENT) - 1
    indicators = _ASCII_INDICATORS if text.isascii() else _ALL_INDICATORS
    return any(_levels_opened(text[a:b], indicators) > budget for a, b in long_documents)


def parse_text(text: str, display: str) -> tuple[list[RawDocument], list[Problem]]:
    """Every document in a file's text; empty documents are skipped with a warning."""
    if FAST_YAML:
        from reconciler.manifests.yamlfast import parse_plain

        plain = parse_plain(text, display)
        if plain is not None:
            return [RawDocument(display, index, data, location, text) for index, (data, location) in enumerate(plain)], []
    from reconciler.manifests.yamlparse import _parse, _too_deep

    problems: list[Problem] = []
    if may_nest_deeply(text):
        deep = _too_deep(text, display)
        if deep is not None:
            return [], [deep]
    documents = [RawDocument(display, index, data, location, text) for index, data, location, _ in _parse(text, display, problems, False)]
    return documents, problems


def read_yaml_file(path: Path, display: str | None = None) -> tuple[list[RawDocument], list[Problem]]:
    """Parse every document in a YAML file; empty documents are skipped with a warning."""
    display = display or str(path)
    read = read_text(path, display)
    if isinstance(read, list):
        return [], read
    return parse_text(read[1], display)


def source_stamps(paths: list[Path]) -> list[str]:
    """Size and modification time of each file: what tells an edited or reinstalled file apart."""
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            out.append(f"{p}:missing")
            continue
        out.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
    return out


def installed_package_files(*packages: str) -> list[Path]:
    """Each package's ``__init__`` and its directory (which changes when the package is
    reinstalled), found without importing it."""
    import importlib.util

    out = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec is not None and spec.origin else Path(f"<{name} not installed>")
        out += [origin, origin.parent]
    return out


def parser_salt() -> list[str]:
    """Everything besides a file's bytes that decides what parsing it gives, for the parse cache's
    key: the parser's code (this module, ``yamlparse`` and ``yamlfast``: an edited checkout keeps its
    version number), PyYAML's and yaml_rs's installations and the limits a parse is checked against."""
    here = Path(__file__).resolve()
    stamps = [here, here.with_name("yamlparse.py"), here.with_name("yamlfast.py"), *installed_package_files("yaml", "yaml_rs")]
    limits = f"documents={MAX_DOCUMENTS_PER_FILE} depth={MAX_DEPTH} nodes={MAX_NODES_PER_DOCUMENT} compose={SAFE_COMPOSE_DEPTH}"
    return [limits, *source_stamps(stamps)]


def find_manifest_files(paths: list[str]) -> tuple[list[tuple[Path, str]], list[Problem]]:
    """Expand files and directories (recursively) into ``*.yaml``/``*.yml`` files, sorted."""
    found: list[tuple[Path, str]] = []
    problems: list[Problem] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            problems.append(Problem("no such file or directory", Location(raw), hint="check the path"))
        elif p.is_dir():
            files = sorted(
                f
                for pattern in ("*.yaml", "*.yml")
                for f in p.rglob(pattern)
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not files:
                problems.append(Problem("directory contains no manifests (*.yaml, *.yml)", Location(raw), hint="point at the manifests directory"))
            found.extend((f, str(f)) for f in files)
        else:
            found.append((p, raw))
    seen: set[Path] = set()
    unique = []
    for path, display in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, display))
    return unique, problems
