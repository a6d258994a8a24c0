"""Secrets: resolve references, encrypt at rest (Fernet), compare by keyed hash (HMAC).

Plain text exists only in memory between resolving a reference and encrypting it; plans, history
and logs carry only the reference and an HMAC, so a plan can say a key changed without showing it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ReconcilerError

SECRET_KEY_ENV = "RECONCILER_SECRET_KEY"
SECRET_KEY_FILE_ENV = "RECONCILER_SECRET_KEY_FILE"
DEFAULT_KEY_FILE = Path(".reconciler") / "secret.key"


@dataclass(frozen=True)
class SecretBox:
    """Encrypts, decrypts and fingerprints secrets with the configured Fernet key."""

    key: bytes

    def _fernet(self):  # type: ignore[no-untyped-def]
        from cryptography.fernet import Fernet

        return Fernet(self.key)

    def encrypt(self, value: str) -> bytes:
        return self._fernet().encrypt(value.encode())

    def decrypt(self, token: bytes, provider: str = "") -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet().decrypt(token).decode()
        except InvalidToken:
            raise ReconcilerError(
                f"cannot decrypt the API key of provider {provider!r}: it was encrypted under another key",
                hint=f"set {SECRET_KEY_ENV} (or the key file) to the key used when it was applied",
            ) from None

    def fingerprint(self, value: str) -> str:
        mac_key = hashlib.sha256(b"reconciler-secret-fingerprint:" + self.key).digest()
        return "hmac-sha256:" + hmac.new(mac_key, value.encode(), hashlib.sha256).hexdigest()


def key_file_path() -> Path:
    return Path(os.environ.get(SECRET_KEY_FILE_ENV) or DEFAULT_KEY_FILE)


def load_secret_box(create: bool = True) -> SecretBox:
    """The key from $RECONCILER_SECRET_KEY, else the key file (created 0600 on first use)."""
    from cryptography.fernet import Fernet

    env = os.environ.get(SECRET_KEY_ENV)
    if env:
        key = env.strip().encode()
    else:
        path = key_file_path()
        if not path.exists():
            if not create:
                raise ReconcilerError(f"no secret key: {SECRET_KEY_ENV} is not set and {path} does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise ReconcilerError(f"cannot read secret key file {path}: {exc.strerror}") from None
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise ReconcilerError(
            "the secret key is not a valid Fernet key",
            hint="generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'",
        ) from None
    return SecretBox(key)


def resolve_secret(ref: dict[str, str], manifest_file: str, root: str, provider: str) -> str:
    """The plain value a ``{from_env}``/``{from_file}`` reference points at."""
    from reconciler.manifests import files

    if "from_env" in ref:
        var = ref["from_env"]
        value = os.environ.get(var)
        if value is None:
            raise ReconcilerError(
                f"provider {provider!r}: environment variable {var} is not set",
                hint=f"export {var}=... before running reconciler",
            )
        return value.strip()
    try:
        path = files.resolve_within(Path(root), Path(manifest_file), ref["from_file"])
        return path.read_text(encoding="utf-8").strip()
    except files.FileRefError as err:
        raise ReconcilerError(f"provider {provider!r}: api_key: {err}", hint=err.hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReconcilerError(f"provider {provider!r}: cannot read api_key file: {exc}") from None
