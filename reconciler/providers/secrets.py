"""Secrets: resolve references, encrypt at rest (Fernet), compare by keyed hash (HMAC).

Plain text exists only in memory between resolving a reference and encrypting it; plans, history
and logs carry only the reference and an HMAC, so a plan can say a key changed without showing it.

Which references may be read is limited, because manifests come from pull requests: an
environment variable must match the allowlist (``$RECONCILER_ALLOWED_SECRET_ENV``), and a file must
stay inside the manifests' root. Reconciler's own settings (the secret key, the database URL) can
never be referenced.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import functools
import hashlib
import hmac
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import ReconcilerError, name_list
from reconciler.paths import FileRefError, resolve_within

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet
    from sqlalchemy.engine import URL

SECRET_KEY_ENV = "RECONCILER_SECRET_KEY"
SECRET_KEY_FILE_ENV = "RECONCILER_SECRET_KEY_FILE"
KEY_FILE_NAME = "secret.key"  # beside a SQLite database file
DEFAULT_KEY_FILE = Path(".reconciler") / KEY_FILE_NAME  # for other databases; also where keys were kept before
ALLOWED_ENV_VAR = "RECONCILER_ALLOWED_SECRET_ENV"
DEFAULT_ALLOWED_ENV = ("RECONCILER_*", "*_API_KEY")
# Reconciler's own settings: a manifest must never be able to send these to a base_url.
NEVER_ALLOWED_ENV = ("RECONCILER_SECRET_KEY*", "*DATABASE_URL*", "RECONCILER_ALLOW*")
GENERATE_HINT = "generate one with: reconciler secrets generate-key"


class SecretRefError(Exception):
    """A reference that may not or cannot be read. ``field`` is ``from_env`` or ``from_file``."""

    def __init__(self, message: str, hint: str = "", field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field


# --- which references may be read -----------------------------------------------------------


def allowed_env_patterns(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Glob patterns from $RECONCILER_ALLOWED_SECRET_ENV (comma or space separated), else the defaults."""
    raw = (os.environ if environ is None else environ).get(ALLOWED_ENV_VAR, "")
    patterns = tuple(p for p in re.split(r"[,\s]+", raw) if p)
    return patterns or DEFAULT_ALLOWED_ENV


