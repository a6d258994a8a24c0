from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO


def test_quick_start_manifests_apply_then_plan_is_empty(cli_run, sqlite_url: str) -> None:
    manifests = str(REPO / "manifests")
    code, out, err = cli_run("validate", manifests)
    assert code == 0, err
    assert "Valid: 5 resources" in out
    code, out, _ = cli_run("apply", manifests, "--db", sqlite_url, "--auto-approve")
    assert code == 0
    assert "Apply complete (#1): 5 created, 0 updated, 0 deleted." in out
    code, out, _ = cli_run("plan", manifests, "--db", sqlite_url, "--detailed-exitcode")
    assert (code, out) == (0, "No changes. The database matches the manifests.\n")
