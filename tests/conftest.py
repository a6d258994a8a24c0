"""Shared fixtures: a database URL for each backend (SQLite file, real PostgreSQL), manifest
trees written on the fly, and a CLI runner that goes through the real entry point."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.pg_fixtures import pg_server, pg_url  # noqa: F401  (fixtures)

try:  # unit tests must never reach a real model by accident
    import pydantic_ai.models

    pydantic_ai.models.ALLOW_MODEL_REQUESTS = False
except ImportError:  # pragma: no cover
    pass

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in its own directory, so the default .reconciler/ state never leaks, and with
    its own parse cache (on, as for users: every test that reads manifests twice also checks that a
    cached parse gives what parsing gave)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for var in ("RECONCILER_DATABASE_URL", "RECONCILER_SECRET_KEY", "RECONCILER_SECRET_KEY_FILE", "RECONCILER_NO_CACHE"):
        monkeypatch.delenv(var, raising=False)
    import reconciler.state.db

    monkeypatch.setattr(reconciler.state.db, "_opened", None)  # the key file follows the database a test opened
    monkeypatch.setattr(reconciler.state.db, "_opened_file", None)
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "parse-cache"))
    return work


@pytest.fixture
def real_llm_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let this test's runs reach a local stub server (tests.stub_openai), retrying without long waits."""
    import pydantic_ai.models

    from reconciler.llm import ratelimit, registry

    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", True)
    monkeypatch.setattr(registry, "_default", None)
    monkeypatch.setattr(ratelimit, "_limiters", {})  # a hold one test's 429 set must not slow the next
    monkeypatch.setenv("RECONCILER_RETRY_BASE_SECONDS", "0.01")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The state database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


Writer = Callable[..., Path]


@pytest.fixture
def write_manifests(tmp_path: Path) -> Writer:
    """write_manifests({"a.yaml": "..."}) -> the directory, with dedented file contents."""

    def write(files: dict[str, str], directory: str = "manifests") -> Path:
        root = tmp_path / directory
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return root

    return write


@pytest.fixture
def quick_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the quick-start manifests (every kind) and a provider with a secret (from
    $OPENAI_API_KEY, set here) and a row name of its own."""
    import shutil

    root = tmp_path / "manifests"
    shutil.copytree(REPO / "manifests", root)
    (root / "hosted.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Provider\n"
        'metadata:\n  name: hosted\n  annotations: {reconciler/row-name: "Hosted (OpenAI)"}\n'
        "spec:\n  type: openai\n  api_key: {from_env: OPENAI_API_KEY}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    return root


@pytest.fixture
def cli_run() -> Callable[..., tuple[int, str, str]]:
    """Run the real entry point (``reconciler.cli.main``) in-process: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from reconciler.cli import main

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        runner = CliRunner()
        old = dict(os.environ)
        os.environ.update(env or {})
        try:
            with runner.isolation(input=input) as streams:
                try:
                    main(list(args))
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                out, err = streams[0].getvalue().decode(), streams[1].getvalue().decode()
        finally:
            os.environ.clear()
            os.environ.update(old)
        return code, out, err

    return run
