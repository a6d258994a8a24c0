"""validate and plan of a hostile pull request: no network, no file outside the manifests root,
no environment variable outside the allowed set (recorded by an audit hook in a child process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from reconciler.providers import secrets
from tests.reliability.untrusted import CANARY, base_env, guarded_run, hostile_sets


@pytest.fixture
def sets(tmp_path: Path) -> dict[str, Path]:
    return hostile_sets(tmp_path / "pr")


@pytest.mark.parametrize("command", ["validate", "plan"])
@pytest.mark.parametrize("which", ["refused", "accepted"])
def test_hostile_pr_touches_nothing_outside_the_root(command: str, which: str, sets: dict[str, Path], tmp_path: Path) -> None:
    root = sets[which]
    db_file = tmp_path / "state.db"
    args = [command, str(root)] + (["--db", f"sqlite:///{db_file}"] if command == "plan" else [])
    access = guarded_run(args, root, tmp_path, env=base_env(Fernet.generate_key().decode()), db_file=db_file)
    assert access.exit_code == (1 if which == "refused" else 0), access.output
    assert CANARY not in access.output
    assert access.outside_files == []
    assert access.outside_listings == []
    assert access.network == []
    assert access.subprocesses == []
    assert access.env_outside == []
    assert access.env_enumerated == []


@pytest.mark.skipif(not hasattr(secrets, "check_env_name"), reason="the secret-variable allowlist (providers issue) has not landed")
def test_secret_reference_to_a_ci_variable_is_refused_unread(sets: dict[str, Path], tmp_path: Path) -> None:
    root = sets["env-probe"]
    access = guarded_run(["plan", str(root), "--db", f"sqlite:///{tmp_path / 's.db'}"], root, tmp_path, env=base_env(Fernet.generate_key().decode()))
    assert access.exit_code == 1
    assert "AWS_SECRET_ACCESS_KEY" not in access.env_outside, access.output
