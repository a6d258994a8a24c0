"""A plan on SQLite reads the state with the standard library's ``sqlite3``: it imports neither
SQLAlchemy nor Alembic (nor, as every plan, pydantic-ai), and with a warm parse cache it imports
neither pydantic nor the manifest models (a hit is read back as records), so it builds no
validator or serializer. Each command runs in a fresh interpreter (``sys.modules``
of this one holds everything the other tests imported); what it prints and how it exits must be
what the SQLAlchemy read gives: a saved plan applies (its state fingerprint is the one apply
reads), and a database that cannot be read is reported as before."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import StateError
from reconciler.state.snapshot import StateSnapshot, load_state

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("sqlalchemy", "alembic", "pydantic_ai", "psycopg")

# runs one command as `reconciler` would, then reports what it left in sys.modules
PROBE = """
import json, sys
from reconciler.cli import main
try:
    main(sys.argv[2:])
    code = 0
except SystemExit as exc:
    code = exc.code
validated = [m for m in ("pydantic", "pydantic_core", "reconciler.kinds.specs", "reconciler.manifests.models") if m in sys.modules]
import pydantic

def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)

ours = [c for c in subclasses(pydantic.BaseModel) if c.__module__.startswith("reconciler")]
built = sorted({c.__name__ for c in ours if c.__dict__.get("__pydantic_complete__")})
heavy = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1].split(","))
with open(__import__("os").environ["PROBE_OUT"], "w") as fh:
    json.dump({"code": code, "heavy": heavy, "built": built, "validated": validated, "behaviour": "reconciler.plan.behaviour" in sys.modules,
               "ports": "reconciler.llm.ports" in sys.modules, "cryptography": "cryptography" in sys.modules,
               "writer": "reconciler.apply" in sys.modules,
               "commands": sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("reconciler.cli."))}, fh)
