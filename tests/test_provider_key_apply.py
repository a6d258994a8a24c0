"""A provider with an api_key applies on both databases (its ciphertext digest fits its column)."""

from __future__ import annotations

from cryptography.fernet import Fernet

PROVIDER_WITH_KEY = """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: hosted}
spec:
  type: openai
  base_url: https://llm.example.com/v1
  api_key: {from_env: TEST_LLM_API_KEY}
"""


def test_provider_with_api_key_applies_then_plans_empty(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests({"providers.yaml": PROVIDER_WITH_KEY})
    env = {"RECONCILER_SECRET_KEY": Fernet.generate_key().decode(), "TEST_LLM_API_KEY": "sk-test-value"}
    code, out, err = cli_run("apply", str(root), "--db", db_url, "--auto-approve", "--no-validate", env=env)
    assert (code, err) == (0, ""), out
    assert out.endswith("Apply complete (#1): 1 created, 0 updated, 0 deleted.\n")
    assert cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode", env=env) == (
        0,
        "No changes. The database matches the manifests.\n",
        "",
    )
