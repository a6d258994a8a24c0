"""The parse cache must never change a result: a hit gives exactly what parsing and validating gave,
and an edit, a changed referenced file, a new reconciler version or a damaged entry never give
anything stale."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

import reconciler
from reconciler.errors import ReconcilerError
from reconciler.kinds.base import plain_dump, record_class
from reconciler.manifests import modelcodec, parsecache, yamlfile
from reconciler.manifests.loader import ManifestSet, ParsedFiles, cache_salt, load_manifests
from reconciler.manifests.parsecache import ParseCache, default_directory, open_cache
from reconciler.plan.desired import desired_state

REPO = Path(__file__).resolve().parent.parent

PROVIDERS = """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: openai, labels: {tier: paid}, annotations: {owner: "team-a"}}
spec:
  type: openai
  base_url: https://api.example.com/v1
  api_key: {from_file: secrets/openai.key}
---
apiVersion: reconciler/v1
kind: Provider
metadata: {name: local}
spec: {type: ollama, base_url: "http://127.0.0.1:11434"}
"""
TASKS = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: from-file}
spec:
  response_schema: {from_file: schemas/answer.json}
---
apiVersion: reconciler/v1
kind: Task
metadata: {name: inline}
spec:
  description: inline schema
  is_active: false
  response_schema:
    type: object
    properties: {label: {type: string, enum: [a, b]}, score: {type: number, maximum: 1.5}}
    required: [label]
"""
AGENTS = """\
apiVersion: reconciler/v1
kind: Agent
metadata: {name: classifier}
spec:
  provider: openai
  model_name: gpt-4o-mini
  system_prompt: |
    Classify.
    Two lines.
  temperature: 0
  max_tokens: 64
  prices: {input_per_mtok: 0.15, output_per_mtok: 1}
  examples:
    - {input: "hello", output: {label: a}}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: plain}
spec: {provider: local, model_name: llama3.1:8b}
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: classifier-inline}
spec: {agent: classifier, task: inline}
---
apiVersion: reconciler/v1
kind: Run
metadata: {name: nightly}
spec:
  assignment: classifier-inline
  inputs_file: data/inputs.jsonl
  prompt_template: "Message: {text}"
  expected: label
---
apiVersion: reconciler/v1
kind: Run
metadata: {name: inline-inputs}
spec: {assignment: classifier-inline, inputs: ["one", {input: two}], concurrency: 2, trigger: manual}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "manifests"
    for name, text in {
        "providers.yaml": PROVIDERS,
        "tasks.yaml": TASKS,
        "agents.yaml": AGENTS,
        "schemas/answer.json": json.dumps({"type": "object", "properties": {"label": {"type": "string"}}}),
        "data/inputs.jsonl": '{"text": "hi", "label": "a"}\n',
        "secrets/openai.key": "sk-test-one\n",
    }.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text, encoding="utf-8")
    return base


def fresh_cache(directory: Path) -> ParseCache:
    """A new handle on the cache in ``directory`` (counters at zero), as the next command opens it."""
    return ParseCache(directory, cache_salt())


def _state(value: Any) -> Any:
    """Everything a value is made of, models included, with types, for exact comparison."""
    if isinstance(value, BaseModel):
        return (type(value), _state(value.__getstate__()))
    if isinstance(value, dict):
        return (dict, [(k, _state(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple, set, frozenset)):
        return (type(value), [_state(v) for v in (sorted(value) if isinstance(value, (set, frozenset)) else value)])
    return (type(value), value)


def signature(ms: ManifestSet) -> Any:
    return _state(
        [
            [m.kind, m.name, m.labels, m.annotations, m.spec, m.raw.file, m.raw.index, m.raw.location, m.raw.data, str(m.root), m.resolved]
            for m in ms.manifests
        ]
        + [list(ms.warnings), list(ms.files)]
    )


def test_a_hit_gives_exactly_what_parsing_gave(root: Path, tmp_path: Path) -> None:
    expected = load_manifests([str(root)], cache=None)
    first = fresh_cache(tmp_path / "c")
    assert signature(load_manifests([str(root)], cache=first)) == signature(expected)
    assert (first.hits, first.misses, first.stored) == (0, 3, 3)
    second = fresh_cache(tmp_path / "c")
    hit = load_manifests([str(root)], cache=second)
    assert (second.hits, second.misses, second.stored) == (3, 0, 0)
    assert signature(hit) == signature(expected)
    assert desired_state(hit, lambda ref, m: "hmac") == desired_state(expected, lambda ref, m: "hmac")


@pytest.mark.parametrize("tree", ["manifests", "examples/ollama-and-openai"])
def test_the_repository_manifests_come_back_the_same(tree: str, tmp_path: Path) -> None:
    shutil.copytree(REPO / tree, tmp_path / "m")
    expected = load_manifests([str(tmp_path / "m")], cache=None)
    load_manifests([str(tmp_path / "m")], cache=fresh_cache(tmp_path / "c"))
    cache = fresh_cache(tmp_path / "c")
    assert signature(load_manifests([str(tmp_path / "m")], cache=cache)) == signature(expected)
    assert cache.misses == 0 and cache.hits > 0


def test_an_edit_misses(root: Path, tmp_path: Path) -> None:
    load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    agents = root / "agents.yaml"
    agents.write_text(agents.read_text().replace("temperature: 0\n", "temperature: 0.5\n"), encoding="utf-8")
    cache = fresh_cache(tmp_path / "c")
    loaded = load_manifests([str(root)], cache=cache)
    assert (cache.hits, cache.misses, cache.stored) == (2, 1, 1)
    assert {m.name: m.spec for m in loaded.manifests}["classifier"].temperature == 0.5
    assert signature(loaded) == signature(load_manifests([str(root)], cache=None))


def test_an_edit_that_breaks_a_file_is_reported_and_not_stored(root: Path, tmp_path: Path) -> None:
    load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    tasks = root / "tasks.yaml"
    tasks.write_text(tasks.read_text().replace("is_active: false", "is_active: maybe"), encoding="utf-8")
    for _ in range(2):  # the second time too: nothing about the broken file was stored
        cache = fresh_cache(tmp_path / "c")
        with pytest.raises(ReconcilerError) as err:
            load_manifests([str(root)], cache=cache)
        assert "tasks.yaml:12:3:" in str(err.value) and "is_active" in str(err.value)
        assert (cache.misses, cache.stored) == (1, 0)


def test_a_changed_schema_file_is_read_again(root: Path, tmp_path: Path) -> None:
    load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    (root / "schemas/answer.json").write_text(json.dumps({"type": "object", "required": ["x"]}), encoding="utf-8")
    cache = fresh_cache(tmp_path / "c")
    loaded = load_manifests([str(root)], cache=cache)
    assert cache.misses == 0  # the manifest file itself did not change ...
    task = {m.name: m for m in loaded.manifests}["from-file"]
    assert task.resolved["response_schema"] == {"type": "object", "required": ["x"]}  # ... the schema it points at did
    (root / "schemas/answer.json").write_text('{"type": 12}', encoding="utf-8")
    with pytest.raises(ReconcilerError) as err:
        load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    assert "not a valid JSON Schema" in str(err.value) and "tasks.yaml:5:" in str(err.value)


def test_a_changed_inputs_file_is_read_again(root: Path, tmp_path: Path) -> None:
    load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    (root / "data/inputs.jsonl").write_text('{"text": "hi", "label": "a"}\n{"text": "yo", "label": "b"}\n', encoding="utf-8")
    cache = fresh_cache(tmp_path / "c")
    run = {m.name: m for m in load_manifests([str(root)], cache=cache).manifests}["nightly"]
    assert cache.misses == 0
    assert [i["text"] for i in run.resolved["inputs"]] == ["hi", "yo"]
    (root / "data/inputs.jsonl").write_text('{"text": "no label"}\n', encoding="utf-8")
    with pytest.raises(ReconcilerError) as err:
        load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    assert "{label} is not a field of line 1 of data/inputs.jsonl" in str(err.value)


def test_a_changed_or_missing_secret_file_is_seen(root: Path, tmp_path: Path, cli_run: Any) -> None:
    """Secrets are never in the cache; the plan reads the referenced key file every time."""
    db = f"sqlite:///{tmp_path / 'state.db'}"
    env = {"RECONCILER_SECRET_KEY": "uQz0j8m0Yb3yoWq5V7Ok3J4JgG8mKZp2G7mX8q6yR9c="}
    code, out, err = cli_run("apply", str(root), "--db", db, "--auto-approve", "--no-validate", env=env)
    assert code == 0, err
    code, out, err = cli_run("plan", str(root), "--db", db, "--detailed-exitcode", env=env)
    assert code == 0, out + err  # a hit on every file, nothing changed
    (root / "secrets/openai.key").write_text("sk-test-two\n", encoding="utf-8")
    code, out, err = cli_run("plan", str(root), "--db", db, "--detailed-exitcode", env=env)
    assert code == 2 and "api_key" in out, out + err
    (root / "secrets/openai.key").unlink()
    code, out, err = cli_run("plan", str(root), "--db", db, env=env)
    assert code == 1 and "providers.yaml:7:" in err and "openai.key" in err, err
    cache_dir = Path(os.environ[parsecache.CACHE_DIR_ENV])
    stored = b"".join(p.read_bytes() for p in cache_dir.rglob("*.json"))
    assert stored and b"sk-test-" not in stored


def test_another_version_or_parser_setting_misses(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    monkeypatch.setattr(reconciler, "__version__", "99.0.0")
    cache = fresh_cache(tmp_path / "c")
    load_manifests([str(root)], cache=cache)
    assert (cache.hits, cache.misses) == (0, 3)
    monkeypatch.setattr(yamlfile, "MAX_DOCUMENTS_PER_FILE", 4)  # agents.yaml holds 5: must not hit
    cache = fresh_cache(tmp_path / "c")
    with pytest.raises(ReconcilerError) as err:
        load_manifests([str(root)], cache=cache)
    assert "more than 4 documents" in str(err.value) and cache.hits == 0


def test_the_salt_follows_the_code(tmp_path: Path) -> None:
    """An edited checkout keeps its version number: the parser's and the models' files are stamped."""
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    before = yamlfile.source_stamps([module])
    module.write_text("x = 22\n")
    assert yamlfile.source_stamps([module]) != before
    stamped = cache_salt().decode()
    stamped_files = ("yamlfile.py", "yamlparse.py", "loader.py", "models.py", "modelcodec.py", "jsonschema_check.py")
    for name in (*stamped_files, "kinds/agent.py", "kinds/base.py", "yaml/__init__.py", "jsonschema_rs/__init__.py"):
        assert f"{name}:" in stamped, name


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[: len(blob) // 2],  # truncated
        lambda blob: b"",
        lambda blob: b"\x00\xff garbage",
        lambda blob: blob[:-2] + bytes([blob[-2] ^ 1]) + blob[-1:],  # one bit: the checksum no longer matches
        lambda blob: blob.split(b"\n", 1)[0],  # header only
    ],
    ids=["truncated", "empty", "garbage", "flipped", "header-only"],
)
def test_a_damaged_entry_is_ignored_and_rewritten(damage: Any, root: Path, tmp_path: Path) -> None:
    expected = signature(load_manifests([str(root)], cache=None))
    load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    entries = sorted((tmp_path / "c").glob("*.json"))
    assert len(entries) == 3
    for entry in entries:
        entry.write_bytes(damage(entry.read_bytes()))
    cache = fresh_cache(tmp_path / "c")
    assert signature(load_manifests([str(root)], cache=cache)) == expected
    assert (cache.hits, cache.misses, cache.stored) == (0, 3, 3)
    cache = fresh_cache(tmp_path / "c")
    assert signature(load_manifests([str(root)], cache=cache)) == expected
    assert cache.hits == 3


def _rewrite_payload(entry: Path, change: Any) -> None:
    """A well-formed entry (valid checksum) holding something the loader did not write."""
    import hashlib

    header, payload = entry.read_bytes().split(b"\n", 1)
    value = change(json.loads(payload))
    payload = json.dumps(value).encode()
    parts = header.split(b" ")
    parts[3] = hashlib.blake2b(payload, digest_size=32).hexdigest().encode()
    entry.write_bytes(b" ".join(parts) + b"\n" + payload)


@pytest.mark.parametrize(
    "change",
    [
        lambda v: {"not": "a list"},
        lambda v: [[*item[:7], ["\u0000model", "os.system", {}, [], []]] for item in v],  # a class no manifest has
        lambda v: [[*item[:7], ["\u0000model", item[7][1], {"unexpected": 1}, [], []]] for item in v],  # other fields
        lambda v: [[*item[:3], "Secret", *item[4:]] for item in v],  # a kind that does not exist
        lambda v: [item[:5] for item in v],
    ],
    ids=["not-a-list", "foreign-class", "wrong-fields", "unknown-kind", "short-items"],
)
def test_a_well_formed_but_foreign_entry_is_ignored(change: Any, root: Path, tmp_path: Path) -> None:
    expected = signature(load_manifests([str(root)], cache=None))
    load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    for entry in (tmp_path / "c").glob("*.json"):
        _rewrite_payload(entry, change)
    cache = fresh_cache(tmp_path / "c")
    assert signature(load_manifests([str(root)], cache=cache)) == expected
    assert cache.hits == 0


def test_problems_in_cached_files_are_located_as_without_the_cache(root: Path, tmp_path: Path) -> None:
    load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    (root / "providers.yaml").write_text(PROVIDERS.replace("name: local", "name: elsewhere"), encoding="utf-8")
    errors = []
    for cache in (None, fresh_cache(tmp_path / "c")):
        with pytest.raises(ReconcilerError) as err:
            load_manifests([str(root)], cache=cache)
        errors.append([p.render() for p in err.value.problems])
    assert errors[0] == errors[1]
    assert any("agents.yaml:19:8:" in line and "refers to Provider 'local'" in line for line in errors[1])


def test_files_with_problems_or_warnings_are_not_stored(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    secret = "sk-literal-" + "9" * 20
    (tmp_path / "m/p.yaml").write_text(
        f"apiVersion: reconciler/v1\nkind: Provider\nmetadata: {{name: p}}\nspec: {{type: openai, api_key: {secret}}}\n"
    )
    (tmp_path / "m/w.yaml").write_text("---\n---\n" + textwrap.dedent(TASKS.split("---\n")[1]))
    for _ in range(2):
        cache = fresh_cache(tmp_path / "c")
        with pytest.raises(ReconcilerError):
            load_manifests([str(tmp_path / "m")], cache=cache)
        assert cache.stored == 0 and cache.hits == 0
    leftovers = b"".join(p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert secret.encode() not in leftovers


def test_values_json_cannot_hold_make_the_file_uncached(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    big = 2**70
    (tmp_path / "m/a.yaml").write_text(
        AGENTS.split("---\n")[0].replace("output: {label: a}", f"output: {{label: a, n: {big}}}")
        + "---\n"
        + PROVIDERS.split("---\n")[1].replace("name: local", "name: openai")
    )
    for _ in range(2):
        cache = fresh_cache(tmp_path / "c")
        loaded = load_manifests([str(tmp_path / "m")], cache=cache)
        assert cache.stored == 0 and cache.hits == 0
        assert loaded.manifests[0].spec.examples[0].output == {"label": "a", "n": big}


def test_model_classes_with_types_json_changes_are_never_stored() -> None:
    class WithTuple(BaseModel):
        model_config = ConfigDict(extra="forbid")
        pair: tuple[int, int]

    class Fine(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str
        data: dict[str, Any]
        nested: list[WithTuple] | None = None

    assert modelcodec._layout(WithTuple) is None
    assert modelcodec._layout(Fine) is None  # holds a model that cannot be stored
    with pytest.raises(modelcodec.Uncacheable):
        modelcodec.encode(WithTuple(pair=(1, 2)))  # not a manifest model either
    for cls in modelcodec._classes().values():
        assert modelcodec._layout(cls) is not None, cls  # every manifest model can be stored today
    # a model that cannot be stored still becomes a record, its nested models found anywhere
    record = modelcodec.to_record(Fine(name="n", data={"k": [1]}, nested=[WithTuple(pair=(1, 2))]))
    assert record == record_class("Fine")({"name": "n", "data": {"k": [1]}, "nested": [record_class("WithTuple")({"pair": (1, 2)})]})
    with pytest.raises(modelcodec.Uncacheable):
        modelcodec.encode(record)


def test_a_record_is_frozen_plain_data_that_pickles() -> None:
    """What a manifest's spec is (validated now or read from the cache): read by attribute, equal by
    model and values, frozen, and kept by pickle (a process pool may carry one)."""
    import pickle

    ref = record_class("FileRef")({"from_file": "schema.json"})
    assert ref.from_file == "schema.json" and type(ref) is record_class("FileRef") and ref.model == "FileRef"
    assert repr(ref) == "FileRef(from_file='schema.json')"
    assert ref == record_class("FileRef")({"from_file": "schema.json"})
    assert ref != record_class("SecretRef")({"from_file": "schema.json"}) and ref != {"from_file": "schema.json"}
    with pytest.raises(AttributeError, match="frozen"):
        ref.from_file = "other.json"
    with pytest.raises(AttributeError, match="frozen"):
        del ref.from_file
    with pytest.raises(AttributeError):
        ref.missing  # noqa: B018
    again = pickle.loads(pickle.dumps(ref))
    assert again == ref and type(again) is type(ref)
    assert plain_dump(record_class("Outer")({"ref": ref, "refs": [ref], "none": None}), exclude_none=True) == {
        "ref": {"from_file": "schema.json"},
        "refs": [{"from_file": "schema.json"}],
    }


def test_the_directory_must_be_private(root: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / parsecache.SUBDIR).mkdir(parents=True)
    (shared / parsecache.SUBDIR).chmod(0o777)
    cache = open_cache(cache_salt(), shared)
    assert cache is not None
    load_manifests([str(root)], cache=cache)
    assert cache.stored == 0 and not list((shared / parsecache.SUBDIR).iterdir())


def test_where_the_cache_lives(tmp_path: Path) -> None:
    assert default_directory({"RECONCILER_CACHE_DIR": str(tmp_path), "HOME": "/home/x"}) == tmp_path
    assert default_directory({"XDG_CACHE_HOME": "/var/cache/x", "HOME": "/home/x"}) == Path("/var/cache/x/reconciler")
    assert default_directory({"XDG_CACHE_HOME": "relative", "HOME": "/home/x"}) == Path("/home/x/.cache/reconciler")
    assert default_directory({"HOME": "/home/x", "RECONCILER_NO_CACHE": "1", "RECONCILER_CACHE_DIR": str(tmp_path)}) is None
    assert default_directory({}) is None


def test_the_cli_uses_the_cache_and_can_turn_it_off(root: Path, tmp_path: Path, cli_run: Any) -> None:
    cache_dir = Path(os.environ[parsecache.CACHE_DIR_ENV]) / parsecache.SUBDIR
    code, out, err = cli_run("validate", str(root), env={parsecache.NO_CACHE_ENV: "1"})
    assert code == 0, err
    assert not cache_dir.exists()
    for _ in range(2):
        code, again, err = cli_run("validate", str(root))
        assert code == 0 and again == out, err
    assert len(list(cache_dir.glob("*.json"))) == 3


def test_entries_unused_for_a_month_are_pruned(root: Path, tmp_path: Path) -> None:
    load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"))
    directory = tmp_path / "c"
    used = sorted(directory.glob("*.json"))
    unused, abandoned = directory / ("0" * 64 + ".json"), directory / ".tmp-abandoned"
    unused.write_bytes(used[0].read_bytes())
    abandoned.write_bytes(b"half a write")
    month_ago = used[0].stat().st_mtime - parsecache.KEEP_UNUSED_SECONDS - 60
    for p in (*used, unused, abandoned, directory / parsecache._PRUNE_MARKER):
        os.utime(p, (month_ago, month_ago))
    (root / "tasks.yaml").write_text(TASKS + "\n# edited\n", encoding="utf-8")  # a miss: its store prunes
    cache = fresh_cache(tmp_path / "c")
    load_manifests([str(root)], cache=cache)
    assert (cache.hits, cache.stored) == (2, 1)
    assert not unused.exists() and not abandoned.exists()
    remaining = set(directory.glob("*.json"))
    assert len(remaining) == 3 and {p for p in used if p.exists()} <= remaining  # the two used ones were kept (a hit refreshes)
    assert sum(p in remaining for p in used) == 2


def test_files_kept_in_memory_give_what_parsing_gave_and_follow_every_change(root: Path, tmp_path: Path) -> None:
    """``watch`` keeps the files it read (``ParsedFiles``): the same bytes at the same path are not
    read from the cache again; an edited file, a changed referenced file or a broken one are seen."""
    parsed = ParsedFiles()
    cache = tmp_path / "c"
    first = load_manifests([str(root)], cache=fresh_cache(cache), parsed=parsed)
    assert signature(first) == signature(load_manifests([str(root)], cache=None))
    again = fresh_cache(cache)
    second = load_manifests([str(root)], cache=again, parsed=parsed)
    assert (parsed.hits, again.hits, again.misses) == (3, 0, 0)
    assert signature(second) == signature(first)

    agents = root / "agents.yaml"
    agents.write_text(agents.read_text().replace("temperature: 0\n", "temperature: 0.5\n"), encoding="utf-8")
    (root / "schemas/answer.json").write_text(json.dumps({"type": "object", "required": ["x"]}), encoding="utf-8")
    edited = fresh_cache(cache)
    third = load_manifests([str(root)], cache=edited, parsed=parsed)
    assert (parsed.hits, edited.misses) == (5, 1)
    assert {m.name: m.spec for m in third.manifests}["classifier"].temperature == 0.5
    assert {m.name: m for m in third.manifests}["from-file"].resolved["response_schema"] == {"type": "object", "required": ["x"]}
    assert signature(third) == signature(load_manifests([str(root)], cache=None))

    (root / "schemas/answer.json").write_text('{"type": 12}', encoding="utf-8")
    with pytest.raises(ReconcilerError) as err:
        load_manifests([str(root)], cache=fresh_cache(cache), parsed=parsed)
    assert "not a valid JSON Schema" in str(err.value) and "tasks.yaml:5:" in str(err.value)


def test_files_kept_in_memory_are_told_apart_by_path(root: Path, tmp_path: Path) -> None:
    """Two files with the same bytes are two sets of manifests, each located in its own file."""
    other = tmp_path / "other"
    shutil.copytree(root, other)
    parsed = ParsedFiles()
    for _ in range(2):
        ours = load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"), parsed=parsed)
        theirs = load_manifests([str(other)], cache=fresh_cache(tmp_path / "c"), parsed=parsed)
        assert signature(ours) == signature(load_manifests([str(root)], cache=None))
        assert signature(theirs) == signature(load_manifests([str(other)], cache=None))
    assert parsed.hits == 0  # each call kept only its own files


MORE = """\
apiVersion: reconciler/v1
kind: Agent
metadata:
  name: second
  labels: {team: b}
  annotations: {reconciler/row-name: "Second Agent", note: "kept"}