"""


def _probe(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = tmp_path / "probe.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROBE_OUT": str(out), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", PROBE, ",".join(HEAVY), *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.exists(), proc.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    result["stdout"], result["stderr"] = proc.stdout, proc.stderr
    return result


@pytest.fixture
def applied(cli_run, tmp_path: Path, quick_start: Path) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    code, _, err = cli_run("apply", str(quick_start), "--db", url, "--auto-approve", "--no-validate")
    assert code == 0, err
    return quick_start, url


def test_a_no_change_plan_on_sqlite_imports_no_sqlalchemy_and_builds_no_validator(applied: tuple[Path, str], tmp_path: Path) -> None:
    root, url = applied
    result = _probe(tmp_path, "plan", str(root), "--db", url, "--detailed-exitcode")
    assert result["code"] == 0 and "No changes." in result["stdout"], result["stderr"]
    assert result["heavy"] == [] and result["built"] == [] and not result["behaviour"]
    assert result["validated"] == []  # every file was a hit: no pydantic, no kinds.specs, no manifests.models
    assert not result["ports"]  # the LLM ports' dataclasses (5 ms to build) only where a run or an evaluation needs them
    assert not result["cryptography"]  # 13 ms: the stored API key's signature is checked with the standard library
    assert result["commands"] == ["core", "options"]  # the other commands' modules (about 5 ms) stay unimported
    assert not result["writer"]  # apply's executor and the SQLite writer: only where something is written
    result = _probe(tmp_path, "validate", str(root))
    assert result["code"] == 0 and result["heavy"] == [] and result["built"] == [] and result["validated"] == [], result["stderr"]
    result = _probe(tmp_path, "plan", str(root), "--db", url, "--detailed-exitcode", env={"RECONCILER_NO_CACHE": "1"})
    assert result["code"] == 0 and "No changes." in result["stdout"], result["stderr"]
    assert result["validated"] == ["pydantic", "pydantic_core", "reconciler.kinds.specs", "reconciler.manifests.models"]  # what the probe sees


def test_a_plan_with_changes_saved_without_sqlalchemy_applies(applied: tuple[Path, str], tmp_path: Path, cli_run) -> None:
    root, url = applied
    agents = root / "agents.yaml"
    agents.write_text(agents.read_text().replace("temperature: 0.0", "temperature: 0.3", 1), encoding="utf-8")
    saved = tmp_path / "plan.json"
    result = _probe(tmp_path, "plan", str(root), "--db", url, "--detailed-exitcode", "--out", str(saved))
    assert result["code"] == 2 and "temperature 0.0 → 0.3" in result["stdout"], result["stdout"] + result["stderr"]
    assert result["heavy"] == [] and not result["behaviour"]
    as_json = _probe(tmp_path, "plan", str(root), "--db", url, "--json")
    assert as_json["code"] == 0 and as_json["heavy"] == []
    planned = json.loads(as_json["stdout"])
    assert planned["state_fingerprint"] == json.loads(saved.read_text())["state_fingerprint"] and planned["summary"]["update"] == 1
    code, out, err = cli_run("apply", str(saved), "--db", f"{url}?timeout=30", "--no-validate")  # SQLAlchemy reads the state it is checked against
    assert code == 0, out + err
    code, out, _ = cli_run("plan", str(root), "--db", url, "--detailed-exitcode")
    assert code == 0 and "No changes." in out


@pytest.mark.postgres
def test_a_plan_on_postgresql_still_reads_through_sqlalchemy(cli_run, tmp_path: Path, pg_url: str, quick_start: Path) -> None:
    code, _, err = cli_run("apply", str(quick_start), "--db", pg_url, "--auto-approve", "--no-validate")
    assert code == 0, err
    result = _probe(tmp_path, "plan", str(quick_start), "--db", pg_url, "--detailed-exitcode")
    assert result["code"] == 0 and "No changes." in result["stdout"], result["stderr"]
    assert "sqlalchemy" in result["heavy"] and "pydantic_ai" not in result["heavy"]


def _same_as_the_engine_reads_it(path: Path) -> StateSnapshot | StateError:
    """``load_state`` of ``path`` through sqlite3 and through an engine (a URL with an option
    takes the engine's way): the same snapshot, or the same error (but for the URL it names)."""
    plain, options = f"sqlite:///{path}", f"sqlite:///{path}?timeout=30"
    found: list[Any] = []
    for url in (plain, options):
        try:
            found.append(load_state(url))
        except StateError as exc:
            found.append(exc)
    fast, engine = found
    if isinstance(engine, StateError):
        assert isinstance(fast, StateError), fast
        theirs = [(p.message.replace(options, plain), p.hint) for p in engine.problems]
        assert [(p.message, p.hint) for p in fast.problems] == theirs
        return fast
    assert isinstance(fast, StateSnapshot) and fast.fingerprint == engine.fingerprint and fast.resources == engine.resources
    return fast


def test_databases_that_cannot_be_read_are_reported_as_the_engine_reports_them(applied: tuple[Path, str], tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "state.db"
    assert _same_as_the_engine_reads_it(missing) == StateSnapshot.empty() and not missing.parent.exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert _same_as_the_engine_reads_it(empty) == StateSnapshot.empty() and empty.read_bytes() == b""
    error = _same_as_the_engine_reads_it(tmp_path)  # a directory
    assert isinstance(error, StateError) and "unable to open database file" in error.problems[0].message
    text = tmp_path / "notes.db"
    text.write_text("not sqlite at all, just text that is long enough to have a header" * 10)
    error = _same_as_the_engine_reads_it(text)
    assert isinstance(error, StateError) and error.problems[0].hint == "--db points at a file that is not a SQLite database"
    _, url = applied
    db = Path(url.removeprefix("sqlite:///"))
    assert isinstance(_same_as_the_engine_reads_it(db), StateSnapshot)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    error = _same_as_the_engine_reads_it(db)
    assert isinstance(error, StateError) and "has schema revision '9999', which this reconciler does not know" in error.problems[0].message


def _models(value: Any) -> Any:
    """Every pydantic model or record in ``value``, nested ones included, in the same order for both."""
    from pydantic import BaseModel

    from reconciler.kinds.base import Record

    if isinstance(value, BaseModel | Record):
        yield value
        for v in value.__dict__.values():
            yield from _models(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _models(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _models(v)


def test_plain_dump_is_model_dump_for_every_manifest_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``plain_dump`` of the records a plan reads (made after validation, and rebuilt from the
    parse cache without validation) is ``model_dump`` of the models that validated them, nested
    models, NULLs and odd values included; and ``plain_dump`` of a model is its ``model_dump``."""
    from reconciler.kinds.base import Record, plain_dump
    from reconciler.manifests.loader import load_manifests
    from reconciler.manifests.models import MANIFEST_MODELS

    root = tmp_path / "odd"
    root.mkdir()
    (root / "odd.yaml").write_text(
        """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: limited}
spec: {type: openai, api_key: {from_file: key.txt}, rate_limit: {requests_per_minute: 5}}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: priced}
spec:
  provider: limited
  model_name: m
  max_tokens: null
  prices: {input_per_mtok: 0.5, output_per_mtok: 2}
  examples:
    - {input: "a", output: {label: null, scores: [1, null, 2.5], nested: {"k": [true]}}}
    - {input: "b", output: "plain"}
""",
        encoding="utf-8",
    )
    (root / "key.txt").write_text("sk-not-used\n", encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-not-used")
    checked = 0
    for source in (root, REPO / "manifests", REPO / "examples" / "ollama-and-openai"):
        fresh = load_manifests([str(source)])
        cached = load_manifests([str(source)])
        for validated, rebuilt in zip(fresh.manifests, cached.manifests, strict=True):
            model = MANIFEST_MODELS[validated.kind].model_validate(validated.raw.data).spec
            trios = zip(_models(model), _models(validated.spec), _models(rebuilt.spec), strict=True)
            for a, made, read in trios:
                assert isinstance(made, Record) and isinstance(read, Record) and made == read
                assert made.model == read.model == type(a).__name__
                for exclude_none in (False, True):
                    expected = a.model_dump(exclude_none=exclude_none)
                    assert plain_dump(a, exclude_none=exclude_none) == expected
                    assert json.dumps(plain_dump(made, exclude_none=exclude_none)) == json.dumps(expected)
                    assert json.dumps(plain_dump(read, exclude_none=exclude_none)) == json.dumps(expected)
                checked += 1
    assert checked > 40


def test_drift_on_sqlite_reads_the_state_without_sqlalchemy(applied: tuple[Path, str], tmp_path: Path) -> None:
    """`drift` (run by cron and CI) reads the state as plan does; drift made outside is still found."""
    root, url = applied
    result = _probe(tmp_path, "drift", str(root), "--db", url, "--detailed-exitcode")
    assert result["code"] == 0 and result["heavy"] == [], result["stderr"]
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert conn.execute("UPDATE agent_configs SET temperature = temperature + 0.5").rowcount > 0
    result = _probe(tmp_path, "drift", "--db", url, "--json", "--detailed-exitcode")
    assert result["code"] == 2 and result["heavy"] == [], result["stderr"]
    assert "temperature" in result["stdout"]


def test_every_command_is_found_in_the_module_the_lazy_group_names() -> None:
    """``cli.COMMAND_MODULES`` is what the command modules register: a command missing from it
    would vanish from every command line but ``--help``'s, one named wrongly would not be found."""
    import click

    from reconciler import cli

    listed = cli.cli.list_commands(click.Context(cli.cli))  # imports every command module
    assert listed == sorted(cli.COMMAND_MODULES)
    for name, command in cli.cli.commands.items():
        assert command.callback is not None and command.callback.__module__ == f"reconciler.cli.{cli.COMMAND_MODULES[name]}", name
        summary = cli.COMMANDS[name][1]
        assert command.get_short_help_str(limit=10_000) == summary, f"cli.COMMANDS[{name!r}] must hold the first sentence of its docstring"


@pytest.mark.parametrize("width", [40, 80, 100, 250])
def test_help_lists_the_commands_as_their_own_docstrings_would(width: int) -> None:
    """``--help`` takes the summaries from ``cli.COMMANDS`` instead of importing every command
    module; at any terminal width it prints what listing the imported commands prints."""
    import click

    from reconciler import cli

    cli.cli.list_commands(click.Context(cli.cli))  # imports every command module
    ctx = click.Context(cli.cli, terminal_width=width)
    imported, summaries = click.HelpFormatter(width=width), click.HelpFormatter(width=width)
    click.Group.format_commands(cli.cli, ctx, imported)
    cli._LazyGroup("reconciler").format_commands(ctx, summaries)  # a group with no command imported
    assert summaries.getvalue() == imported.getvalue() and "validate" in imported.getvalue()


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    result = _probe(tmp_path, "--help")
    assert result["code"] == 0 and result["commands"] == [], result["stderr"]
    for name in ("validate", "plan", "apply", "run", "serve", "worker"):
        assert f"  {name} " in result["stdout"]
