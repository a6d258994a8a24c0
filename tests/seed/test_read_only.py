"""Reading a database reconciler has never written (get, history, drift, plan, export) works, shows
its rows as unmanaged, and creates nothing: no table, type or index, no file beside it, no state
directory or key file in the working directory."""

from __future__ import annotations

import json
from pathlib import Path

from tests.seed.helpers import database_objects, fill_like_the_service

KINDS = ("providers", "agents", "tasks", "assignments")


def test_reads_of_a_never_written_database_show_unmanaged_rows_and_create_nothing(
    cli_run, write_manifests, db_url: str, tmp_path: Path, _isolated_cwd: Path
) -> None:
    fill_like_the_service(db_url)
    untouched = database_objects(db_url)
    cwd_before = sorted(p.name for p in _isolated_cwd.iterdir())

    for kind in KINDS:
        code, out, err = cli_run("get", kind, "--db", db_url, "-o", "json")
        assert code == 0, err
        rows = json.loads(out)
        assert rows and not any(r["managed"] for r in rows), kind
    code, out, _ = cli_run("get", "agents", "Message Classifier", "--db", db_url, "-o", "json")
    assert (code, [r["name"] for r in json.loads(out)]) == (0, ["Message Classifier"])
    code, out, _ = cli_run("get", "assignments", "--db", db_url)
    assert code == 0 and "Message Classifier+Classify Message" in out
    assert cli_run("history", "--db", db_url)[0] == 0
    assert cli_run("history", "--db", db_url, "-o", "json")[1] == "[]\n"
    assert cli_run("drift", "--db", db_url, "--detailed-exitcode")[0] == 0
    root = write_manifests({"p.yaml": """
        apiVersion: reconciler/v1
        kind: Provider
        metadata: {name: gpu-box}
        spec: {type: ollama, base_url: "http://127.0.0.1:9"}
        """})
    code, out, err = cli_run("plan", str(root), "--db", db_url)
    assert code == 0, err
    assert "  + provider gpu-box\n" in out
    assert "Unmanaged (never touched): agent Message Classifier, assignment Message Classifier+Classify Message, provider Ollama Local, provider OpenAI GPT-4, task Classify Message" in out
    code, out, err = cli_run("export", "--db", db_url)
    assert code == 0 and out.count("kind: ") == 5 and "not managed by reconciler yet" in out

    assert database_objects(db_url) == untouched
    assert sorted(p.name for p in _isolated_cwd.iterdir()) == cwd_before  # no .reconciler/, no key file
