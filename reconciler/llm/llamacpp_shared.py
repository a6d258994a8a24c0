"""The process-wide shared embedded servers: one ``LlamaCppServer`` per model file, started on
first use, restarted when its child died, stopped at interpreter exit (never from a forked child)."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from pathlib import Path

from reconciler.llm.bundled_model import GEMMA_CHAT_TEMPLATE, default_model_path
from reconciler.llm.llamacpp_child import DEFAULT_N_CTX, DEFAULT_PARALLEL
from reconciler.llm.llamacpp_server import LlamaCppServer

__all__ = ["ensure_server", "stop_shared_servers"]

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
                n_parallel=int(os.environ.get("RECONCILER_LLM_PARALLEL", str(DEFAULT_PARALLEL))),
                n_threads=int(os.environ.get("RECONCILER_LLM_THREADS", "0")) or None,
                n_ctx=int(os.environ.get("RECONCILER_LLM_CTX", str(DEFAULT_N_CTX))),
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
