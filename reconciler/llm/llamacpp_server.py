"""The embedded llama.cpp server's process supervisor: ``LlamaCppServer`` runs the child
(``reconciler.llm.llamacpp_child``) and exposes llama.cpp's OpenAI-compatible HTTP API
(``/v1/chat/completions``, ``/v1/models``, ``/health`` ...) on ``127.0.0.1``. It always runs in a
separate process so that a native crash (segfault, abort, OOM kill) in llama.cpp can never take the
reconciler process down with it.

Public API::

    LlamaCppServer(model_path=None, *, host="127.0.0.1", port=None, n_ctx=2048,
                   n_parallel=DEFAULT_PARALLEL, n_threads=None, api_key=None,
                   extra_env=None, chat_template=None)
        .start(timeout=120) -> str     # base_url, e.g. "http://127.0.0.1:PORT/v1"
        .stop(timeout=10) -> None
        .base_url / .root_url / .pid / .port / .returncode / .is_running()
        .check_alive() -> None         # raises RuntimeError with child's stderr tail
        .request(method, path, payload=None, timeout=120) -> dict
        .stderr_tail(n=40) -> list[str]
        context manager: ``with LlamaCppServer() as srv: ...``

The bundled model file is ``bundled_model.default_model_path()``; the process-wide shared server is
``llamacpp_shared.ensure_server()``. This module imports only the standard library (and
``bundled_model``, which adds ``filelock``) at import time.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Self

from reconciler.llm.bundled_model import GEMMA_CHAT_TEMPLATE, default_model_path
from reconciler.llm.llamacpp_child import API_KEY_ENV, DEFAULT_N_CTX, DEFAULT_PARALLEL, READY_MARKER, default_threads

__all__ = ["DEFAULT_N_CTX", "DEFAULT_PARALLEL", "LlamaCppServer"]

_STDERR_TAIL_LINES = 200


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same semantics as the server's bind: TIME_WAIT leftovers don't count as "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _describe_returncode(rc: int | None) -> str:
    if rc is None:
        return "is still running"
    if rc < 0:
        try:
            return f"was killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


def _close_stdin(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()


class LlamaCppServer:
    """llama.cpp OpenAI-compatible server in a child process.

    ``n_ctx`` is the context window *per parallel slot*; the child allocates
    ``n_ctx * n_parallel`` tokens of KV cache.  ``port=None`` picks a free port (and
    tries to keep the same port when restarted, so a cached ``base_url`` stays valid).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        n_parallel: int = DEFAULT_PARALLEL,
        n_threads: int | None = None,
        api_key: str | None = None,
        extra_env: dict[str, str] | None = None,
        chat_template: str | None = None,
    ) -> None:
        self._model_path = str(model_path) if model_path is not None else None
        # None: the model's own template, except for the bundled model, which has none
        self.chat_template = chat_template if chat_template is not None or model_path is not None else GEMMA_CHAT_TEMPLATE
        self.host = host
        self._requested_port = port
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.n_threads = n_threads or default_threads()
        self.api_key = api_key
        self._extra_env = dict(extra_env or {})

        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._root_url: str | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._ready_url: str | None = None
        self._ready_event = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- properties ----------------------------------------------------------------

    @property
    def model_path(self) -> str:
        if self._model_path is None:
            self._model_path = str(default_model_path())
        return self._model_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    @property
    def root_url(self) -> str:
        if self._root_url is None:
            raise RuntimeError("llama.cpp server has not been started")
        return self._root_url

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.root_url + "/v1"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stderr_tail(self, n: int = 40) -> list[str]:
        return list(self._stderr)[-n:]

    # -- lifecycle -----------------------------------------------------------------

    def _pick_port(self) -> int:
        if self._requested_port is not None:
            return self._requested_port
        if self._port is not None and _port_is_free(self.host, self._port):
            return self._port  # keep base_url stable across restarts
        return _free_port(self.host)

    def _command(self, port: int) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "reconciler.llm.llamacpp_child",
            "--model",
            os.path.abspath(self.model_path),
            "--host",
            self.host,
            "--port",
            str(port),
            "--n-ctx",
            str(self.n_ctx),
            "--parallel",
            str(self.n_parallel),
            "--threads",
            str(self.n_threads),
        ]
        if self.chat_template:
            cmd += ["--chat-template", self.chat_template]
        return cmd

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
        env.update(self._extra_env)
        return env

    def _pump(self, stream: IO[bytes], is_stdout: bool) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if is_stdout and line.startswith(READY_MARKER + " "):
                    self._ready_url = line.split(" ", 1)[1].strip()
                    self._ready_event.set()
                    continue
                self._stderr.append(line)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                stream.close()

    def _probe(self, url: str) -> bool:
        req = urllib.request.Request(url + "/v1/models", headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _failure(self, what: str) -> RuntimeError:
        tail = "\n".join("    " + line for line in self.stderr_tail(25)) or "    <no output>"
        return RuntimeError(f"llama.cpp server child (pid {self.pid}, model {self._model_path}) {what}.\nLast output lines:\n{tail}")

    def start(self, timeout: float = 120) -> str:
        """Start the child (no-op if already running) and return :attr:`base_url`."""
        with self._lock:
            if self.is_running() and self._root_url is not None:
                return self.base_url
            self._cleanup_process()
            port = self._pick_port()
            self._stderr.clear()
            self._ready_url = None
            self._ready_event.clear()
            self._proc = subprocess.Popen(
                self._command(port),
                stdin=subprocess.PIPE,  # closing it (or parent death) stops the child
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env(),
                cwd=str(Path(__file__).resolve().parents[2]),
                close_fds=True,
            )
            self._threads = [
                threading.Thread(
                    target=self._pump,
                    args=(self._proc.stdout, True),
                    daemon=True,
                    name=f"llamacpp-stdout-{self._proc.pid}",
                ),
                threading.Thread(
                    target=self._pump,
                    args=(self._proc.stderr, False),
                    daemon=True,
                    name=f"llamacpp-stderr-{self._proc.pid}",
                ),
            ]
            for t in self._threads:
                t.start()

            deadline = time.monotonic() + timeout
            try:
                while True:
                    if self._proc.poll() is not None:
                        for t in self._threads:
                            t.join(timeout=2)
                        raise self._failure(f"{_describe_returncode(self._proc.returncode)} during startup")
                    if self._ready_event.is_set() and self._probe(self._ready_url or ""):
                        self._root_url = self._ready_url
                        self._port = port
                        return self.base_url
                    if time.monotonic() > deadline:
                        raise self._failure(f"did not become ready within {timeout:.0f}s")
                    self._ready_event.wait(0.1)
            except BaseException:
                self._cleanup_process()
                raise

    def _cleanup_process(self, timeout: float = 10) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _close_stdin(proc)  # graceful: child exits on stdin EOF
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        _close_stdin(proc)
        for t in self._threads:
            t.join(timeout=2)
        self._threads = []
        self._root_url = None

    def stop(self, timeout: float = 10) -> None:
        """Stop the child (graceful via stdin EOF, then SIGTERM, then SIGKILL)."""
        with self._lock:
            self._cleanup_process(timeout)
            self._proc = None

    def check_alive(self) -> None:
        """Raise ``RuntimeError`` (with exit status and output tail) if the child is gone."""
        if self._proc is None:
            raise RuntimeError("llama.cpp server has not been started")
        rc = self._proc.poll()
        if rc is not None:
            for t in self._threads:
                t.join(timeout=1)
            raise self._failure(_describe_returncode(rc))

    def request(self, method: str, path: str, payload: Any = None, timeout: float = 120) -> Any:
        """Small JSON helper: ``request("POST", "/v1/chat/completions", {...})``.

        Connection failures are turned into a ``RuntimeError`` that explains whether the
        child died (signal / exit code + its last output lines).
        """
        url = self.root_url + (path if path.startswith("/") else "/" + path)
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            raise RuntimeError(f"llama.cpp server returned HTTP {exc.code} for {path}: {body}") from exc
        except (urllib.error.URLError, OSError) as exc:
            time.sleep(0.05)  # give a dying child a moment to be reaped
            self.check_alive()
            raise RuntimeError(f"request to llama.cpp server at {url} failed: {exc}") from exc

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self._root_url}" if self.is_running() else "stopped"
        return f"<LlamaCppServer pid={self.pid} {state}>"
