"""Tests for the embedded llama.cpp server: the bundled model's cache (reconciler.llm.bundled_model),
the process supervisor (llamacpp_server), the shared servers (llamacpp_shared) and the child
(llamacpp_child).

These start a real llama.cpp child process with the bundled Gemma 3 270M model
(~2 s startup, ~400 MB RSS).  Marked ``llm`` so they can be deselected with
``-m "not llm"``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reconciler.llm import llamacpp_shared
from reconciler.llm.bundled_model import default_model_path
from reconciler.llm.llamacpp_server import LlamaCppServer
from reconciler.llm.llamacpp_shared import ensure_server, stop_shared_servers

ROOT = str(Path(__file__).resolve().parents[2])

pytestmark = pytest.mark.llm

SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["bug", "feature", "question", "discussion"]},
        "confidence": {"type": "number"},
    },
    "required": ["category", "confidence"],
    "additionalProperties": False,
}


def _classify_payload(text: str) -> dict:
    return {
        "messages": [
            {
                "role": "system",
                "content": "Classify the GitHub issue as bug, feature, question or discussion. "
                "Reply with JSON only.",
            },
            {"role": "user", "content": text},
        ],
        "temperature": 0,
        "max_tokens": 96,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": SCHEMA},
        },
    }


def _get(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server():
    srv = LlamaCppServer(n_ctx=1024, n_parallel=1)
    srv.start(timeout=120)
    yield srv
    srv.stop()


def test_default_model_path_is_cached():
    path = default_model_path()
    assert path.is_file()
    assert path.stat().st_size > 200_000_000
    t0 = time.perf_counter()
    assert default_model_path() == path
    assert time.perf_counter() - t0 < 0.5  # stamp hit: no re-hash


def test_truncated_model_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path))
    path = default_model_path()
    full_size = path.stat().st_size
    assert path.parent == tmp_path / "models"
    os.truncate(path, 1234)
    assert default_model_path() == path
    assert path.stat().st_size == full_size
    assert not list(path.parent.glob("*.tmp"))


def test_concurrent_processes_assemble_the_model_once(tmp_path):
    """Two processes asking for the model in an empty cache: one assembles it under the file lock,
    the other waits and takes that file (a second assembly would have replaced it: another inode)."""
    script = textwrap.dedent(
        """
        import sys
        from reconciler.llm.bundled_model import default_model_path
        sys.stdin.readline()  # start together
        path = default_model_path()
        print(path, path.stat().st_ino, flush=True)
        """
    )
    env = dict(os.environ, RECONCILER_CACHE_DIR=str(tmp_path), PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] and outs[0][0] == str(tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf")
    assert int(outs[0][1]) == (tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf").stat().st_ino
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")) == [
        "gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m.gguf.verified",
    ]


def test_base_url_and_models(server):
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.base_url.endswith("/v1")
    assert server.pid and server.is_running()
    models = _get(server.base_url + "/models")
    assert models["data"]


def test_bundled_model_gets_gemmas_chat_format(server):
    """Its GGUF has no chat template (llama.cpp would fall back to ChatML): we give it Gemma's, which
    has no system role, so the system prompt opens the first user turn."""
    messages = [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "Message: a"},
        {"role": "assistant", "content": '{"category": "bug"}'},
        {"role": "user", "content": "Message: b"},
    ]
    prompt = server.request("POST", "/apply-template", {"messages": messages})["prompt"]
    assert prompt == (
        "<start_of_turn>user\nClassify.\n\nMessage: a<end_of_turn>\n"
        '<start_of_turn>model\n{"category": "bug"}<end_of_turn>\n'
        "<start_of_turn>user\nMessage: b<end_of_turn>\n<start_of_turn>model\n"
    )


def test_json_schema_classification(server):
    jsonschema = pytest.importorskip("jsonschema")
    resp = server.request(
        "POST",
        "/v1/chat/completions",
        _classify_payload("The app crashes with a segfault when I click save."),
    )
    content = resp["choices"][0]["message"]["content"]
    data = json.loads(content)
    jsonschema.validate(data, SCHEMA)


def test_sigkill_gives_clear_error_and_restart_works(server):
    old_pid = server.pid
    old_url = server.base_url
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.is_running()

    with pytest.raises(RuntimeError, match="SIGKILL"):
        server.request("POST", "/v1/chat/completions", _classify_payload("hello"))
    with pytest.raises(RuntimeError, match="SIGKILL"):
        server.check_alive()
    # Plain HTTP clients just see a refused connection.
    with pytest.raises((urllib.error.URLError, OSError)):
        _get(old_url + "/models", timeout=2)

    new_url = server.start()
    assert server.pid != old_pid
    assert new_url == old_url  # same port reused when free
    assert _get(new_url + "/models")["data"]
    resp = server.request("POST", "/v1/chat/completions", _classify_payload("Add dark mode"))
    json.loads(resp["choices"][0]["message"]["content"])


def test_startup_failure_reports_child_output(tmp_path):
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a gguf file")
    srv = LlamaCppServer(bogus)
    with pytest.raises(RuntimeError, match="during startup") as excinfo:
        srv.start(timeout=60)
    assert "Last output lines" in str(excinfo.value)
    assert not srv.is_running()


def test_ensure_server_is_shared_and_restarts():
    try:
        url1 = ensure_server()
        url2 = ensure_server()
        assert url1 == url2
        (srv,) = llamacpp_shared._shared.values()
        os.kill(srv.pid, signal.SIGKILL)
        srv._proc.wait(timeout=10)
        url3 = ensure_server()  # transparently restarted
        assert srv.is_running()
        assert _get(url3 + "/models")["data"]
    finally:
        stop_shared_servers()
    assert not llamacpp_shared._shared


def test_child_exits_when_parent_dies(tmp_path):
    """The child watches its stdin: if the owning process dies, the server goes away."""
    script = textwrap.dedent(
        """
        import sys, time
        from reconciler.llm.llamacpp_server import LlamaCppServer
        srv = LlamaCppServer(n_ctx=512, n_parallel=1)
        srv.start()
        print(srv.pid, flush=True)
        time.sleep(600)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        child_pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                break
            # reap if it became our zombie (it won't: it is reparented to init)
            time.sleep(0.1)
        else:
            os.kill(child_pid, signal.SIGKILL)
            pytest.fail("llama.cpp child outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_pydantic_ai_native_output(server):
    pytest.importorskip("pydantic_ai")
    from typing import Literal

    from pydantic import BaseModel, Field
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models import override_allow_model_requests
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    class Classification(BaseModel):
        category: Literal["bug", "feature", "question", "discussion"]
        confidence: int = Field(ge=0, le=100)

    server.start()  # no-op unless an earlier test left it dead
    model = OpenAIChatModel(
        "gemma-3-270m", provider=OpenAIProvider(base_url=server.base_url, api_key="x")
    )
    agent = Agent(
        model, output_type=NativeOutput(Classification), instructions="Classify the GitHub issue."
    )
    # tests/conftest.py blocks real model requests for unit tests; this one is deliberate.
    with override_allow_model_requests(True):
        result = agent.run_sync(
            "Login fails with HTTP 500 after upgrading.",
            model_settings={"temperature": 0, "max_tokens": 64},
        )
    assert isinstance(result.output, Classification)