spec: {provider: local, model_name: llama3.1:8b, description: the other arm, is_active: false}
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: second-inline}
spec: {agent: second, task: inline}
---
apiVersion: reconciler/v1
kind: Task
metadata: {name: graded, labels: {gate: "yes"}}
spec:
  response_schema: {type: object, properties: {label: {type: string}}}
  evaluation:
    inputs_file: data/inputs.jsonl
    prompt_template: "{text}"
    expected: {input: label, output: label}
    gate: {min_accuracy: 0.5}
---
apiVersion: reconciler/v1
kind: Experiment
metadata: {name: ab, annotations: {why: compare}}
spec:
  task: inline
  agents: [classifier, second]
  baseline: second
  inputs_file: data/inputs.jsonl
  prompt_template: "Message: {text}"
  expected: {input: label, output: label}
  repeats: 2
---
apiVersion: reconciler/v1
kind: Experiment
metadata: {name: inline-ab}
spec: {task: inline, agents: [second, classifier], inputs: [{text: x}], trigger: manual}
"""


def test_a_plan_from_cache_hits_is_the_plan_made_without_the_cache(root: Path, tmp_path: Path, cli_run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kind, labels, annotations, a row name, a secret, runs and experiments, schema and inputs
    files: `plan` from the parse cache's entries (no file parsed) is the plan made without the cache,
    against an empty database and against an applied one whose referenced files changed since."""
    (root / "more.yaml").write_text(MORE, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'state.db'}"
    env = {"RECONCILER_SECRET_KEY": "uQz0j8m0Yb3yoWq5V7Ok3J4JgG8mKZp2G7mX8q6yR9c="}

    def plans() -> list[dict[str, Any]]:
        """The plan without the cache, then with it twice (stores, then hits only), timestamps left out."""
        out = []
        for extra in ({parsecache.NO_CACHE_ENV: "1"}, {}, {}):
            with monkeypatch.context() as patch:
                if len(out) == 2:  # every entry is stored: nothing may be parsed now
                    patch.setattr("reconciler.manifests.loader.parse_text", _no_parse)
                code, text, err = cli_run("plan", str(root), "--db", db, "--json", env={**env, **extra})
            assert code == 0, err
            document = json.loads(text)
            document.pop("created_at")
            out.append(document)
        return out

    created = plans()
    assert created[0]["summary"]["create"] == 14 and created[1] == created[0] and created[2] == created[0]
    code, _, err = cli_run("apply", str(root), "--db", db, "--auto-approve", "--no-validate", env=env)
    assert code == 0, err
    (root / "secrets/openai.key").write_text("sk-test-two\n", encoding="utf-8")
    (root / "schemas/answer.json").write_text(json.dumps({"type": "object", "properties": {"label": {"type": "integer"}}}), encoding="utf-8")
    (root / "data/inputs.jsonl").write_text('{"text": "hi", "label": "a"}\n{"text": "yo", "label": "b"}\n', encoding="utf-8")
    changed = plans()
    assert changed[0]["summary"]["update"] >= 3 and changed[1] == changed[0] and changed[2] == changed[0]


