"""Bad secret input: a clear message, exit 1, no traceback, and nothing changed (database or key file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.providers.helpers import docs, dump_db, key_file_for, provider_doc

KEY = "sk-bad-input-51c0ffee"


def _write(root: Path, api_key: str, base_url: str = "http://127.0.0.1:9/v1") -> None:
    text = docs(provider_doc("openai-prod", "openai", base_url, api_key), provider_doc("ollama-local", "ollama", "http://127.0.0.1:9"))
    (root / "providers.yaml").write_text(text)


@pytest.fixture
def applied(cli_run: Any, db_url: str, write_manifests: Any) -> Path:
    """A database with one applied provider key, and manifests that would now change it."""
    root = write_manifests({"providers.yaml": ""})
    _write(root, "{from_env: TEST_OPENAI_API_KEY}")
    code, _, err = cli_run("apply", str(root), "--db", db_url, "--auto-approve", "--no-validate", env={"TEST_OPENAI_API_KEY": KEY})
    assert code == 0, err
    _write(root, "{from_env: TEST_OPENAI_API_KEY}", base_url="http://127.0.0.1:10/v1")  # a pending change
    return root


Case = Callable[[Path, Path], dict[str, str]]  # (manifests, key file) -> arranges the bad input, returns the environment to run with


def _literal(root: Path, key_file: Path) -> dict[str, str]:
    _write(root, "sk-literal-0000ffff")
    return {}


def _disallowed_var(root: Path, key_file: Path) -> dict[str, str]:
    _write(root, "{from_env: AWS_SECRET_ACCESS_KEY}")
    return {"AWS_SECRET_ACCESS_KEY": "aws-secret-value"}


def _own_setting(root: Path, key_file: Path) -> dict[str, str]:
    _write(root, "{from_env: RECONCILER_SECRET_KEY}")
    return {"RECONCILER_ALLOWED_SECRET_ENV": "*"}


def _outside_root(root: Path, key_file: Path) -> dict[str, str]:
    (root.parent / "outside.key").write_text("sk-outside")
    _write(root, "{from_file: ../outside.key}")
    return {}


def _missing_var(root: Path, key_file: Path) -> dict[str, str]:
    _write(root, "{from_env: UNSET_API_KEY}")
    return {}


def _missing_file(root: Path, key_file: Path) -> dict[str, str]:
    _write(root, "{from_file: secrets/openai.key}")
    return {}


def _loose_key_file(root: Path, key_file: Path) -> dict[str, str]:
    key_file.chmod(0o644)
    return {"TEST_OPENAI_API_KEY": KEY}


def _key_file_is_a_directory(root: Path, key_file: Path) -> dict[str, str]:
    Path("keydir").mkdir()
    return {"TEST_OPENAI_API_KEY": KEY, "RECONCILER_SECRET_KEY_FILE": "keydir"}


def _garbage_key(root: Path, key_file: Path) -> dict[str, str]:
    return {"TEST_OPENAI_API_KEY": KEY, "RECONCILER_SECRET_KEY": "not-a-fernet-key"}


def _another_key(root: Path, key_file: Path) -> dict[str, str]:
    return {"TEST_OPENAI_API_KEY": KEY, "RECONCILER_SECRET_KEY": Fernet.generate_key().decode()}


def _lost_key_file(root: Path, key_file: Path) -> dict[str, str]:
    return {"TEST_OPENAI_API_KEY": KEY, "RECONCILER_SECRET_KEY_FILE": "elsewhere/none.key"}


CASES: list[tuple[str, Case, list[str]]] = [
    ("literal-key", _literal, [
        "providers.yaml:7:3: error: Provider \"openai-prod\" spec.api_key: a literal API key is not allowed in a manifest (it would end up in git)",
        "hint: write it as a reference: api_key: {from_env: OPENAI_API_KEY} or api_key: {from_file: secrets/openai.key}",
    ]),
    ("disallowed-variable", _disallowed_var, [
        "providers.yaml:7:13: error: Provider \"openai-prod\" spec.api_key.from_env: environment variable AWS_SECRET_ACCESS_KEY is not allowed as a secret source (allowed: RECONCILER_*, *_API_KEY)",
    ]),
    ("reconciler-setting", _own_setting, [
        "spec.api_key.from_env: environment variable RECONCILER_SECRET_KEY is one of reconciler's own settings and cannot be used as an api_key",
    ]),
    ("file-outside-root", _outside_root, ["spec.api_key.from_file: path '../outside.key' resolves outside the manifests root"]),
    ("missing-variable", _missing_var, [
        "providers.yaml:7:13: error: Provider \"openai-prod\" spec.api_key.from_env: environment variable UNSET_API_KEY is not set",
    ]),
    ("missing-file", _missing_file, ["error: Provider \"openai-prod\" spec.api_key.from_file: file 'secrets/openai.key' does not exist"]),
    ("loose-key-file", _loose_key_file, [
        "error: secret key file {key_file} is accessible by other users (mode 0644); refusing to use it", "hint: chmod 600",
    ]),
    ("key-file-directory", _key_file_is_a_directory, ["error: secret key file keydir is not a regular file"]),
    ("garbage-key", _garbage_key, ["error: key #1 in $RECONCILER_SECRET_KEY is not a valid Fernet key"]),
    ("db-under-another-key", _another_key, [
        "error: cannot decrypt the stored API key of provider 'openai-prod' with the secret key from $RECONCILER_SECRET_KEY: "
        "the database was encrypted under another key",
    ]),
    ("key-file-lost", _lost_key_file, [
        "error: no secret key: RECONCILER_SECRET_KEY is not set and elsewhere/none.key does not exist; "
        "the database holds API keys encrypted for providers 'openai-prod'",
    ]),
]


@pytest.mark.parametrize(("arrange", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_changes_nothing(arrange: Case, expected: list[str], applied: Path, cli_run: Any, db_url: str, tmp_path: Path) -> None:
    key_file = key_file_for(db_url)
    env = arrange(applied, key_file)
    expected = [line.format(key_file=key_file) if "{key_file}" in line else line for line in expected]
    before_db, before_key = dump_db(db_url), key_file.read_bytes()
    files_before = sorted(p.name for p in tmp_path.iterdir())
    for command in (["plan", str(applied)], ["apply", str(applied), "--auto-approve"], ["apply", str(applied), "--auto-approve", "--wait-validation"]):
        code, out, err = cli_run(*command, "--db", db_url, env=env)
        assert code == 1, (command, out, err)
        for line in expected:
            assert line in err, (command, err)
        assert "Traceback" not in err and "internal error" not in err
        assert "Apply complete" not in out
    assert dump_db(db_url) == before_db
    assert key_file.read_bytes() == before_key
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before
    assert "sk-literal-0000ffff" not in err and "aws-secret-value" not in err


@pytest.mark.parametrize("case", ["literal-key", "disallowed-variable", "reconciler-setting", "file-outside-root"])
def test_validate_reports_disallowed_references(case: str, applied: Path, cli_run: Any, db_url: str) -> None:
    arrange, expected = next((c[1], c[2]) for c in CASES if c[0] == case)
    env = arrange(applied, key_file_for(db_url))
    code, out, err = cli_run("validate", str(applied), env=env)
    assert code == 1 and expected[0] in err, err


def test_validate_needs_no_secret_values(cli_run: Any, write_manifests: Any) -> None:
    root = write_manifests({"providers.yaml": provider_doc("p", "openai", None, "{from_env: UNSET_API_KEY}")
                            + "---\n" + provider_doc("q", "openai", None, "{from_file: secrets/not-in-git.key}")})
    code, out, err = cli_run("validate", str(root))
    assert (code, out, err) == (0, "Valid: 2 resources in 1 file (2 providers).\n", "")
    assert not Path(".reconciler").exists()


@pytest.mark.parametrize("command", [["providers", "check"], ["providers", "models", "openai-prod"], ["secrets", "rotate"]])
def test_other_commands_refuse_a_db_under_another_key(command: list[str], applied: Path, cli_run: Any, db_url: str) -> None:
    before = dump_db(db_url)
    other = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
    code, _, err = cli_run(*command, "--db", db_url, env={"RECONCILER_SECRET_KEY": other})
    assert code == 1, err
    assert "cannot decrypt the stored API key of provider 'openai-prod'" in err and "Traceback" not in err
    assert dump_db(db_url) == before


def test_rotate_restores_the_key_file_when_it_fails(applied: Path, cli_run: Any, db_url: str) -> None:
    key_file = key_file_for(db_url)
    key_file.write_text(Fernet.generate_key().decode() + "\n")  # not the key the database was encrypted under
    before_db, before_key = dump_db(db_url), key_file.read_bytes()
    code, _, err = cli_run("secrets", "rotate", "--db", db_url)
    assert code == 1 and "cannot decrypt the stored API key of provider 'openai-prod'" in err
    assert (dump_db(db_url), key_file.read_bytes()) == (before_db, before_key)
