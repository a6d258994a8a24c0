"""Load manifests from files, check each document against its kind, then check them together.

Every problem is collected so ``validate`` can report all of them at once; the result is either a
``ManifestSet`` or a ``ReconcilerError`` listing every problem with its location.
"""

from __future__ import annotations

import difflib
import functools
import operator
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import Location, Problem, ProblemList, ReconcilerError
from reconciler.kinds import BY_NAME, KIND_NAMES, Kind
from reconciler.kinds.base import API_VERSION, plain_dump, record_class
from reconciler.kinds.expected import expected_fields, expected_problem
from reconciler.manifests import files, modelcodec
from reconciler.manifests.parsecache import ParseCache, open_cache
from reconciler.manifests.yamlfile import (
    NOT_PARSED,
    FieldPath,
    RawDocument,
    find_manifest_files,
    installed_package_files,
    parse_text,
    parser_salt,
    read_text,
    source_stamps,
)
from reconciler.records import frozen_from

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

    from reconciler.manifests.parseahead import Ahead

ResourceKey = tuple[str, str]  # (kind, name)


@dataclass(frozen=True)
class Manifest:
    """One validated document. ``resolved`` holds values read from referenced files."""

    kind: str
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: Any  # the kind's spec, a kinds.base.Record of its model (kinds.specs)
    raw: RawDocument = field(repr=False)
    root: Path = field(repr=False)
    resolved: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> ResourceKey:
        return (self.kind, self.name)

    @property
    def location(self) -> Location:
        return self.raw.location

    @property
    def title(self) -> str:
        return f'{self.kind} "{self.name}"'


@dataclass(frozen=True)
class ManifestSet:
    manifests: tuple[Manifest, ...]
    warnings: tuple[Problem, ...] = ()
    files: tuple[str, ...] = ()

    def of_kind(self, kind: str) -> list[Manifest]:
        return list(self._kinds.get(kind, ()))

    @functools.cached_property
    def _kinds(self) -> dict[str, list[Manifest]]:
        """The manifests of each kind, in order, found once (a plan asks for the providers three times)."""
        out: dict[str, list[Manifest]] = defaultdict(list)
        for m in self.manifests:
            out[m.kind].append(m)
        return dict(out)

    def by_key(self) -> dict[ResourceKey, Manifest]:
        return {m.key: m for m in self.manifests}


_FROM_ENVIRONMENT: Any = object()


