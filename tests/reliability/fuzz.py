"""Hypothesis strategies for broken manifests: random YAML text, text mutations of valid files,
and valid documents with one value replaced by something hostile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from reconciler.errors import ReconcilerError
from reconciler.manifests.loader import ManifestSet, load_manifests

VALID_DOCUMENTS: list[dict[str, Any]] = [
    {"apiVersion": "reconciler/v1", "kind": "Provider", "metadata": {"name": "local", "labels": {"tier": "a"}},
     "spec": {"type": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key": {"from_env": "FUZZ_API_KEY"}}},
    {"apiVersion": "reconciler/v1", "kind": "Agent", "metadata": {"name": "triage"},
     "spec": {"provider": "local", "model_name": "m", "system_prompt": "Classify.", "temperature": 0.2, "max_tokens": 64,
              "prices": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}}},
    {"apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": "classify"},
     "spec": {"response_schema": {"type": "object", "properties": {"category": {"type": "string", "enum": ["bug", "feature"]}},
                                  "required": ["category"]}}},
    {"apiVersion": "reconciler/v1", "kind": "Assignment", "metadata": {"name": "triage-classify"},
     "spec": {"agent": "triage", "task": "classify"}},
    {"apiVersion": "reconciler/v1", "kind": "Run", "metadata": {"name": "sample"},
     "spec": {"assignment": "triage-classify", "inputs": ["a", {"text": "b"}], "concurrency": 2}},
]
VALID_TEXT = yaml.safe_dump_all(VALID_DOCUMENTS, sort_keys=False)

odd_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(["\u202e", "\u200b", "\ufeff", "e\u0301", "\U0001f600", "\\", "'", '"', "{{x}}", "{0}", "%s", "${HOME}"]),
    st.integers(min_value=1, max_value=5).map(lambda n: "x" * (10 ** n)),  # 15 MB strings: see the corpus
)
hostile_value = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), odd_text,
    ),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(odd_text, children, max_size=4)),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = value.copy()
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    """The valid set with one value (or key) somewhere replaced by a hostile one."""
    docs = [dict(d) for d in VALID_DOCUMENTS]
    i = draw(st.integers(0, len(docs) - 1))
    paths = _paths(docs[i])
    path = draw(st.sampled_from(paths))
    docs[i] = _replace(docs[i], path, draw(hostile_value))
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=draw(st.booleans()))


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    """The valid text with a few character- or line-level edits."""
    text = VALID_TEXT
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "dup-line", "drop-line", "swap-lines", "truncate"]))
        pos = draw(st.integers(0, max(len(text) - 1, 0)))
        lines = text.splitlines(keepends=True)
        if op == "insert":
            text = text[:pos] + draw(st.sampled_from(list(":-[]{}&*!|>'\"#%@` \t\n?,") + ["\\x00", "&a", "*a", "!!python/object:os.system", "<<: "])) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)):]
        elif op == "replace":
            text = text[:pos] + draw(odd_text) + text[pos + 1:]
        elif op in {"dup-line", "drop-line", "swap-lines"} and lines:
            j = draw(st.integers(0, len(lines) - 1))
            k = draw(st.integers(0, len(lines) - 1))
            if op == "dup-line":
                lines.insert(k, lines[j])
            elif op == "drop-line":
                del lines[j]
            else:
                lines[j], lines[k] = lines[k], lines[j]
            text = "".join(lines)
        elif op == "truncate":
            text = text[:pos]
    return text


random_yaml = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.sampled_from(list("ab:- \n[]{}&*!|>'\"#,?\t")), max_size=200),
    hostile_value.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
)


def load_checked(root: Path, text: str | bytes) -> ManifestSet | None:
    """Write ``text`` as the only manifest and load it; check the failure contract.

    Returns the manifests when they are valid. Any exception other than ReconcilerError, or an error
    without a location in the file, fails the property."""
    path = root / "fuzz.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        manifests = load_manifests([str(root)])
    except ReconcilerError as exc:
        errors = [p for p in exc.problems if p.severity == "error"]
        assert errors, exc.problems
        for problem in errors:
            assert problem.location is not None and problem.location.file == str(path), problem.render()
            if not problem.message.startswith(("file ", "cannot read")):
                assert problem.location.line >= 1, problem.render()
        return None
    return manifests


def plan_is_storable(manifests: ManifestSet) -> None:
    """A valid set plans and renders, and its plan is strict JSON (what the JSON columns store)."""
    from reconciler.plan.render import RENDERERS
    from reconciler.state.snapshot import StateSnapshot
    from reconciler.workflow import compute_plan

    try:
        plan = compute_plan(manifests, StateSnapshot.empty(), prune=True, sources=["fuzz"], git=None)
    except ReconcilerError as exc:  # e.g. a secret's variable is not set: still a located message
        for problem in exc.problems:
            assert problem.location is not None and problem.location.line >= 1, problem.render()
        return
    for render in RENDERERS.values():
        render(plan).encode("utf-8")
    json.dumps(plan.to_dict(), allow_nan=False).encode("utf-8")
