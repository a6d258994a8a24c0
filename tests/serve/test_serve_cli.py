"""`reconciler serve` as a user starts it: its own process, a port, a clean stop with streams open;
and the other commands never loading the web stack."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from tests.serve.conftest import State


def _env(state: State | None = None) -> dict[str, str]:
    return {**os.environ, **(state.env if state else {}), "PYTHONPATH": str(REPO)}


def _start(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "serve", "--port", "0", *args], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("Serving http://"), line + (proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split()[1].rstrip("/")


def test_serves_until_sigterm_even_with_event_streams_open(shared_state: State) -> None:
    proc, url = _start("--db", shared_state.url, env=_env(shared_state))
    try:
        assert [p["name"] for p in httpx.get(url + "/api/v1/providers", timeout=30).json()] == ["spare", "stub"]
        with httpx.Client(timeout=httpx.Timeout(30, read=None)) as client, client.stream("GET", url + "/api/v1/events") as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            rest = list(lines)  # the server ends the stream itself
            assert "event: ready" in rest
        proc.wait(timeout=20)
        assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
        assert time.monotonic() - started < 4  # ended by the server, not by uvicorn's 5 s shutdown timeout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_a_busy_port_is_a_clear_error(shared_state: State, cli_run: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = cli_run("serve", "--db", shared_state.url, "--port", str(taken.getsockname()[1]))
    assert code == 1 and "cannot listen on 127.0.0.1" in err and "choose another --port" in err


def test_a_public_address_with_a_token(shared_state: State) -> None:
    token = "cli-token-0123456789abcdef"
    proc, url = _start("--db", shared_state.url, "--host", "0.0.0.0", env={**_env(shared_state), "RECONCILER_SERVE_TOKEN": token})
    try:
        local = url.replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(local + "/api/v1/providers", timeout=30).status_code == 401
        assert httpx.get(local + "/api/v1/providers", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def test_other_commands_never_import_the_web_stack() -> None:
    script = (
        "import sys; from reconciler.cli import _register; _register();"
        "import json; print(json.dumps(sorted(m for m in ('starlette', 'uvicorn', 'jinja2', 'reconciler.serve', 'reconciler.client', 'pydantic_ai') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_help_lists_serve(cli_run: Any) -> None:
    code, out, _ = cli_run("serve", "--help")
    assert code == 0 and "--token" in out and "read-only" in out.lower()


@pytest.mark.slow
def test_the_benchmark_script_runs_end_to_end(tmp_path: Path) -> None:
    """bench/serve_bench.py at a small size writes its section (figures are not checked: not a timed test)."""
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## Core plan/apply\n\nkept as is\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "bench/serve_bench.py", "--resources", "100", "--requests", "20", "--calls", "5", "--rounds", "1", "--out", str(out)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert "## Core plan/apply\n\nkept as is\n" in text and "## Serve and client" in text
    assert "| `GET /api/v1/assignments` (a page of 100, 20 sequential requests) |" in text
