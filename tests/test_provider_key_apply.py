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


def test_the_secret_source_names_the_manifest_file_resolved(tmp_path, monkeypatch) -> None:
    """Apply re-reads a key relative to the manifest's real path: what ``Path.resolve`` gives it,
    through a symbolic link and from a relative path."""
    from pathlib import Path

    from reconciler.kinds.provider import secret_source
    from reconciler.manifests.loader import load_manifests

    real = tmp_path / "real" / "deep"
    real.mkdir(parents=True)
    (real / "providers.yaml").write_text(PROVIDER_WITH_KEY, encoding="utf-8")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    for given in ("linked/deep", "linked/../real/deep", str(tmp_path / "linked" / "deep")):
        m = load_manifests([given], cache=None).manifests[0]
        source = secret_source(m)
        assert source is not None and source["manifest"] == str(Path(m.raw.file).resolve()) == str(real / "providers.yaml")
