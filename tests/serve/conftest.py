"""Fixtures for the server and client tests: a state database applied from real manifests (providers
behind the stub OpenAI server), a real uvicorn server on 127.0.0.1, and the CLI in other processes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.conftest import REPO
from tests.stub_openai import StubServer

API_KEY = "sk-serve-test-SECRET-0123456789abcdef"
KEY_ENV = "SERVE_API_KEY"

SCHEMA = """
    response_schema:
      type: object
      properties:
        category: {type: string, enum: [bug, feature, question]}
        confidence: {type: integer, minimum: 0, maximum: 100}
      required: [category, confidence]
      additionalProperties: false"""

MANIFESTS = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: stub}
spec:
  type: openai
  base_url: "BASE"
  api_key: {from_env: SERVE_API_KEY}
---
apiVersion: reconciler/v1
kind: Provider
metadata: {name: spare}
spec: {type: openai, base_url: "BASE", is_active: false}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: classifier, labels: {team: support}}
spec:
  provider: stub
  model_name: gpt-4o-mini
  system_prompt: PROMPT
  temperature: 0.0
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: dormant}
spec: {provider: stub, model_name: gpt-4o-mini, is_active: false}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: loner}
spec: {provider: spare, model_name: gpt-4o-mini}
---
apiVersion: reconciler/v1
kind: Task
metadata: {name: classify}
spec:""" + SCHEMA + """
---
apiVersion: reconciler/v1
kind: Task
metadata: {name: triage}
spec:""" + SCHEMA + """
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: classifier-classify}
spec: {agent: classifier, task: classify}
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: dormant-classify}
spec: {agent: dormant, task: classify}
"""

RUN = """
apiVersion: reconciler/v1
kind: Run
metadata: {name: NAME}
spec:
  assignment: classifier-classify
  prompt_template: "Message: {text}"
  expected: category
  concurrency: 2
  inputs:
    - {text: "The app crashes on login", category: bug}
    - {text: "Please add dark mode", category: feature}
    - {text: "How do I reset my password?", category: question}
    - {text: "Export is broken", category: bug}
"""


def classify(request: dict[str, Any], n: int) -> dict[str, Any]:
    """The stub's answer: a keyword classifier over the last user message."""
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    text = str(users[-1]["content"]).lower() if users else ""
    category = "question" if "?" in text else "feature" if "add" in text else "bug"
    return {"category": category, "confidence": 80}


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(classify) as server:
        yield server


@pytest.fixture
def no_experiments() -> Iterator[None]:
    """The server as in a build without the Experiment kind."""
    from reconciler.serve import experiments

    experiments.register(None)
    yield
    experiments.reset()


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {KEY_ENV: API_KEY, "RECONCILER_SECRET_KEY": Fernet.generate_key().decode()}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@dataclass
class State:
    """A database applied from MANIFESTS (providers behind ``stub``), and ways to change it."""

    url: str
    root: Path
    base_url: str
    env: dict[str, str]

    def write(self, prompt: str = "Classify the message.", extra: str = "") -> Path:
        text = MANIFESTS.replace("BASE", self.base_url).replace("PROMPT", json.dumps(prompt)) + extra
        (self.root / "all.yaml").write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return self.root

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The real command line in another process (as another user's `reconciler apply` would be)."""
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", *args, "--db", self.url], check=False, env=env, capture_output=True, text=True, timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"reconciler {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def apply(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli("apply", str(self.root), "--auto-approve", *extra)

    def run_manifest(self, name: str) -> Path:
        path = self.root.parent / f"run-{name}.yaml"
        path.write_text(textwrap.dedent(RUN.replace("NAME", name)).lstrip("\n"), encoding="utf-8")
        return path


def _new_state(url: str, root: Path, base_url: str, env: dict[str, str], validate: bool = True) -> State:
    root.mkdir(parents=True)
    s = State(url, root, base_url, env)
    s.write()
    s.apply(*(() if validate else ("--no-validate",)))
    return s


@pytest.fixture
def state(db_url: str, tmp_path: Path, stub: StubServer, secret_env: dict[str, str]) -> State:
    """A fresh database per test, on each backend: for tests that change it."""
    return _new_state(db_url, tmp_path / "manifests", stub.base_url, secret_env)


@pytest.fixture
def sqlite_state(sqlite_url: str, tmp_path: Path, stub: StubServer, secret_env: dict[str, str]) -> State:
    return _new_state(sqlite_url, tmp_path / "manifests", stub.base_url, secret_env)


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    """One SQLite database per module, with the run ``sample`` finished: for tests that only read."""
    tmp = tmp_path_factory.mktemp("shared")
    env = {KEY_ENV: API_KEY, "RECONCILER_SECRET_KEY": Fernet.generate_key().decode()}
    with StubServer(classify) as server:
        s = _new_state(f"sqlite:///{tmp / 'state.db'}", tmp / "manifests", server.base_url, env)
        s.cli("run", str(s.run_manifest("sample")))
        yield s


class LiveServer:
    """``create_app`` under a real uvicorn server on 127.0.0.1 (a thread of this process)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as `reconciler serve` does
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        loop = getattr(self.app.state, "loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.app.state.hub.close)
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kw)


@pytest.fixture
def live() -> Iterator[Callable[..., LiveServer]]:
    """live(db=URL, **settings) -> a started LiveServer, stopped at the end of the test."""
    from reconciler.serve.app import ServeSettings, create_app

    started: list[LiveServer] = []

    def start(db: str, **settings: Any) -> LiveServer:
        settings.setdefault("poll_interval", 0.1)
        server = LiveServer(create_app(ServeSettings(db=db, **settings))).__enter__()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.__exit__()


class EventReader:
    """Reads an SSE stream on a thread; ``wait(pred)`` returns the first event matching."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.ready = threading.Event()
        self._cond = threading.Condition()
        self._stop = False
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=None))
        self._thread = threading.Thread(target=self._read, args=(url, headers or {}), daemon=True)
        self._thread.start()
        if not self.ready.wait(20):
            raise RuntimeError("no ready event from the server")

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                name, data, ident = None, [], None
                for line in response.iter_lines():
                    if self._stop:
                        return
                    self.raw.append(line)
                    if line.startswith("id:"):
                        ident = int(line[3:].strip())
                    elif line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "":
                        if name == "ready":
                            self.ready.set()
                        elif name and data:
                            with self._cond:
                                self.events.append({"_event": name, "_id": ident, "_at": time.monotonic(), **json.loads("\n".join(data))})
                                self._cond.notify_all()
                        name, data, ident = None, [], None
        except httpx.HTTPError:
            pass
        finally:
            with self._cond:
                self._stop = True
                self._cond.notify_all()

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or self._stop:
                    raise AssertionError(f"no matching event within {timeout} s; got {[e['_event'] for e in self.events]}")
                self._cond.wait(left)

    def close(self) -> None:
        self._stop = True
        self._client.close()


@pytest.fixture
def events() -> Iterator[Callable[..., EventReader]]:
    readers: list[EventReader] = []

    def open_(url: str, headers: dict[str, str] | None = None) -> EventReader:
        reader = EventReader(url, headers)
        readers.append(reader)
        return reader

    yield open_
    for r in readers:
        r.close()


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
