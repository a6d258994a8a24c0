"""The embedded llama.cpp server's child process: ``python -m reconciler.llm.llamacpp_child``.

Loads ``xllamacpp`` (only here, never in the reconciler process), serves llama.cpp's
OpenAI-compatible HTTP API, prints ``READY_MARKER URL`` on stdout once it listens, and exits when
its stdin reaches EOF: the parent closed it (``LlamaCppServer.stop``) or died. This module defines
that protocol; ``llamacpp_server.LlamaCppServer`` speaks it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType

#: Parallel slots; on a 2-core box 2 slots gave the best throughput (see report).
DEFAULT_PARALLEL = 2
#: Per-slot context window (tokens).  Total KV cache = n_ctx * n_parallel.
DEFAULT_N_CTX = 2048
#: The line the child prints (followed by a space and its URL) once it listens.
READY_MARKER = "RECONCILER_LLAMACPP_READY"
#: The API key the server requires, passed in the environment (never on the command line, which ``ps`` shows).
API_KEY_ENV = "RECONCILER_LLAMACPP_API_KEY"


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def _serve(args: argparse.Namespace) -> int:
    # Launched by LlamaCppServer (stdin is a pipe): the parent owns our lifecycle, so
    # ignore Ctrl-C sent to the whole process group.  Run by hand: Ctrl-C/Ctrl-D stop it.
    if not sys.stdin.isatty():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    class _Terminate(Exception):
        pass

    def _on_term(signum: int, frame: FrameType | None) -> None:
        raise _Terminate()

    signal.signal(signal.SIGTERM, _on_term)

    import xllamacpp as xlc  # type: ignore[import-untyped]  # the package ships no type information

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
    api_key = os.environ.get(API_KEY_ENV)
    if api_key:
        params.api_keys = [api_key]

    try:
        server = xlc.Server(params)  # binds the port, loads the model, starts HTTP
    except Exception as exc:  # noqa: BLE001 - whatever llama.cpp raises, the parent reads it on stderr
        print(f"failed to start llama.cpp server: {exc!r}", file=sys.stderr, flush=True)
        return 2

    url = server.listening_address.rstrip("/")
    print(f"{READY_MARKER} {url}", flush=True)
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
        prog="python -m reconciler.llm.llamacpp_child",
        description="Run llama.cpp's OpenAI-compatible server (child of LlamaCppServer). Exits when stdin reaches EOF.",
    )
    parser.add_argument("--model", default=None, help="GGUF path (default: bundled Gemma 3 270M)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX, help="context per slot")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--chat-template", default=None, help="Jinja chat template (default: the model's own)")
    args = parser.parse_args(argv)
    if args.model is None:
        from reconciler.llm.bundled_model import GEMMA_CHAT_TEMPLATE, default_model_path

        args.model = str(default_model_path())
        if args.chat_template is None:
            args.chat_template = GEMMA_CHAT_TEMPLATE
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
