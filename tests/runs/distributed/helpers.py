"""Helpers for distributed-run tests: `reconciler worker --json` processes a test can SIGKILL or
SIGTERM, a stub model with a fixed latency that answers by the prompt, and run manifests."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from reconciler.state.tables import analysis_runs, run_chunks, run_results
from tests.runs.conftest import keyword_classifier
from tests.stub_openai import Reply

REPO = Path(__file__).resolve().parents[3]


def run_manifest(name: str, count: int, concurrency: int = 4) -> str:
    inputs = "\n".join(
        f'    - {{text: "message {i}{" please add" if i % 3 == 1 else "?" if i % 3 == 2 else ""}", '
        f'category: {("bug", "feature", "question")[i % 3]}}}'
        for i in range(count)
    )
    return (
        f"---\napiVersion: reconciler/v1\nkind: Run\nmetadata: {{name: {name}}}\nspec:\n  assignment: classifier-classify\n"
        f'  prompt_template: "Message: {{text}}"\n  expected: category\n  concurrency: {concurrency}\n  inputs:\n{inputs}\n'
    )


def prompt_of(request: dict[str, Any]) -> str:
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


def slow_classifier(latency: float) -> Callable[[dict[str, Any], int], dict[str, Any] | Reply]:
    """Answers by the prompt's words after ``latency`` seconds (the same answer for the same prompt)."""

    def behaviour(request: dict[str, Any], n: int) -> dict[str, Any] | Reply:
        if "messages" not in request:  # its sender was killed before the body was sent
            return Reply(400)
        time.sleep(latency)
        return keyword_classifier(prompt_of(request))

    return behaviour


def worker_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "RECONCILER_RETRY_BASE_SECONDS": "0.01"}


class WorkerProcess:
    """``reconciler worker --json`` in a subprocess; its events are read as they come."""

    def __init__(self, db: str, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "worker", "--db", db, "--json", *args],
            cwd=cwd, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.identity = f"{socket.gethostname()}:{self.proc.pid}"
        self.killed = False  # by the test (SIGKILL)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._errors: list[str] = []
        self._readers = [threading.Thread(target=self._read, daemon=True), threading.Thread(target=self._read_errors, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        self._errors.extend(self.proc.stderr)  # read as it comes: a full pipe would stall the worker

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def drain(self) -> list[dict[str, Any]]:
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return self.seen

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"no matching event from {self.identity}; seen: {self.seen}; stderr: {self.kill()}")

    def _finish(self, timeout: float) -> str:
        """Once it has exited: every event read (stdout is the reader thread's alone), and its stderr."""
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        self.drain()
        return "".join(self._errors)

    def kill(self) -> str:
        if self.proc.poll() is None:
            self.killed = True
            self.proc.kill()
        return self._finish(30)

    def terminate(self, timeout: float = 60.0) -> tuple[int, str]:
        """SIGTERM; (exit code, stderr) once it has stopped."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        err = self._finish(timeout)
        return self.proc.returncode, err


@contextlib.contextmanager
def running_workers(db: str, cwd: Path, count: int, *args: str) -> Iterator[list[WorkerProcess]]:
    """``count`` workers for the block; after it each the block did not SIGKILL must stop cleanly on
    SIGTERM (exit 0), and none outlives it (killed if a check failed)."""
    workers = [WorkerProcess(db, cwd, *args) for _ in range(count)]
    try:
        yield workers
        for w in workers:
            if w.killed:
                continue
            code, err = w.terminate()
            assert code == 0, err
    finally:
        for w in workers:
            w.kill()


def engine_of(url: str) -> Engine:
    return create_engine(url)


def stored_by(engine: Engine, run: str) -> dict[str | None, int]:
    """How many results of ``run`` each worker stored."""
    r, c = analysis_runs.c, run_results.c
    with engine.connect() as conn:
        run_id = conn.execute(select(r.id).where(r.name == run)).scalar_one()
        rows = conn.execute(select(c.worker, func.count()).where(c.run_id == run_id).group_by(c.worker)).all()
    return dict(rows)


def results_of(engine: Engine, run: str) -> list[dict[str, Any]]:
    r, c = analysis_runs.c, run_results.c
    with engine.connect() as conn:
        run_id = conn.execute(select(r.id).where(r.name == run)).scalar_one()
        rows = conn.execute(select(run_results).where(c.run_id == run_id).order_by(c.item_index)).mappings().all()
    return [dict(row) for row in rows]


def chunks_of(engine: Engine, run: str) -> list[dict[str, Any]]:
    r, c = analysis_runs.c, run_chunks.c
    with engine.connect() as conn:
        run_id = conn.execute(select(r.id).where(r.name == run)).scalar_one()
        rows = conn.execute(select(run_chunks).where(c.run_id == run_id).order_by(c.chunk)).mappings().all()
    return [dict(row) for row in rows]


def wait_until(predicate: Callable[[], bool], timeout: float = 120.0, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(every)
