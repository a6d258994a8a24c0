"""Secret references, the key ring and the HMAC (reconciler.providers.secrets)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from reconciler.errors import ReconcilerError
from reconciler.providers.secrets import (
    ALLOWED_ENV_VAR,
    SECRET_KEY_ENV,
    SECRET_KEY_FILE_ENV,
    SecretBox,
    SecretRefError,
    _fernet_key,
    check_env_name,
    check_reference,
    load_secret_box,
    read_reference,
)


@pytest.mark.parametrize(
    ("var", "patterns", "allowed"),
    [
        ("OPENAI_API_KEY", None, True),
        ("RECONCILER_OPENAI", None, True),
        ("AWS_SECRET_ACCESS_KEY", None, False),
        ("HOME", None, False),
        ("openai_api_key", None, False),
        ("RECONCILER_SECRET_KEY", None, False),
        ("RECONCILER_SECRET_KEY_FILE", None, False),
        ("RECONCILER_DATABASE_URL", None, False),
        ("RECONCILER_ALLOWED_SECRET_ENV", None, False),
        ("OPENAI_TOKEN", "OPENAI_*", True),
        ("OPENAI_API_KEY", "OPENAI_TOKEN", False),
        ("VAULT_X", "OPENAI_*, VAULT_?", True),
        ("RECONCILER_SECRET_KEY", "*", False),
        ("DATABASE_URL", "*", False),
    ],
    ids=lambda v: str(v),
)
def test_env_allowlist(var: str, patterns: str | None, allowed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if patterns is not None:
        monkeypatch.setenv(ALLOWED_ENV_VAR, patterns)
    if allowed:
        check_env_name(var)
    else:
        with pytest.raises(SecretRefError) as err:
            check_env_name(var)
        assert err.value.field == "from_env" and var in err.value.message


def test_validate_does_not_read_the_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MISSING_API_KEY", raising=False)
    check_reference({"from_env": "MISSING_API_KEY"}, tmp_path / "p.yaml", tmp_path)  # unset is fine at validate
    check_reference({"from_file": "secrets/not-yet.key"}, tmp_path / "p.yaml", tmp_path)  # so is a missing file
    with pytest.raises(SecretRefError, match="resolves outside the manifests root"):
        check_reference({"from_file": "../outside.key"}, tmp_path / "p.yaml", tmp_path)


def test_read_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "openai.key").write_text("sk-from-file\n")
    (tmp_path / "empty.key").write_text("\n")
    monkeypatch.setenv("OPENAI_API_KEY", "  sk-from-env\n")
    manifest = tmp_path / "p.yaml"
    assert read_reference({"from_env": "OPENAI_API_KEY"}, manifest, tmp_path) == "sk-from-env"
    assert read_reference({"from_file": "secrets/openai.key"}, manifest, tmp_path) == "sk-from-file"
    monkeypatch.delenv("OPENAI_API_KEY")
    for ref, message in [
        ({"from_env": "OPENAI_API_KEY"}, "environment variable OPENAI_API_KEY is not set"),
        ({"from_file": "secrets/none.key"}, "file 'secrets/none.key' does not exist"),
        ({"from_file": "empty.key"}, "secret file 'empty.key' is empty"),
    ]:
        with pytest.raises(SecretRefError) as err:
            read_reference(ref, manifest, tmp_path)
        assert err.value.message.startswith(message)


def test_key_file_created_0600_and_reused() -> None:
    box = load_secret_box()
    path = Path(".reconciler/secret.key")
    assert (path.stat().st_mode & 0o777, box.path, box.source) == (0o600, path, str(path))
    assert load_secret_box().keys == box.keys
    assert "keys" not in repr(box) or box.keys[0].decode() not in repr(box)


def test_missing_key_without_create_is_an_error() -> None:
    with pytest.raises(ReconcilerError, match="no secret key: RECONCILER_SECRET_KEY is not set and .reconciler/secret.key does not exist"):
        load_secret_box(create=False)
    assert not Path(".reconciler").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_loose_key_file_is_refused(mode: int, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path("k.key")
    path.write_text(Fernet.generate_key().decode())
    path.chmod(mode)
    monkeypatch.setenv(SECRET_KEY_FILE_ENV, str(path))
    with pytest.raises(ReconcilerError) as err:
        load_secret_box()
    assert str(err.value) == f"error: secret key file k.key is accessible by other users (mode {mode:04o}); refusing to use it\n  hint: chmod 600 k.key"


@pytest.mark.parametrize(
    ("content", "message"),
    [("not a key\n", "key #1 in k.key is not a valid Fernet key"), ("# only a comment\n\n", "k.key holds no key"), (None, "k.key is not a regular file")],
    ids=["garbage", "empty", "directory"],
)
def test_unusable_key_file(content: str | None, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path("k.key")
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
        path.chmod(0o600)
    monkeypatch.setenv(SECRET_KEY_FILE_ENV, str(path))
    with pytest.raises(ReconcilerError, match=message):
        load_secret_box()


def test_key_file_with_several_keys_and_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    new, old = Fernet.generate_key(), Fernet.generate_key()
    path = Path("k.key")
    path.write_text(f"# newest first\n{new.decode()}\n{old.decode()}\n")
    path.chmod(0o600)
    monkeypatch.setenv(SECRET_KEY_FILE_ENV, str(path))
    box = load_secret_box()
    assert box.keys == (new, old)
    assert box.decrypt(Fernet(old).encrypt(b"v")) == "v"  # old keys still decrypt
    assert Fernet(new).decrypt(box.encrypt("w")) == b"w"  # the newest encrypts


def test_env_keys_win_over_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Fernet.generate_key(), Fernet.generate_key()
    monkeypatch.setenv(SECRET_KEY_ENV, f"{a.decode()}, {b.decode()}")
    box = load_secret_box()
    assert (box.keys, box.source, box.path) == ((a, b), "$RECONCILER_SECRET_KEY", None)
    assert not Path(".reconciler").exists()
    monkeypatch.setenv(SECRET_KEY_ENV, f"{a.decode()},nope")
    with pytest.raises(ReconcilerError, match=r"key #2 in \$RECONCILER_SECRET_KEY is not a valid Fernet key"):
        load_secret_box()


def test_fingerprint_is_keyed_and_stable() -> None:
    a, b = Fernet.generate_key(), Fernet.generate_key()
    assert SecretBox((a,)).fingerprint("sk") == SecretBox((a, b)).fingerprint("sk")
    assert SecretBox((a,)).fingerprint("sk") != SecretBox((b, a)).fingerprint("sk")
    assert SecretBox((a,)).fingerprint("sk") != SecretBox((a,)).fingerprint("sk2")
    assert SecretBox((a,)).fingerprint("sk").startswith("hmac-sha256:")


def test_decrypt_under_another_key_names_the_provider() -> None:
    token = Fernet(Fernet.generate_key()).encrypt(b"sk")
    box = SecretBox((Fernet.generate_key(),), "$RECONCILER_SECRET_KEY")
    assert not box.can_decrypt(token)
    with pytest.raises(ReconcilerError, match="cannot decrypt the stored API key of provider 'openai-prod'"):
        box.decrypt(token, "openai-prod")


# --- the key file goes with the database ---------------------------------------------------------

KEYED = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: remote}
spec: {type: openai, base_url: "BASE", api_key: {from_env: REMOTE_API_KEY}}
"""
REMOTE_KEY = "sk-remote-7d2e9f10aa"