def check_env_name(var: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise SecretRefError unless ``var`` may be read as a secret."""
    if any(fnmatch.fnmatchcase(var, p) for p in NEVER_ALLOWED_ENV):
        raise SecretRefError(
            f"environment variable {var} is one of reconciler's own settings and cannot be used as an api_key",
            hint="put the provider's key in a variable of its own, e.g. OPENAI_API_KEY",
            field="from_env",
        )
    patterns = allowed_env_patterns(environ)
    if not any(fnmatch.fnmatchcase(var, p) for p in patterns):
        raise SecretRefError(
            f"environment variable {var} is not allowed as a secret source (allowed: {', '.join(patterns)})",
            hint=f"use a variable ending in _API_KEY or starting with RECONCILER_, or allow it: {ALLOWED_ENV_VAR}='{','.join((*patterns, var))}'",
            field="from_env",
        )


def _secret_file(ref: str, manifest_file: Path, root: Path, must_exist: bool) -> Path:
    try:
        return resolve_within(root, manifest_file, ref, must_exist=must_exist)
    except FileRefError as err:
        raise SecretRefError(str(err), hint=err.hint, field="from_file") from None


def check_reference(ref: Mapping[str, str], manifest_file: Path, root: Path) -> None:
    """What ``validate`` checks: the reference is allowed. Reads no value and needs no file yet."""
    if "from_env" in ref:
        check_env_name(ref["from_env"])
    else:
        _secret_file(ref["from_file"], manifest_file, root, must_exist=False)


def read_reference(ref: Mapping[str, str], manifest_file: Path, root: Path) -> str:
    """The plain value a ``{from_env}``/``{from_file}`` reference points at (surrounding blanks stripped)."""
    if "from_env" in ref:
        var = ref["from_env"]
        check_env_name(var)
        value = os.environ.get(var)
        if value is None:
            raise SecretRefError(f"environment variable {var} is not set", hint=f"export {var}=... before running reconciler", field="from_env")
        if not value.strip():
            raise SecretRefError(f"environment variable {var} is empty", hint=f"export {var}=... before running reconciler", field="from_env")
        return value.strip()
    path = _secret_file(ref["from_file"], manifest_file, root, must_exist=True)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretRefError(f"cannot read secret file {ref['from_file']!r}: {getattr(exc, 'strerror', None) or exc}", field="from_file") from None
    if not value:
        raise SecretRefError(f"secret file {ref['from_file']!r} is empty", field="from_file")
    return value


def describe_ref(ref: Mapping[str, str]) -> str:
    return f"env:{ref['from_env']}" if "from_env" in ref else f"file:{ref.get('from_file')}"


def resolve_secret(ref: dict[str, str], manifest_file: str, root: str, provider: str) -> str:
    """``read_reference`` with errors that name the provider (used when applying a saved plan)."""
    try:
        return read_reference(ref, Path(manifest_file), Path(root))
    except SecretRefError as err:
        raise ReconcilerError(f"provider {provider!r}: api_key: {err.message}", hint=err.hint) from None


# --- the key ring -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _decrypts(keys: tuple[bytes, ...], token: bytes) -> bool:
    """Whether one of ``keys`` decrypts ``token``: a pure function, remembered, as ``watch`` asks it
    for every stored API key on every change."""
    from cryptography.fernet import Fernet, InvalidToken, MultiFernet

    try:
        MultiFernet([Fernet(k) for k in keys]).decrypt(token)
    except (InvalidToken, TypeError, ValueError):
        return False
    return True


def _fernet_key(key: bytes | str) -> bytes:
    """A Fernet key's 32 bytes, decoded and checked as ``cryptography.fernet.Fernet`` does (else
    ValueError), with the standard library: a plan reads the key ring, and importing cryptography
    cost 13 ms of each one that has API keys."""
    try:
        raw = base64.urlsafe_b64decode(key)
    except binascii.Error as exc:
        raise ValueError("Fernet key must be 32 url-safe base64-encoded bytes.") from exc
    if len(raw) != 32:
        raise ValueError("Fernet key must be 32 url-safe base64-encoded bytes.")
    return raw


@functools.lru_cache(maxsize=4096)
def _sealed(keys: tuple[bytes, ...], token: bytes) -> bool:
    """Whether one of ``keys`` made the Fernet token ``token``: its version byte and its HMAC-SHA256
    (under the key's signing half) checked as Fernet checks them before it decrypts, with the
    standard library. Only a holder of the key can make a token that passes and still fails to
    decrypt (a ciphertext it padded wrongly on purpose); reconciler never does."""
    try:
        signing = [_fernet_key(k)[:16] for k in keys]
        data = base64.urlsafe_b64decode(token)
    except (TypeError, ValueError):  # a bad key (as MultiFernet refuses it), or a token that is not base64 (binascii.Error)
        return False
    if len(data) < 9 or data[0] != 0x80:
        return False
    body, tag = data[:-32], data[-32:]
    return any(hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), tag) for key in signing)


@dataclass(frozen=True)
class SecretBox:
    """Encrypts with the newest key, decrypts with any (MultiFernet), fingerprints with the newest."""

    keys: tuple[bytes, ...] = field(repr=False)
    source: str = ""  # where the keys came from, for messages: "$RECONCILER_SECRET_KEY" or a path
    path: Path | None = None  # the key file, when they came from one

    @property
    def key(self) -> bytes:
        return self.keys[0]

    @functools.cached_property
    def _fernet(self) -> MultiFernet:
        """Made once per box: an apply encrypts the keys of hundreds of providers (a Fernet per
        key and call took a fifth of encrypting them)."""
        from cryptography.fernet import Fernet, MultiFernet

        return MultiFernet([Fernet(k) for k in self.keys])

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def can_decrypt(self, token: bytes) -> bool:
        return _decrypts(self.keys, token)

    def sealed(self, token: bytes) -> bool:
        """Whether one of the keys encrypted ``token`` (its signature verifies), the question a plan
        asks of the API keys reconciler stored: a wrong or lost key fails it. ``can_decrypt``
        also decrypts, with cryptography."""
        return _sealed(self.keys, token)

    def decrypt(self, token: bytes, provider: str = "") -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token).decode()
        except (InvalidToken, TypeError, ValueError, UnicodeDecodeError):
            raise undecryptable([provider], self.source) from None

    def fingerprint(self, value: str) -> str:
        return _mac(self.key, "secret-fingerprint", value.encode())

    def sign(self, payload: bytes, purpose: str) -> str:
        """An HMAC of ``payload`` under the newest key, for ``purpose`` (a key is never used for two)."""
        return _mac(self.key, purpose, payload)

    def signed(self, payload: bytes, signature: str, purpose: str) -> bool:
        """Whether any key of the ring made ``signature``: what was signed before a rotation still verifies."""
        return any(hmac.compare_digest(_mac(key, purpose, payload), signature) for key in self.keys)


def _mac(key: bytes, purpose: str, payload: bytes) -> str:
    """HMAC-SHA256 under a key derived from ``key`` for one purpose, so a fingerprint of an API key
    can never pass for a plan's signature."""
    mac_key = hashlib.sha256(f"reconciler-{purpose}:".encode() + key).digest()
    return "hmac-sha256:" + hmac.new(mac_key, payload, hashlib.sha256).hexdigest()


def undecryptable(providers: list[str], source: str) -> ReconcilerError:
    names = name_list(providers)
    plural = "s" if len(providers) != 1 else ""
    return ReconcilerError(
        f"cannot decrypt the stored API key{plural} of provider{plural} {names} with the secret key from {source}: "
        "the database was encrypted under another key",
        hint=f"set {SECRET_KEY_ENV} (or {SECRET_KEY_FILE_ENV}) to the key used when they were applied; "
        "if that key is lost, run `reconciler secrets forget --undecryptable` and apply again",
    )


def generate_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def key_file_path(database: URL | Path | None = None) -> Path:
    """Where the key file is: $RECONCILER_SECRET_KEY_FILE; else ``secret.key`` beside a SQLite
    database (``database``: its URL or the file itself; default the one this process opened), so a
    command finds the key of its database from any directory; else (PostgreSQL) ``.reconciler/secret.key`` here."""
    configured = os.environ.get(SECRET_KEY_FILE_ENV)
    if configured:
        return Path(configured)
    from reconciler.state.db import opened_sqlite_file, sqlite_path

    db_file = database if isinstance(database, Path) else sqlite_path(database) if database is not None else opened_sqlite_file()
    if db_file is None:
        return DEFAULT_KEY_FILE
    return db_file.expanduser().parent / KEY_FILE_NAME


_chosen: set[tuple[str, str]] = set()  # (old key file, key file beside the database) this process used


def _legacy_key_file(path: Path, create: bool) -> Path | None:
    """A key kept where keys used to be (``.reconciler/secret.key`` in the current directory) while
    none is beside the database yet. It is used when a key is needed to read what the database holds
    (``create`` false), and from then on for that database in this process (so what the process
    encrypts goes under the same key), with a note once saying how to put it in its place. A database
    that needs a key created gets its own beside it."""
    if os.environ.get(SECRET_KEY_FILE_ENV) or path.exists() or path.is_symlink():
        return None
    legacy = Path(os.path.abspath(DEFAULT_KEY_FILE))
    target = Path(os.path.abspath(path))
    if legacy == target or not legacy.is_file():
        return None
    pair = (str(legacy), str(target))
    if pair not in _chosen:
        if create:
            return None
        _chosen.add(pair)
        sys.stderr.write(
            f"warning: using the secret key in {legacy}, where keys were kept before; it belongs beside the database, "
            f"where every directory finds it: cp -p {legacy} {target} (or mv, if no other database uses it)\n"
        )
        sys.stderr.flush()
    return legacy


def _parse_keys(text: str, source: str) -> tuple[bytes, ...]:
    keys = []
    lines = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for i, token in enumerate(t for t in re.split(r"[,\s]+", lines) if t):
        try:
            _fernet_key(token.encode())  # what Fernet(key) checks
        except (ValueError, TypeError):
            raise ReconcilerError(
                f"key #{i + 1} in {source} is not a valid Fernet key (32 url-safe base64-encoded bytes)", hint=GENERATE_HINT
            ) from None
        keys.append(token.encode())
    if not keys:
        raise ReconcilerError(f"{source} holds no key", hint=GENERATE_HINT)
    return tuple(keys)


def _read_key_file(path: Path) -> str:
    try:
        st = path.stat()
    except OSError as exc:
        raise ReconcilerError(f"cannot read secret key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ReconcilerError(f"secret key file {path} is not a regular file", hint=f"point {SECRET_KEY_FILE_ENV} at the key file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise ReconcilerError(
            f"secret key file {path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it",
            hint=f"chmod 600 {path}",
        )
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReconcilerError(f"cannot read secret key file {path}: {getattr(exc, 'strerror', None) or exc}") from None


def load_secret_box(create: bool = True, needed_for: str = "", database: URL | Path | None = None) -> SecretBox:
    """The keys from $RECONCILER_SECRET_KEY (comma-separated, newest first), else the key file of
    ``database`` (see ``key_file_path``; one key a line, newest first; created 0600 on first use
    when ``create``)."""
    env = os.environ.get(SECRET_KEY_ENV)
    if env and env.strip():
        source = f"${SECRET_KEY_ENV}"
        return SecretBox(_parse_keys(env, source), source)
    path = key_file_path(database)
    path = _legacy_key_file(path, create) or path
    if not path.exists() and not path.is_symlink():
        if not create:
            raise ReconcilerError(
                f"no secret key: {SECRET_KEY_ENV} is not set and {path} does not exist" + (f"; {needed_for}" if needed_for else ""),
                hint=f"set {SECRET_KEY_ENV} or {SECRET_KEY_FILE_ENV} to the key used when the API keys were applied",
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it just now
        except OSError as exc:
            raise ReconcilerError(f"cannot create secret key file {path}: {exc.strerror}") from None
        else:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(generate_key() + "\n")
    return SecretBox(_parse_keys(_read_key_file(path), str(path)), str(path), path)


def write_key_file(path: Path, keys: tuple[bytes, ...]) -> None:
    """Replace the key file atomically with ``keys`` (newest first), mode 0600."""
    import tempfile  # 5 ms that every plan with a provider key (which imports this module) would pay

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write("".join(k.decode() + "\n" for k in keys))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