def _no_parse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a file was parsed although the parse cache holds it")


def test_frozen_from_makes_what_the_dataclass_makes(root: Path) -> None:
    """The classes built with ``frozen_from`` on a plan's way: the same instance as their ``__init__``
    makes (equal, same fields, same repr and hash where there is one), and nothing it would skip."""
    import dataclasses

    from reconciler.errors import Location
    from reconciler.manifests.loader import Manifest
    from reconciler.manifests.yamlfile import RawDocument
    from reconciler.plan.desired import DesiredResource
    from reconciler.plan.model import Action, Change
    from reconciler.records import frozen_from

    m = load_manifests([str(root)], cache=None).manifests[0]
    where = Location("a.yaml", 3, 4)
    examples = [
        (Location, {"file": "a.yaml", "line": 3, "column": 4}),
        (RawDocument, {"file": "a.yaml", "index": 1, "parsed": {"kind": "Task"}, "location": where, "text": "x"}),
        (
            Manifest,
            {"kind": m.kind, "name": m.name, "labels": {"a": "b"}, "annotations": {}, "spec": m.spec, "raw": m.raw, "root": m.root, "resolved": {}},
        ),
        (DesiredResource, {"kind": "Task", "name": "t", "essence": {"x": 1}, "source": "a.yaml:3:4", "labels": {}, "annotations": {}}),
    ]
    examples[3][1].update(secret_source=None, payload=None)
    change = {"action": Action.CREATE, "kind": "Task", "name": "t", "fields": (), "desired": {"x": 1}, "row_id": None, "source": "a.yaml:3:4"}
    examples.append((Change, {**change, "labels": {"a": "b"}, "annotations": {}, "reason": ""}))
    for cls, values in examples:
        assert [f.name for f in dataclasses.fields(cls)] == list(values), cls  # every field, in order
        assert not hasattr(cls, "__post_init__") and "__slots__" not in vars(cls), cls
        made, expected = frozen_from(cls, dict(values)), cls(**values)
        assert made == expected and repr(made) == repr(expected) and vars(made) == vars(expected), cls
        if cls is Location:
            assert hash(made) == hash(expected)
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.file = "b.yaml"  # type: ignore[misc,union-attr]


def test_a_key_is_computed_once_for_the_same_bytes_of_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = fresh_cache(tmp_path / "c")
    path = tmp_path / "a.yaml"
    first = cache.key(b"kind: Task\n", path)
    digests = []
    blake2b = parsecache.hashlib.blake2b
    monkeypatch.setattr(parsecache.hashlib, "blake2b", lambda *a, **k: digests.append(1) or blake2b(*a, **k))
    assert cache.key(b"kind: Task\n", path) == first and not digests  # the same bytes again: not hashed again
    assert cache.key(b"kind: Task\n") == first == fresh_cache(tmp_path / "c").key(b"kind: Task\n") and len(digests) == 2
    edited = cache.key(b"kind: Agent\n", path)  # the file changed since: its key is worked out again
    assert edited != first and edited == cache.key(b"kind: Agent\n")
    assert cache.key(b"kind: Task\n", tmp_path / "b.yaml") == first