class ParsedFiles:
    """The manifests of the files one ``load_manifests`` call read without a problem, kept in memory
    for the next call (``watch`` reloads every file on each change): a file whose bytes, path and
    root are the same is neither read from the parse cache nor decoded again. Only the files of the
    latest call are kept; the files the manifests refer to are read again every time."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str, Path], list[Manifest]] = {}
        self._next: dict[tuple[str, str, Path], list[Manifest]] = {}
        self.hits = 0

    def get(self, key: tuple[str, str, Path]) -> list[Manifest] | None:
        found = self._kept.get(key)
        if found is not None:
            self.hits += 1
            self._next[key] = found
        return found

    def keep(self, key: tuple[str, str, Path], manifests: list[Manifest]) -> None:
        self._next[key] = manifests

    def finish(self) -> None:
        """End of a call: what it did not read is forgotten."""
        self._kept, self._next = self._next, {}


def load_manifests(
    paths: list[str], *, external_refs: bool = False, cache: ParseCache | None = _FROM_ENVIRONMENT, parsed: ParsedFiles | None = None
) -> ManifestSet:
    """Read, parse and validate manifests under ``paths``; raise ReconcilerError listing all problems.
    ``external_refs``: references may name resources that exist only in the database (``run FILE``).
    ``cache``: where files parsed and validated before are found again (default: the directory
    ``parsecache`` takes from the environment; None: parse and validate every file). ``parsed``:
    the files an earlier call read, kept in memory (used only with a cache)."""
    if cache is _FROM_ENVIRONMENT:
        cache = open_cache(cache_salt())
    problems = ProblemList()
    found, path_problems = find_manifest_files(paths)
    for p in path_problems:
        problems.add(p)
    roots = _roots_for(paths)
    manifests: list[Manifest] = []
    declared: set[ResourceKey] = set()  # invalid documents still define their name: no cascade of errors
    ahead = _parse_ahead(found, roots, cache) if cache is not None and parsed is None else None
    try:
        for i, (path, display) in enumerate(found):
            if ahead is not None and i == ahead.first:
                ahead.wait()  # its files are in the cache now, or parsed here below
            _load_file(path, display, _root_of(path, roots), cache, parsed, problems=problems, manifests=manifests, declared=declared)
    finally:
        if ahead is not None:
            ahead.wait()
    if parsed is not None:
        parsed.finish()
    if not found and not path_problems:
        problems.add(Problem("no manifest files given", hint="pass a directory or *.yaml files"))
    _check_together(manifests, declared, problems, external_refs)
    if problems.errors:
        raise ReconcilerError(sorted(problems.items, key=_problem_order))
    return ManifestSet(tuple(manifests), tuple(problems.warnings), tuple(d for _, d in found))


def _parse_ahead(found: list[tuple[Path, str]], roots: list[Path], cache: ParseCache) -> Ahead | None:
    """A child parsing the last files the cache misses into it, on the other core (``parseahead``)."""
    from reconciler.manifests.parseahead import parse_ahead

    def parse(path: Path, display: str) -> None:  # in the child: what it finds is stored or dropped
        _load_file(path, display, _root_of(path, roots), cache, None, problems=ProblemList(), manifests=[], declared=set())

    return parse_ahead(found, cache, parse)


def cache_salt() -> bytes:
    """What the parse cache's keys depend on besides a file's bytes: reconciler's version, the
    parser (``yamlfile.parser_salt``), and what validation depends on: the manifest models' code
    (``kinds/``, ``models``, this module, ``modelcodec``, the schema check), and pydantic's and the
    JSON Schema checkers' installations (found without importing them: a hit needs no pydantic)."""
    import reconciler

    here = Path(__file__).resolve().parent
    code = [here / f for f in ("loader.py", "models.py", "modelcodec.py", "jsonschema_check.py")]
    code += [*sorted((here.parent / "kinds").glob("*.py")), *installed_package_files("pydantic", "pydantic_core", "jsonschema_rs", "jsonschema")]
    parts = [reconciler.__version__, *parser_salt(), *source_stamps(code)]
    return "\0".join(parts).encode(errors="surrogateescape")


def _load_file(
    path: Path,
    display: str,
    root: Path,
    cache: ParseCache | None,
    parsed: ParsedFiles | None,
    *,
    problems: ProblemList,
    manifests: list[Manifest],
    declared: set[ResourceKey],
) -> None:
    """One file's manifests: from the cache when it holds these bytes, else parsed and validated
    (and stored, when every document was valid and nothing was reported)."""
    read = read_text(path, display)
    if isinstance(read, list):
        for p in read:
            problems.add(p)
        return
    content, text = read
    key = cache.key(content, path) if cache is not None else ""
    if cache is not None:
        memo_key = (key, display, root)
        cached = parsed.get(memo_key) if parsed is not None else None
        if cached is None:
            cached = cache.load(key, lambda entry: _cached_manifests(entry, display, text, root))
        if cached is not None:
            before = len(problems.items)
            for m in cached:
                _resolve_files(m, path, problems, cached=True)
                manifests.append(m)
            if parsed is not None and len(problems.items) == before:
                parsed.keep(memo_key, cached)
            return
    documents, parse_problems = parse_text(text, display)
    before = len(problems.items)
    for p in parse_problems:
        problems.add(p)
    entry: list[Any] | None = []
    for doc in documents:
        envelope = _validate_document(doc, problems)
        if envelope is None:
            declared.add(_declared_key(doc.data))
            entry = None
            continue
        m = _manifest(envelope, doc, root)
        _resolve_files(m, path, problems)
        manifests.append(m)
        if entry is not None:
            try:
                entry.append(_cache_item(m))
            except modelcodec.Uncacheable:
                entry = None
    # only a file without any problem: a literal secret (refused by validation) is never stored
    if cache is not None and entry is not None and len(problems.items) == before:
        cache.store(key, entry)
        if parsed is not None:
            parsed.keep((key, display, root), manifests[len(manifests) - len(entry) :])