def _served(cli_run, db: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    return cli_run("providers", "models", "remote", "--db", db)  # decrypts the stored key to list the models


def test_the_key_file_lives_beside_a_sqlite_database_and_works_from_any_directory(
    cli_run, write_manifests, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    from tests.providers.servers import OPENAI_MODELS, Reply, serve

    elsewhere = tmp_path / "elsewhere"
    db = f"sqlite:///{elsewhere / 'state.db'}"
    with serve({"/v1/models": Reply(body=OPENAI_MODELS, bearer=REMOTE_KEY)}) as srv:
        root = write_manifests({"p.yaml": KEYED.replace("BASE", srv.url + "/v1")})
        code, out, err = cli_run("apply", str(root), "--db", db, "--auto-approve", env={"REMOTE_API_KEY": REMOTE_KEY})
        assert code == 0 and "remote: connected" in out, err
        key = elsewhere / "secret.key"
        assert key.stat().st_mode & 0o777 == 0o600 and not Path(".reconciler").exists()
        for where in (tmp_path, elsewhere, root):  # another directory, the database's, the manifests'
            monkeypatch.chdir(where)
            code, out, err = _served(cli_run, db)
            assert (code, out.split()) == (0, ["gpt-4o-mini", "gpt-4o"]), err
            relative = f"sqlite:///{Path('..') / 'elsewhere' / 'state.db'}" if where == root else None
            if relative:  # a relative --db finds its key the same way
                assert _served(cli_run, relative)[0] == 0
        assert not any(p.name == ".reconciler" for p in tmp_path.rglob(".reconciler"))


def test_a_key_in_the_old_place_is_used_with_a_note_until_it_is_moved(
    cli_run, write_manifests, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """Before, the key file was .reconciler/secret.key in the current directory whatever the database."""
    from tests.providers.servers import OPENAI_MODELS, Reply, serve

    elsewhere = tmp_path / "elsewhere"
    db = f"sqlite:///{elsewhere / 'state.db'}"
    old = Path(".reconciler/secret.key")
    with serve({"/v1/models": Reply(body=OPENAI_MODELS, bearer=REMOTE_KEY)}) as srv:
        root = write_manifests({"p.yaml": KEYED.replace("BASE", srv.url + "/v1")})
        code, _, err = cli_run(  # as the previous release did: the key file in the current directory
            "apply", str(root), "--db", db, "--auto-approve", env={"REMOTE_API_KEY": REMOTE_KEY, SECRET_KEY_FILE_ENV: str(old)}
        )
        assert code == 0, err
        assert old.exists() and not (elsewhere / "secret.key").exists()
        code, out, err = _served(cli_run, db)
        assert code == 0 and "gpt-4o-mini" in out, err
        assert f"warning: using the secret key in {old.resolve()}, where keys were kept before" in err, (out, err)
        assert f"cp -p {old.resolve()} {elsewhere / 'secret.key'} (or mv, if no other database uses it)" in err
        code, out, _ = cli_run("plan", str(root), "--db", db, env={"REMOTE_API_KEY": REMOTE_KEY})
        assert code == 0 and "No changes" in out  # the HMACs still match: it is the same key
        # a changed key is encrypted under that same old key too: one database, one key
        code, out, err = cli_run("apply", str(root), "--db", db, "--auto-approve", "--no-validate", env={"REMOTE_API_KEY": REMOTE_KEY + "2"})
        assert code == 0 and "api_key (sensitive value changed)" in out, err
        assert not (elsewhere / "secret.key").exists()
        code, out, _ = cli_run("plan", str(root), "--db", db, env={"REMOTE_API_KEY": REMOTE_KEY + "2"})
        assert code == 0 and "No changes" in out
        # a new database from here gets a key of its own beside it, and no note about the old one
        fresh = tmp_path / "fresh"
        code, _, err = cli_run("apply", str(root), "--db", f"sqlite:///{fresh / 'state.db'}", "--auto-approve", "--no-validate",
                               env={"REMOTE_API_KEY": REMOTE_KEY})
        assert code == 0 and "warning" not in err and (fresh / "secret.key").read_bytes() != old.read_bytes()
        code, out, err = cli_run("apply", str(root), "--db", db, "--auto-approve", "--no-validate", env={"REMOTE_API_KEY": REMOTE_KEY})
        assert code == 0, err

        monkeypatch.chdir(tmp_path)  # elsewhere, the old key is not found: the message says where it looked
        code, _, err = _served(cli_run, db)
        assert code == 1
        assert f"error: no secret key: RECONCILER_SECRET_KEY is not set and {elsewhere / 'secret.key'} does not exist" in err

        (tmp_path / "work" / old).rename(elsewhere / "secret.key")  # moved as the note said
        code, out, err = _served(cli_run, db)
        assert code == 0 and "warning" not in err, err


# --- what a plan asks of stored keys, without cryptography ------------------------------------------


def _tokens() -> tuple[tuple[bytes, ...], dict[str, bytes | str]]:
    old, new, other = Fernet.generate_key(), Fernet.generate_key(), Fernet.generate_key()
    token = Fernet(new).encrypt(b"sk-test")
    raw = base64.urlsafe_b64decode(token)
    flipped = raw[:-1] + bytes([raw[-1] ^ 1])
    return (new, old), {
        "newest-key": token,
        "older-key": Fernet(old).encrypt(b"sk-test"),
        "as-text": token.decode(),
        "another-key": Fernet(other).encrypt(b"sk-test"),
        "signature-flipped": base64.urlsafe_b64encode(flipped),
        "body-flipped": base64.urlsafe_b64encode(raw[:30] + bytes([raw[30] ^ 1]) + raw[31:]),
        "version-byte": base64.urlsafe_b64encode(b"\x81" + raw[1:]),
        "truncated": base64.urlsafe_b64encode(raw[:40]),
        "short": base64.urlsafe_b64encode(raw[:8]),
        "empty": b"",
        "not-base64": b"not a token!",
        "non-ascii": "jeton-\u00e9",
    }


def test_sealed_answers_what_decrypting_answers_for_every_token() -> None:
    """``sealed`` checks a token's signature with the standard library; Fernet also decrypts. For
    every token reconciler or anyone without the key can make, the two agree."""
    keys, tokens = _tokens()
    box = SecretBox(keys)
    found = {name: (box.sealed(token), box.can_decrypt(token)) for name, token in tokens.items()}  # type: ignore[arg-type]  # str too
    assert all(sealed == decrypts for sealed, decrypts in found.values()), found
    assert {name for name, (sealed, _) in found.items() if sealed} == {"newest-key", "older-key", "as-text"}
    assert not SecretBox((keys[0], b"not-a-key")).sealed(tokens["newest-key"])  # type: ignore[arg-type]  # as MultiFernet refuses a bad key


@pytest.mark.parametrize(
    "key",
    [Fernet.generate_key(), Fernet.generate_key().decode(), b"short", base64.urlsafe_b64encode(b"x" * 31), base64.urlsafe_b64encode(b"x" * 33),
     b"%%%%", "\u00e9" * 44, base64.urlsafe_b64encode(b"y" * 32).rstrip(b"=")],
    ids=["bytes", "text", "short", "31-bytes", "33-bytes", "not-base64", "non-ascii", "unpadded"],
)
def test_keys_are_checked_as_fernet_checks_them(key: bytes | str) -> None:
    def accepted(check: Any) -> bool:
        try:
            check(key)
        except (ValueError, TypeError):
            return False
        return True

    assert accepted(_fernet_key) == accepted(Fernet)
