"""A cache of parsed manifest files: a file whose bytes were read before is not parsed and validated again.

Parsing YAML and validating it was most of a no-change `plan` (0.6 s of 1.34 s at 10,000
resources), and in a GitOps repository almost every file is unchanged between two commands. So
what a file's documents validate into (``modelcodec``) is stored under a key made of the file's
bytes and everything else the result depends on: reconciler's version, the parser's and the
models' code, pydantic's and PyYAML's versions, the parser's limits (``loader.cache_salt``). A hit
gives exactly the manifests a fresh read would; what depends on other files (referenced schemas
and inputs, secrets) and the checks across documents run every time, so nothing can go stale.

Only a file every document of which validated without any problem is stored, so a literal secret
(refused by validation) never reaches the cache. Entries are JSON, never pickle, carry a checksum
(a damaged or foreign file is ignored and rewritten), and live in a directory only the user can
write: ``$RECONCILER_CACHE_DIR``, else ``$XDG_CACHE_HOME/reconciler``, else ``~/.cache/reconciler``,
never the manifests' checkout (a pull request could plant entries there). ``RECONCILER_NO_CACHE=1``
turns it off. Entries nobody used for 30 days are removed, at most once a day.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback
    orjson = None  # type: ignore[assignment]

T = TypeVar("T")
CACHE_DIR_ENV = "RECONCILER_CACHE_DIR"
NO_CACHE_ENV = "RECONCILER_NO_CACHE"
MAGIC = b"reconciler-parse-cache"
FORMAT = 1
SUBDIR = f"parse-v{FORMAT}"
KEEP_UNUSED_SECONDS = 30 * 86_400
REFRESH_SECONDS = 86_400  # a hit marks its entry as used at most once a day (one utime)
PRUNE_EVERY_SECONDS = 86_400
_PRUNE_MARKER = ".last-pruned"


def default_directory(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where the cache lives, from the environment; None when it is turned off."""
    env = os.environ if environ is None else environ
    if env.get(NO_CACHE_ENV, "").lower() in {"1", "true", "yes"}:
        return None
    explicit = env.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "reconciler"
    home = env.get("HOME")
    if home and os.path.isabs(home):
        return Path(home) / ".cache" / "reconciler"
    return None


def _dumps(value: Any) -> bytes | None:
    """JSON bytes, or None for a value JSON would not give back exactly (e.g. integers beyond 64 bits)."""
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:
            return None
    import json

    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode()


def _loads(payload: bytes) -> Any:
    if orjson is not None:
        return orjson.loads(payload)
    import json

    return json.loads(payload)


def _private(directory: Path) -> bool:
    """Only a directory the user owns and nobody else can write may be trusted with entries."""
    st = directory.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    return not st.st_mode & 0o022


class ParseCache:
    """Entries in one directory, each named by its key. ``hits``/``misses`` count lookups."""

    def __init__(self, directory: Path, salt: bytes) -> None:
        self.directory = directory
        self.salt = salt
        self.hits = 0
        self.misses = 0
        self.stored = 0
        self._usable: bool | None = None
        self._keys: dict[Path, tuple[bytes, str]] = {}  # the last bytes read from a file and their key

    def key(self, content: bytes, path: Path | None = None) -> str:
        """The entry's name: a digest of everything the parse depends on and of the file's bytes.
        ``path``: the file they were read from; when the bytes read from it last time are these
        (compared, not assumed: it may have changed), their key is not computed again (the loader
        reads each file twice when ``parseahead`` looks for misses first: 5 ms of 10,000 resources)."""
        if path is not None:
            known = self._keys.get(path)
            if known is not None and known[0] == content:
                return known[1]
        h = hashlib.blake2b(digest_size=32)
        h.update(len(self.salt).to_bytes(4, "big") + self.salt)
        h.update(content)
        key = h.hexdigest()
        if path is not None:
            self._keys[path] = (content, key)
        return key

    def has(self, key: str) -> bool:
        """Whether an entry is stored under ``key`` (not whether it is intact: ``load`` checks that)."""
        return self._path(key).is_file()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, key: str, accept: Callable[[Any], T | None]) -> T | None:
        """``accept`` of the value stored under ``key``; None when there is none, it is damaged,
        or ``accept`` refuses it (returns None). Counted as a hit or a miss."""
        value = self._read(key)
        result = accept(value) if value is not None else None
        if result is None:
            self.misses += 1
        else:
            self.hits += 1
        return result

    def _read(self, key: str) -> Any | None:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                blob = fh.read()
        except OSError:
            return None
        header, sep, payload = blob.partition(b"\n")
        parts = header.split(b" ")
        if not sep or len(parts) != 4 or parts[0] != MAGIC or parts[1] != str(FORMAT).encode() or parts[2] != key.encode():
            return None
        if hashlib.blake2b(payload, digest_size=32).hexdigest().encode() != parts[3]:
            return None
        try:
            value = _loads(payload)
        except ValueError:
            return None
        if time.time() - st.st_mtime > REFRESH_SECONDS:
            with contextlib.suppress(OSError):
                os.utime(path)
        return value

    def _ready(self) -> bool:
        """Create the directory (private to the user) once; False when it cannot be used."""
        if self._usable is None:
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._usable = _private(self.directory)
            except OSError:
                self._usable = False
        return self._usable

    def store(self, key: str, value: Any) -> bool:
        """Write an entry atomically (readers see all of it or nothing); never raises."""
        payload = _dumps(value)
        if payload is None or not self._ready():
            return False
        digest = hashlib.blake2b(payload, digest_size=32).hexdigest().encode()
        header = b" ".join((MAGIC, str(FORMAT).encode(), key.encode(), digest))
        import tempfile  # only a miss writes

        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(header + b"\n" + payload)
            os.replace(tmp, self._path(key))
        except OSError:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return False
        self.stored += 1
        self._prune_now_and_then()
        return True

    def _prune_now_and_then(self) -> None:
        """Remove entries unused for KEEP_UNUSED_SECONDS (and abandoned temporary files), once a day."""
        marker = self.directory / _PRUNE_MARKER
        now = time.time()
        try:
            if now - marker.stat().st_mtime < PRUNE_EVERY_SECONDS:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return
        with contextlib.suppress(OSError):
            marker.touch()
            for entry in os.scandir(self.directory):
                if entry.name == _PRUNE_MARKER:
                    continue
                age = now - entry.stat().st_mtime
                if age > KEEP_UNUSED_SECONDS or (entry.name.startswith(".tmp-") and age > PRUNE_EVERY_SECONDS):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def open_cache(salt: bytes, directory: Path | None = None) -> ParseCache | None:
    """The cache in ``directory`` (default: from the environment), or None when it is turned off."""
    where = directory if directory is not None else default_directory()
    return None if where is None else ParseCache(where / SUBDIR, salt)