def _cache_item(m: Manifest) -> list[Any]:
    """What the cache keeps of a manifest: [index, line, column, kind, name, labels, annotations, spec]
    (labels and annotations are validated as text to text)."""
    loc = m.raw.location
    return [m.raw.index, loc.line, loc.column, m.kind, m.name, m.labels, m.annotations, modelcodec.encode(m.spec)]


def _cached_manifests(entry: Any, display: str, text: str, root: Path) -> list[Manifest] | None:
    """The manifests of a cache entry (files they refer to not read yet); None if it is malformed."""
    if entry.__class__ is not list:
        return None
    out = []
    try:
        for index, line, column, kind, name, labels, annotations, spec in entry:
            if not (index.__class__ is line.__class__ is column.__class__ is int) or kind not in BY_NAME:
                return None
            if not (name.__class__ is str and labels.__class__ is dict and annotations.__class__ is dict):
                return None
            record = modelcodec.decode(spec)
            if record.model != BY_NAME[kind].spec:
                return None
            where = frozen_from(Location, {"file": display, "line": line, "column": column})
            doc = frozen_from(RawDocument, {"file": display, "index": index, "parsed": NOT_PARSED, "location": where, "text": text})
            out.append(_manifest_of(kind, name, labels, annotations, record, doc, root))
    except (TypeError, ValueError):
        return None
    return out


def _problem_order(p: Problem) -> tuple[str, int, int]:
    loc = p.location
    return (loc.file, loc.line, loc.column) if loc else ("", 0, 0)


def _roots_for(paths: list[str]) -> list[Path]:
    return [(p if p.is_dir() else p.parent).resolve() for p in map(Path, paths) if p.exists()]


def _root_of(path: Path, roots: list[Path]) -> Path:
    resolved = path.resolve()
    candidates = [r for r in roots if r == resolved.parent or r in resolved.parents]
    return max(candidates, key=lambda r: len(r.parts)) if candidates else resolved.parent


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[FieldPath, str | None]:
    """Map a pydantic error location onto the document's data, dropping union/model tags."""
    path: list[str | int] = []
    current = data
    missing: str | None = None
    for part in loc:
        if isinstance(current, dict) and part in current:
            path.append(part)
            current = current[part]
            missing = None  # what looked absent was a union's tag
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path.append(part)
            current = current[part]
            missing = None
        elif isinstance(part, str) and isinstance(current, dict) and part.isidentifier():
            missing = part  # a field that is absent (missing) or that the model does not know
    return tuple(path), missing


