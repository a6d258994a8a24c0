"""Secrets never appear in plain text: the providers issue's scan (tests/providers) covers plan,
apply, get, history and provider checks; this one adds exports, drift reports, watch events,
error messages (stale plan, wrong key, missing variable) and every file the commands leave behind,
looking for the key raw, hex-encoded and base64-encoded."""

from __future__ import annotations

import base64
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from reconciler.providers import secrets
from tests.reliability.dbstate import stored_bytes

PROVIDERS = """\
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: {name}}}
spec:
  type: openai
  base_url: http://127.0.0.1:9/v1
  api_key: {{from_env: LEAK_API_KEY}}
"""


def _forms(secret: str) -> dict[str, bytes]:
    raw = secret.encode()
    return {"raw": raw, "hex": raw.hex().encode(), "base64": base64.b64encode(raw).rstrip(b"="), "urlsafe-base64": base64.urlsafe_b64encode(raw).rstrip(b"=")}


def _files_under(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_no_command_output_or_leftover_file_holds_the_key(cli_run: Any, db_url: str, write_manifests: Any, tmp_path: Path) -> None:
    secret = f"sk-LEAK-{uuid.uuid4().hex}"
    other = f"sk-LEAK-{uuid.uuid4().hex}"
    key = Fernet.generate_key().decode()
    root = write_manifests({"providers.yaml": PROVIDERS.format(name="prod") + "---\n" + PROVIDERS.format(name="backup")})
    env = {"LEAK_API_KEY": secret, "RECONCILER_SECRET_KEY": key}
    outputs: list[str] = []

    def run(*args: str, codes: tuple[int, ...] = (0,), **extra: str) -> None:
        code, out, err = cli_run(*args, env={**env, **extra})
        assert code in codes and "Traceback" not in err, (args, code, err)
        outputs.extend((out, err))

    saved = tmp_path / "saved.plan"
    run("plan", str(root), "--db", db_url, "--out", str(saved))
    run("apply", str(saved), "--db", db_url)
    run("apply", str(saved), "--db", db_url, codes=(1,))  # stale now: the error message
    run("plan", str(root), "--db", db_url, "--format", "markdown", LEAK_API_KEY=other)  # a changed key
    run("apply", str(root), "--db", db_url, "--auto-approve", LEAK_API_KEY=other)
    run("plan", str(root), "--db", db_url, codes=(0, 1), RECONCILER_SECRET_KEY=Fernet.generate_key().decode())  # wrong key
    run("plan", str(root), "--db", db_url, codes=(0, 1), LEAK_API_KEY="")  # an empty variable
    run("export", "--db", db_url)
    run("export", "--db", db_url, "--out", str(tmp_path / "exported"))
    run("drift", "--db", db_url, "--json", codes=(0, 2))
    run("watch", str(root), "--db", db_url, "--once", "--json")
    run("history", "--db", db_url, "-o", "json")
    run("get", "providers", "--db", db_url, "-o", "yaml")

    haystacks = {"outputs": "\n".join(outputs).encode(), "database": stored_bytes(db_url), **_files_under(tmp_path)}
    for value in (secret, other):
        for form, needle in _forms(value).items():
            for where, blob in haystacks.items():
                assert needle not in blob, f"the key ({form}) is in {where}"


def test_decrypting_with_the_wrong_key_fails_with_a_message(tmp_path: Path) -> None:
    box = secrets.SecretBox((Fernet.generate_key(),))
    token = box.encrypt("sk-wrong-key-test")
    stranger = secrets.SecretBox((Fernet.generate_key(),))
    with pytest.raises(secrets.ReconcilerError) as info:
        stranger.decrypt(token, "prod")
    assert "sk-wrong-key-test" not in str(info.value)
    assert "prod" in str(info.value)


@pytest.mark.skipif(not hasattr(secrets, "_read_key_file"), reason="key-file permission check (providers issue) has not landed")
def test_key_file_readable_by_others_is_refused(cli_run: Any, write_manifests: Any, tmp_path: Path, sqlite_url: str) -> None:
    key_file = tmp_path / "secret.key"
    key_file.write_text(Fernet.generate_key().decode())
    os.chmod(key_file, 0o644)
    root = write_manifests({"providers.yaml": PROVIDERS.format(name="prod")})
    code, _, err = cli_run("plan", str(root), "--db", sqlite_url, env={"RECONCILER_SECRET_KEY_FILE": str(key_file), "LEAK_API_KEY": "sk-x"})
    assert code == 1
    assert "refusing to use it" in err and "chmod 600" in err
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o644  # reported, not silently changed
