"""Parsing ahead on the second core (manifests/parseahead.py): a forked child parses the last files
the cache misses into the cache while this process parses the first ones. Whatever the child does,
the result is that of a serial read: the same manifests, the same problems in the same order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.manifests import parseahead
from tests.conftest import REPO

AGENT = """
apiVersion: reconciler/v1
kind: Agent
metadata: {{name: agent-{i}}}
spec: {{provider: local, model_name: m, system_prompt: "{prompt}", temperature: {t}}}
"""
PROVIDER = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: local}
spec: {type: llamacpp}
"""


def _files(root: Path, broken: set[int] = frozenset()) -> Path:  # type: ignore[assignment]
    """Six files of agents, of growing size; a file in ``broken`` has an out-of-range temperature."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a-provider.yaml").write_text(PROVIDER)
    for f in range(6):
        docs = [AGENT.format(i=f * 100 + i, prompt="p" * (20 * (f + 1)), t=9.5 if f in broken and i == 3 else 0.2) for i in range(10 * (f + 1))]
        (root / f"b-agents-{f}.yaml").write_text("---".join(docs))
    return root


def _child_script(root: Path) -> str:
    """In a fresh process (no threads of pytest's): load the files with parse-ahead, report what the
    parent read from the cache and what the child stored."""
    return f"""
import json, os
from reconciler.errors import ReconcilerError
from reconciler.kinds.base import plain_dump
from reconciler.manifests import loader, parseahead
from reconciler.manifests.models import MANIFEST_MODELS
made = []
real = parseahead.parse_ahead
built = []  # the validators that exist once the child is forked (before this process parsed anything)
def spy(found, cache, parse):
    ahead = real(found, cache, parse)
    made.append(None if ahead is None else ahead.first)
    built.append(sorted(k for k, m in MANIFEST_MODELS.items() if m.__pydantic_complete__))
    return ahead
parseahead.parse_ahead = spy
cache = loader.open_cache(loader.cache_salt())
try:
    ms = loader.load_manifests([{str(root)!r}], cache=cache)
    out = {{"manifests": [[m.kind, m.name, str(m.location), plain_dump(m.spec)] for m in ms.manifests], "problems": []}}
except ReconcilerError as exc:
    out = {{"manifests": [], "problems": [p.render() for p in exc.problems]}}
out.update(first=made, hits=cache.hits, stored=cache.stored, built=built)
print(json.dumps(out))
"""


def _load(root: Path, cache_dir: Path, processes: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECONCILER_CACHE_DIR": str(cache_dir), parseahead.ENV: processes}
    proc = subprocess.run([sys.executable, "-c", _child_script(root)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_parsing_ahead_gives_what_a_serial_read_gives(tmp_path: Path) -> None:
    root = _files(tmp_path / "m")
    serial = _load(root, tmp_path / "c1", "1")
    ahead = _load(root, tmp_path / "c2", "2")
    assert serial["first"] == [None] and serial["stored"] == 7 and serial["hits"] == 0
    (first,) = ahead["first"]
    assert 1 < first < 7  # the child took the last files: about half the bytes, the largest last
    assert ahead["manifests"] == serial["manifests"]
    # the child's files came from the cache it filled; this process stored only its own
    assert ahead["hits"] == 7 - first and ahead["stored"] == first
    # set up before the fork, once for both: the validator of the kind both sides start with (the
    # provider's file is this process's alone: its validator is left to it)
    assert ahead["built"] == [["Agent"]] and serial["built"] == [[]]
    again = _load(root, tmp_path / "c2", "2")  # everything cached now: nothing to parse ahead
    assert again["first"] == [None] and again["hits"] == 7 and again["manifests"] == serial["manifests"]


def test_a_problem_in_the_childs_files_is_reported_as_a_serial_read_reports_it(tmp_path: Path) -> None:
    root = _files(tmp_path / "m", broken={1, 5})  # one file on each side
    serial = _load(root, tmp_path / "c1", "1")
    ahead = _load(root, tmp_path / "c2", "2")
    assert serial["problems"] and ahead["problems"] == serial["problems"]
    assert any("b-agents-5.yaml" in p and "temperature" in p for p in ahead["problems"])
    assert ahead["first"] != [None]


def test_a_child_that_dies_leaves_the_files_to_this_process(tmp_path: Path) -> None:
    """The child is killed before it stores anything: its files are parsed here, nothing is lost."""
    root = _files(tmp_path / "m")
    script = _child_script(root).replace("ahead = real(found, cache, parse)", "ahead = real(found, cache, lambda p, d: os._exit(9))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECONCILER_CACHE_DIR": str(tmp_path / "c"), parseahead.ENV: "2"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["first"] != [None] and out["hits"] == 0 and out["stored"] == 7
    assert out["manifests"] == _load(root, tmp_path / "c1", "1")["manifests"]


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"apiVersion: reconciler/v1\nkind: Agent\nmetadata: {name: a}\n---\nkind: Task\n", "Agent"),
        (b"kind: 'Task'\r\napiVersion: reconciler/v1\n", "Task"),
        (b"# a comment\n---\nkind:   Provider", "Provider"),
        (b"apiVersion: reconciler/v1\nspec:\n  kind: Agent\n", ""),  # not at a line's start: not a document's kind
        (b"{kind: Agent}\n", ""),  # flow style: left to the parse
    ],
)
def test_the_first_kind_of_a_file(content: bytes, kind: str) -> None:
    assert parseahead._first_kind(content) == kind


def _schemas(prepare: bool) -> dict[str, str]:
    """The manifest models' core schemas in a fresh process: built by ``_prepare`` or by a first validation."""
    script = f"""
import json, re
from reconciler.manifests import parseahead
from reconciler.manifests.models import MANIFEST_MODELS
if {prepare!r}:
    parseahead._prepare(set(MANIFEST_MODELS))
else:
    for model in MANIFEST_MODELS.values():
        try:
            model.model_validate({{}})
        except Exception:
            pass
ids = lambda text: re.sub(r":[0-9]{{6,}}| at 0x[0-9a-f]+", "", text)  # object ids differ between processes
print(json.dumps({{k: ids(repr(m.__pydantic_core_schema__)) for k, m in MANIFEST_MODELS.items()}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_validators_built_before_the_fork_are_those_a_first_validation_builds() -> None:
    prepared, validated = _schemas(True), _schemas(False)
    assert set(prepared) == {"Provider", "Task", "Agent", "Assignment", "Run", "Experiment"}
    assert prepared == validated


@pytest.mark.parametrize(
    ("setting", "runnable", "load", "miss_bytes", "misses", "wanted"),
    [
        ("1", 1, 0.0, 10 << 20, 12, False),  # turned off
        ("2", 5, 5.0, 10, 2, True),  # forced, whatever the load and size
        ("", 1, 1.9, 10 << 20, 12, True),  # only this process runs now (the minute before was busy)
        ("", 2, 0.0, 10 << 20, 12, False),  # another task runs on the other core: the child would only compete
        ("", None, 0.3, 10 << 20, 12, True),  # no /proc: the 1-minute load says a core is idle
        ("", None, 1.5, 10 << 20, 12, False),
        ("", 1, 0.0, parseahead.MIN_BYTES - 1, 12, False),  # too little to be worth a fork
        ("2", 1, 0.0, 10 << 20, 1, False),  # one file: nothing to split
    ],
)
def test_when_it_forks(
    monkeypatch: pytest.MonkeyPatch, setting: str, runnable: int | None, load: float, miss_bytes: int, misses: int, wanted: bool
) -> None:
    monkeypatch.setenv(parseahead.ENV, setting)
    monkeypatch.setattr(parseahead, "_runnable", lambda: runnable)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert parseahead._wanted(miss_bytes, misses) is wanted


def test_the_runnable_count_is_read_from_proc() -> None:
    if not os.path.exists("/proc/loadavg"):
        pytest.skip("no /proc/loadavg here")
    runnable = parseahead._runnable()
    assert runnable is not None and runnable >= 1  # this process at least