def _field_names(model: type[BaseModel], path: FieldPath) -> list[str]:
    """The fields a model allows at ``path`` (used to suggest a fix for an unknown field)."""
    from pydantic import BaseModel

    current: Any = model
    for part in path[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(part)
        if info is None:
            return []
        current = info.annotation
        args = [a for a in getattr(current, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        if args:
            current = args[0]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


_HINTS = {
    "literal_secret": "write it as a reference: api_key: {from_env: OPENAI_API_KEY} or api_key: {from_file: secrets/openai.key}",
    "string_pattern_mismatch": "names use lowercase letters, digits and '-', e.g. message-classifier",
}


def _problems_from_validation(doc: RawDocument, model: type[BaseModel], title: str, exc: ValidationError) -> list[Problem]:
    out: list[Problem] = []
    seen: set[tuple[FieldPath, str | None]] = set()
    for err in exc.errors(include_url=False):
        path, missing = _data_path(doc.data, err["loc"])
        etype = err["type"]
        if etype in {"missing", "extra_forbidden"} and missing is not None:
            full = (*path, missing)
        else:
            full = path
        key = (full, None if etype.startswith(("union", "model_type", "dict_type", "string_type", "list_type")) else etype)
        if key in seen or (full, None) in seen:
            continue
        seen.add(key)
        dotted = ".".join(str(p) for p in full)
        hint = _HINTS.get(etype, "")
        sensitive = "api_key" in full
        if etype == "missing":
            message = "missing required field"
        elif etype == "extra_forbidden":
            allowed = _field_names(model, full)
            message = "unknown field"
            close = difflib.get_close_matches(str(full[-1]), allowed, n=1)
            hint = (f"did you mean {close[0]!r}? " if close else "") + (f"allowed fields: {', '.join(allowed)}" if allowed else "")
        else:
            msg = err["msg"]
            msg = msg[0].lower() + msg[1:] if msg else msg
            shown = err.get("input")
            plain = sensitive or isinstance(shown, (dict, list)) or etype in {"literal_secret", "secret_ref_shape"}
            message = msg if plain else f"found {_short(shown)}; {msg}"
        where = doc.where(full) if etype != "missing" else doc.where(path)
        out.append(Problem(message, where, title, dotted, hint))
    return out


@functools.cache
def _validation() -> tuple[dict[str, type[BaseModel]], type[ValidationError]]:
    """The envelope models and pydantic's error: imported for the first document the parse cache
    does not hold (once: ``from pydantic import`` goes through pydantic's lazy ``__getattr__``)."""
    from pydantic import ValidationError

    from reconciler.manifests.models import MANIFEST_MODELS

    return dict(MANIFEST_MODELS), ValidationError


def _validate_document(doc: RawDocument, problems: ProblemList) -> BaseModel | None:
    """The document as its kind's envelope model, or None (its problems reported)."""
    data = doc.data
    if not isinstance(data, dict):
        problems.add(Problem(f"a manifest must be a mapping with apiVersion, kind, metadata and spec; found {type(data).__name__}", doc.location))
        return None
    kind = data.get("kind")
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    title = f'{kind} "{name}"' if isinstance(kind, str) and isinstance(name, str) else (str(kind) if isinstance(kind, str) else "document")
    if data.get("apiVersion") != API_VERSION:
        found = data.get("apiVersion")
        problems.add(
            Problem(
                "missing apiVersion" if found is None else f"unknown apiVersion {_short(found)}",
                doc.where(("apiVersion",)),
                title,
                "apiVersion",
                f"use apiVersion: {API_VERSION}",
            )
        )
        return None
    if kind not in KIND_NAMES:
        close = difflib.get_close_matches(str(kind), KIND_NAMES, n=1)
        problems.add(
            Problem(
                "missing kind" if kind is None else f"unknown kind {_short(kind)}",
                doc.where(("kind",)),
                "document",
                "kind",
                (f"did you mean {close[0]!r}? " if close else "") + f"kinds: {', '.join(KIND_NAMES)}",
            )
        )
        return None
    models, validation_error = _validation()
    model = models[kind]
    try:
        return model.model_validate(data)
    except validation_error as exc:
        for p in _problems_from_validation(doc, model, title, exc):
            problems.add(p)
        return None


def _manifest(envelope: Any, doc: RawDocument, root: Path) -> Manifest:
    """A validated envelope as a Manifest (the files it refers to are read by ``_resolve_files``,
    for cached manifests too: the parse cache never holds what another file says)."""
    meta = envelope.metadata
    return _manifest_of(envelope.kind, meta.name, dict(meta.labels), dict(meta.annotations), modelcodec.to_record(envelope.spec), doc, root)


def _manifest_of(kind: str, name: str, labels: dict[str, str], annotations: dict[str, str], spec: Any, raw: RawDocument, root: Path) -> Manifest:
    """``Manifest(kind, name, labels, annotations, spec, raw, root)``, made faster (``frozen_from``)."""
    values = {"kind": kind, "name": name, "labels": labels, "annotations": annotations, "spec": spec, "raw": raw, "root": root, "resolved": {}}
    return frozen_from(Manifest, values)


def _file_problem(m: Manifest, field_path: FieldPath, err: files.FileRefError) -> Problem:
    return Problem(str(err), m.raw.where(field_path), m.title, ".".join(map(str, field_path)), err.hint)


_FILE_REF = record_class("FileRef")  # kinds.specs.FileRef: {from_file: path}


def _resolve_files(m: Manifest, path: Path, problems: ProblemList, cached: bool = False) -> None:
    """Read the files a manifest points at, so later checks and the plan see their content.
    ``cached``: the manifest comes from the parse cache, so its inline schema was checked already
    (the cache key covers the checkers' installations); what other files hold is checked again."""
    if m.kind == "Task":
        schema = m.spec.response_schema
        if isinstance(schema, _FILE_REF):
            try:
                m.resolved["response_schema"] = files.read_schema_file(files.resolve_within(m.root, path, schema.from_file))
            except files.FileRefError as err:
                problems.add(_file_problem(m, ("spec", "response_schema", "from_file"), err))
                return
        else:
            m.resolved["response_schema"] = schema
        if m.spec.evaluation is not None:
            _resolve_inputs(m, m.spec.evaluation, path, problems, ("spec", "evaluation"), "evaluation_inputs")
        if cached and not isinstance(schema, _FILE_REF):
            return
        for p in _schema_problems(m):
            problems.add(p)
    elif m.kind in ("Run", "Experiment"):
        _resolve_inputs(m, m.spec, path, problems, ("spec",), "inputs")
    elif m.kind == "Provider" and m.spec.api_key is not None:
        _check_secret_ref(m, path, problems)


def _check_secret_ref(m: Manifest, path: Path, problems: ProblemList) -> None:
    """An api_key reference must be allowed; its value is not read here (validate needs no secrets)."""
    from reconciler.providers.secrets import SecretRefError, check_reference

    ref = plain_dump(m.spec.api_key, exclude_none=True)
    try:
        check_reference(ref, path, m.root)
    except SecretRefError as err:
        field_path = ("spec", "api_key", err.field or next(iter(ref)))
        problems.add(Problem(err.message, m.raw.where(field_path), m.title, ".".join(field_path), err.hint))


def _schema_problems(m: Manifest) -> list[Problem]:
    from reconciler.manifests.jsonschema_check import schema_errors

    field_path: FieldPath = ("spec", "response_schema")
    out = []
    for where, message in schema_errors(m.resolved["response_schema"]):
        loc = m.raw.where((*field_path, *where)) if isinstance(m.spec.response_schema, dict) else m.raw.where(field_path)
        dotted = ".".join(str(p) for p in (*field_path, *where))
        out.append(Problem(f"not a valid JSON Schema: {message}", loc, m.title, dotted, "check it against https://json-schema.org"))
    return out


def _resolve_inputs(m: Manifest, spec: Any, path: Path, problems: ProblemList, at: FieldPath, key: str) -> None:
    """Read the inputs of ``spec`` (a run's, an experiment's, a task's evaluation; at ``at`` in the
    document) into ``m.resolved[key]``, then check the template and ``expected`` against them."""
    if spec.inputs_file is not None:
        try:
            target = files.resolve_within(m.root, path, spec.inputs_file)
            m.resolved[key] = files.read_inputs_file(target)
            m.resolved[f"{key}_path"] = str(target)
        except files.FileRefError as err:
            problems.add(_file_problem(m, (*at, "inputs_file"), err))
    else:
        m.resolved[key] = [files.normalize_input(v, "inputs") for v in spec.inputs]
    _check_run_inputs(m, spec, m.resolved.get(key), at, problems)


def _check_run_inputs(m: Manifest, spec: Any, inputs: list[dict[str, Any]] | None, at: FieldPath, problems: ProblemList) -> None:
    if inputs is None:
        return
    where_field = (*at, "inputs_file") if spec.inputs_file else (*at, "inputs")
    needed: list[tuple[str, FieldPath]] = []
    if spec.prompt_template is not None:
        try:
            needed += [(f, (*at, "prompt_template")) for f in files.template_fields(spec.prompt_template)]
        except files.FileRefError as err:
            problems.add(_file_problem(m, (*at, "prompt_template"), err))
            return
    fields = expected_fields(spec.expected)
    if fields is not None:
        needed.append((fields[0], (*at, "expected") if isinstance(spec.expected, str) else (*at, "expected", "input")))
    for name, field_path in needed:
        for i, item in enumerate(inputs):
            if name not in item:
                which = f"line {i + 1} of {spec.inputs_file}" if spec.inputs_file else f"input {i}"
                problems.add(
                    Problem(
                        f"{{{name}}} is not a field of {which} (fields: {', '.join(sorted(item)) or 'none'})",
                        m.raw.where(field_path if spec.inputs_file else (*where_field, i)),
                        m.title,
                        ".".join(map(str, field_path)),
                        "a string input is available as {input}; give every input the fields the template uses",
                    )
                )
                break


def _declared_key(data: Any) -> ResourceKey:
    meta = data.get("metadata") if isinstance(data, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    kind = data.get("kind") if isinstance(data, dict) else None
    return (kind, name) if isinstance(kind, str) and isinstance(name, str) else ("", "")


def _check_together(manifests: list[Manifest], declared: set[ResourceKey], problems: ProblemList, external_refs: bool = False) -> None:
    """Checks across documents: duplicate names, dangling references, duplicate assignment pairs."""
    first: dict[tuple[str, str], Manifest] = {}
    firsts: list[Manifest] = []  # each manifest its key was first defined by, in order (checked below)
    for m in manifests:
        key = (m.kind, m.name)
        other = first.get(key)
        if other is m:
            firsts.append(m)  # the same object twice: it is still the first
        if other is not None:
            problems.add(
                Problem(
                    f"duplicate name: {m.kind} {m.name!r} is already defined at {other.location}",
                    m.raw.where(("metadata", "name")),
                    m.title,
                    "metadata.name",
                    "names are unique per kind; rename or remove one of them",
                )
            )
        else:
            first[key] = m
            firsts.append(m)
    names: dict[str, set[str]] = defaultdict(set)
    for kind, name in [*first, *declared]:
        names[kind].add(name)

    def ref(m: Manifest, field_name: str, target_kind: str) -> None:
        value = getattr(m.spec, field_name)
        if value not in names[target_kind] and not external_refs:
            close = difflib.get_close_matches(value, sorted(names[target_kind]), n=1)
            problems.add(
                Problem(
                    f"refers to {target_kind} {value!r}, which is not defined in the manifests",
                    m.raw.where(("spec", field_name)),
                    m.title,
                    f"spec.{field_name}",
                    (f"did you mean {close[0]!r}? " if close else "") + f"define {target_kind} {value!r} or fix the reference",
                )
            )

    checks = {kind: _reference_checks(k, names) for kind, k in BY_NAME.items()}
    pairs = _pairs_if_no_problem(firsts, checks, external_refs)  # (agent, task) -> its assignment
    if pairs is None:  # some reference or pair is wrong: each manifest in turn reports it
        pairs = _pairs_reporting_problems(firsts, checks, ref, problems, external_refs)
    _check_examples(first, pairs, problems)
    _check_row_names(first, problems)
    _check_experiment_agents(first, names, pairs, problems, external_refs)
    _check_expected(first, problems)


# a kind's references as (field, target kind, the names of that kind), what reads their values
# from a spec (a tuple), and whether its rows are unnamed
_ReferenceChecks = tuple[list[tuple[str, str, set[str]]], Callable[[Any], tuple[Any, ...]], bool]


def _reference_checks(k: Kind, names: dict[str, set[str]]) -> _ReferenceChecks:
    """What ``_check_together`` checks of a kind's references: (field, target kind, its names), a
    function giving the spec's values of those fields as a tuple, and whether the kind's rows are unnamed."""
    references = [(f, str(r.kind), names[r.kind]) for f, r in k.references.items()]
    fields = [f for f, _, _ in references]
    values_of = operator.attrgetter(*fields) if len(fields) > 1 else lambda spec: tuple(getattr(spec, f) for f in fields)
    return references, values_of, k.natural_name is not None


def _pairs_if_no_problem(
    firsts: list[Manifest],
    checks: dict[str, _ReferenceChecks],
    external_refs: bool,
) -> dict[tuple[Any, ...], Manifest] | None:
    """The unnamed rows by their references (``pairs``) when every reference names a defined
    resource (or may name one only the database has) and no two unnamed rows have the same ones;
    else None. The common, valid case checked a kind at a time with set operations instead of a
    manifest at a time."""
    by_kind: dict[str, list[Manifest]] = defaultdict(list)
    for m in firsts:
        by_kind[m.kind].append(m)
    pairs: dict[tuple[Any, ...], Manifest] = {}
    for kind, group in by_kind.items():
        references, values_of, unnamed = checks[kind]
        if not references and not unnamed:
            continue
        specs = [m.spec for m in group]
        for field_name, _, targets in references if not external_refs else ():
            if not targets.issuperset(map(operator.attrgetter(field_name), specs)):
                return None
        if unnamed:
            before = len(pairs)
            pairs.update(zip(map(values_of, specs), group, strict=True))
            if len(pairs) != before + len(group):  # two unnamed rows with the same references
                return None
    return pairs


def _pairs_reporting_problems(
    firsts: list[Manifest],
    checks: dict[str, _ReferenceChecks],
    ref: Callable[[Manifest, str, str], None],
    problems: ProblemList,
    external_refs: bool,
) -> dict[tuple[Any, ...], Manifest]:
    """``pairs`` as ``_pairs_if_no_problem`` gives them, a manifest at a time: each dangling
    reference (``ref``) and each unnamed row whose references another one has already is reported."""
    pairs: dict[tuple[Any, ...], Manifest] = {}
    for m in firsts:
        references, values_of, unnamed = checks[m.kind]
        if not references and not unnamed:
            continue
        combo = values_of(m.spec)
        for (field_name, target_kind, targets), value in zip(references, combo, strict=True):
            if value not in targets and not external_refs:
                ref(m, field_name, target_kind)
        if unnamed:  # an unnamed row: one per combination of its references
            k = BY_NAME[m.kind]
            if combo in pairs:
                other = pairs[combo]
                what = " and ".join(f"{BY_NAME[r.kind].name.lower()} {v!r}" for r, v in zip(k.references.values(), combo, strict=True))
                problems.add(
                    Problem(
                        f"{what} are already assigned by {k.name} {other.name!r} at {other.location}",
                        m.location,
                        m.title,
                        "spec",
                        f"one {k.name.lower()} per {'+'.join(k.references)} pair; remove one of the two",
                    )
                )
            else:
                pairs[combo] = m
    return pairs


def _check_experiment_agents(
    first: dict[ResourceKey, Manifest],
    names: dict[str, set[str]],
    pairs: dict[tuple[str, str], Manifest],
    problems: ProblemList,
    external_refs: bool,
) -> None:
    """Each agent of an experiment must exist and be assigned to its task (the hint is the Assignment to add)."""
    for m in first.values():
        if m.kind != "Experiment":
            continue
        task = m.spec.task
        for i, agent in enumerate(m.spec.agents):
            where = m.raw.where(("spec", "agents", i))
            if agent not in names["Agent"]:
                if not external_refs:
                    close = difflib.get_close_matches(agent, sorted(names["Agent"]), n=1)
                    problems.add(
                        Problem(
                            f"refers to Agent {agent!r}, which is not defined in the manifests",
                            where,
                            m.title,
                            f"spec.agents.{i}",
                            (f"did you mean {close[0]!r}? " if close else "") + f"define Agent {agent!r} or fix the name",
                        )
                    )
                continue
            if (agent, task) not in pairs and task in names["Task"]:
                problems.add(
                    Problem(
                        f"agent {agent!r} is not assigned to task {task!r}",
                        where,
                        m.title,
                        f"spec.agents.{i}",
                        "add the assignment:\n"
                        "    apiVersion: reconciler/v1\n    kind: Assignment\n"
                        f"    metadata: {{name: {agent}-{task}}}\n    spec: {{agent: {agent}, task: {task}}}",
                    )
                )


def _check_expected(first: dict[ResourceKey, Manifest], problems: ProblemList) -> None:
    """The ``expected`` output field of a run, an experiment or a task's evaluation must be a property
    of the task's response schema."""
    for m in first.values():
        if m.kind == "Task" and m.spec.evaluation is not None:
            found = expected_problem(m.spec.evaluation.expected, m.resolved.get("response_schema"), m.name)
            if found is not None:
                at: FieldPath = ("spec", "evaluation", "expected", "output")
                problems.add(Problem(found[0], m.raw.where(at), m.title, "spec.evaluation.expected.output", found[1]))
            continue
        if m.kind not in ("Run", "Experiment") or m.spec.expected is None:
            continue
        if m.kind == "Run":
            assignment = first.get(("Assignment", m.spec.assignment))
            task = first.get(("Task", assignment.spec.task)) if assignment is not None else None
        else:
            task = first.get(("Task", m.spec.task))
        if task is None:  # a dangling reference (reported already) or one only the database has
            continue
        found = expected_problem(m.spec.expected, task.resolved.get("response_schema"), task.name)
        if found is not None:
            field_path = ("spec", "expected") if isinstance(m.spec.expected, str) else ("spec", "expected", "output")
            problems.add(Problem(found[0], m.raw.where(field_path), m.title, ".".join(field_path), found[1]))


def _check_row_names(first: dict[ResourceKey, Manifest], problems: ProblemList) -> None:
    """``reconciler/row-name``: only where the table has a name column, fits it, one row per name."""
    from reconciler.kinds.base import ROW_NAME, ROW_NAME_MAX, row_name

    if not any(ROW_NAME in m.annotations for m in first.values()):
        return  # every row is named after its manifest: names are unique per kind already
    field_path = ("metadata", "annotations", ROW_NAME)
    seen: dict[tuple[str, str], Manifest] = {}
    for m in first.values():
        value = m.annotations.get(ROW_NAME)
        if value is not None:
            where = m.raw.where(field_path)
            dotted = f"metadata.annotations.{ROW_NAME}"
            if not BY_NAME[m.kind].keeps_row_names:
                why = "are found by their manifest name" if BY_NAME[m.kind].named_rows else "have no name column"
                problems.add(Problem(f"{m.kind} rows {why}, so they cannot keep a row name", where, m.title, dotted, "remove the annotation"))
                continue
            if not value.strip() or len(value) > ROW_NAME_MAX:
                problems.add(
                    Problem(
                        f"found {_short(value)}; a row name is 1 to {ROW_NAME_MAX} characters, not only spaces",
                        where,
                        m.title,
                        dotted,
                        "give the row's name in the database, or remove the annotation to name the row after the manifest",
                    )
                )
                continue
        if not BY_NAME[m.kind].keeps_row_names:
            continue
        key = (m.kind, row_name(m.name, m.annotations))
        other = seen.get(key)
        if other is not None:
            problems.add(
                Problem(
                    f"row name {key[1]!r} is already the row name of {other.title} at {other.location}",
                    m.raw.where(field_path if value is not None else ("metadata", "name")),
                    m.title,
                    f"metadata.annotations.{ROW_NAME}" if value is not None else "metadata.name",
                    "row names are unique per kind in the database; change one of the two",
                )
            )
        else:
            seen[key] = m


def _check_examples(first: dict[ResourceKey, Manifest], pairs: dict[tuple[str, str], Manifest], problems: ProblemList) -> None:
    """Each example an agent shows the model must be a valid answer of every task it is assigned to."""
    from reconciler.manifests.jsonschema_check import schema_errors

    showing = {key[1] for key, m in first.items() if key[0] == "Agent" and m.spec.examples}
    for agent_name, task_name in pairs if showing else ():  # most agents show none: the pairs are not walked
        if agent_name not in showing:
            continue
        agent, task = first.get(("Agent", agent_name)), first.get(("Task", task_name))
        if agent is None or task is None:
            continue
        from reconciler.llm.output_schema import OutputSchema  # only agents with examples need it

        schema = task.resolved.get("response_schema")
        if not schema or schema_errors(schema):  # no schema (free text), or a broken one (reported already)
            continue
        checker = OutputSchema(schema)
        for i, example in enumerate(agent.spec.examples):
            found = checker.errors(example.output)
            if found:
                problems.add(
                    Problem(
                        f"example {i} does not fit the response_schema of Task {task_name!r}: {'; '.join(found)}",
                        agent.raw.where(("spec", "examples", i, "output")),
                        agent.title,
                        f"spec.examples.{i}.output",
                        f"an example's output is an answer the model should give: make it valid for Task {task_name!r}",
                    )
                )
