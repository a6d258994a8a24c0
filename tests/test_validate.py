"""`reconciler validate`: every problem reported at once, each located (file:line:col), exit 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROVIDER = """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: ollama-local}
spec: {type: ollama, base_url: "http://127.0.0.1:11434"}
"""
AGENT = """\
apiVersion: reconciler/v1
kind: Agent
metadata: {name: triage}
spec:
  provider: ollama-local
  model_name: llama3
  system_prompt: Classify.
"""
TASK = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: classify}
spec:
  response_schema:
    type: object
    properties: {category: {type: string, enum: [bug, feature]}}
"""
ASSIGNMENT = """\
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: triage-classify}
spec: {agent: triage, task: classify}
"""
VALID = {"providers.yaml": PROVIDER, "agents.yaml": AGENT, "tasks.yaml": TASK + "---\n" + ASSIGNMENT}


def run_validate(cli_run, root: Path) -> tuple[int, str, str]:
    return cli_run("validate", str(root))


def test_valid_set_passes(cli_run, write_manifests) -> None:
    code, out, err = run_validate(cli_run, write_manifests(VALID))
    assert (code, err) == (0, "")
    assert out.startswith("Valid: 4 resources in 3 files")


BAD_CASES = {
    "yaml-syntax": ("agents.yaml", AGENT + "  bad: [unclosed\n", "agents.yaml:9:1: error: invalid YAML"),
    "unknown-api-version": ("agents.yaml", AGENT.replace("reconciler/v1", "reconciler/v9"), "agents.yaml:1:1: error: Agent \"triage\" apiVersion: unknown apiVersion 'reconciler/v9'"),
    "unknown-kind": ("agents.yaml", AGENT.replace("kind: Agent", "kind: Agnet"), "did you mean 'Agent'?"),
    "unknown-field": ("agents.yaml", AGENT + "  temprature: 0.3\n", "agents.yaml:8:3: error: Agent \"triage\" spec.temprature: unknown field\n  hint: did you mean 'temperature'?"),
    "missing-field": ("agents.yaml", AGENT.replace("  model_name: llama3\n", ""), "agents.yaml:4:1: error: Agent \"triage\" spec.model_name: missing required field"),
    "wrong-type": ("agents.yaml", AGENT + "  temperature: hot\n", "agents.yaml:8:3: error: Agent \"triage\" spec.temperature: found 'hot'; input should be a valid number"),
    "out-of-range": ("agents.yaml", AGENT + "  temperature: 2.5\n", "spec.temperature: found 2.5; input should be less than or equal to 2"),
    "max-tokens-not-positive": ("agents.yaml", AGENT + "  max_tokens: 0\n", "spec.max_tokens: found 0; input should be greater than 0"),
    "bad-name": ("agents.yaml", AGENT.replace("name: triage}", "name: Triage_Bot}"), "metadata.name: found 'Triage_Bot'"),
    "dangling-provider": ("agents.yaml", AGENT.replace("provider: ollama-local", "provider: ollama-remote"), "agents.yaml:5:3: error: Agent \"triage\" spec.provider: refers to Provider 'ollama-remote', which is not defined in the manifests"),
    "dangling-task": ("tasks.yaml", TASK + "---\n" + ASSIGNMENT.replace("task: classify}", "task: clasify}"), "did you mean 'classify'?"),
    "duplicate-name": ("agents.yaml", AGENT + "---\n" + AGENT, "agents.yaml:11:12: error: Agent \"triage\" metadata.name: duplicate name: Agent 'triage' is already defined at"),
    "duplicate-pair": ("tasks.yaml", TASK + "---\n" + ASSIGNMENT + "---\n" + ASSIGNMENT.replace("name: triage-classify}", "name: again}"), "already assigned by Assignment 'triage-classify' at"),
    "invalid-schema": ("tasks.yaml", TASK.replace("type: object", "type: objekt") + "---\n" + ASSIGNMENT, "spec.response_schema.type: not a valid JSON Schema"),
    "literal-key": ("providers.yaml", PROVIDER.replace("base_url", "api_key: sk-live-123, base_url"), "a literal API key is not allowed"),
    "duplicate-yaml-key": ("agents.yaml", AGENT + "  model_name: llama4\n", "agents.yaml:8:3: error: spec.model_name: duplicate key 'model_name' (first defined at line 6)"),
    "python-tag": ("agents.yaml", AGENT + "  description: !!python/object/apply:os.system [echo hi]\n", "unsupported YAML tag"),
    "not-a-mapping": ("agents.yaml", "- just\n- a list\n", "agents.yaml:1:1: error: a manifest must be a mapping"),
}


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_manifest_is_located(cli_run, write_manifests, name: str) -> None:
    file, text, expected = BAD_CASES[name]
    root = write_manifests({**VALID, file: text})
    code, out, err = run_validate(cli_run, root)
    assert code == 1
    assert out == ""
    assert expected in err.replace(str(root) + "/", "")
    assert "Traceback" not in err


def test_every_error_is_reported_at_once(cli_run, write_manifests) -> None:
    root = write_manifests(
        {
            **VALID,
            "agents.yaml": AGENT + "  temperature: 9\n",
            "providers.yaml": PROVIDER.replace("type: ollama", "type: olama"),
        }
    )
    code, _, err = run_validate(cli_run, root)
    assert code == 1
    assert "spec.temperature" in err and "spec.type" in err
    assert err.rstrip().endswith("Found 2 errors; nothing was changed.")


def test_empty_file_and_document_are_skipped_with_warning(cli_run, write_manifests) -> None:
    root = write_manifests({**VALID, "empty.yaml": "", "agents.yaml": AGENT + "---\n---\n"})
    code, out, err = run_validate(cli_run, root)
    assert code == 0
    assert "empty.yaml: warning: file is empty; skipped" in err
    assert "warning: document 2 is empty; skipped" in err


def test_directory_without_manifests(cli_run, tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "README.md").write_text("hi")
    code, _, err = cli_run("validate", str(tmp_path / "nothing"))
    assert code == 1
    assert "directory contains no manifests (*.yaml, *.yml)" in err


def test_missing_path(cli_run) -> None:
    code, _, err = cli_run("validate", "does-not-exist")
    assert code == 1
    assert "does-not-exist: error: no such file or directory" in err


def test_binary_file(cli_run, write_manifests) -> None:
    root = write_manifests(VALID)
    (root / "blob.yaml").write_bytes(b"\x89PNG\x00\x00\x01binary")
    code, _, err = cli_run("validate", str(root))
    assert code == 1
    assert "blob.yaml: error: file is binary, not YAML text" in err


def test_very_large_file(cli_run, write_manifests, monkeypatch: pytest.MonkeyPatch) -> None:
    import reconciler.manifests.yamlfile as yamlfile

    monkeypatch.setattr(yamlfile, "MAX_FILE_BYTES", 1000)
    root = write_manifests({**VALID, "big.yaml": "# " + "x" * 2000 + "\n"})
    code, _, err = cli_run("validate", str(root))
    assert code == 1
    assert "big.yaml: error: file is 2,003 bytes, larger than the limit of 1,000 bytes" in err


def test_billion_laughs_is_bounded(cli_run, write_manifests) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]" for i in range(1, 9)]
    root = write_manifests({**VALID, "bomb.yaml": "\n".join(lines) + "\n"})
    code, _, err = cli_run("validate", str(root))
    assert code == 1
    assert "bomb.yaml:" in err and "more than 200000 YAML nodes" in err


def test_schema_from_file_must_stay_inside_root(cli_run, write_manifests, tmp_path: Path) -> None:
    (tmp_path / "outside.json").write_text('{"type": "object"}')
    task = TASK.replace(
        "  response_schema:\n    type: object\n    properties: {category: {type: string, enum: [bug, feature]}}\n",
        "  response_schema: {from_file: ../outside.json}\n",
    )
    root = write_manifests({**VALID, "tasks.yaml": task + "---\n" + ASSIGNMENT})
    code, _, err = cli_run("validate", str(root))
    assert code == 1
    assert "spec.response_schema.from_file: path '../outside.json' resolves outside the manifests root" in err


def test_schema_from_file_inside_root(cli_run, write_manifests) -> None:
    task = TASK.replace(
        "  response_schema:\n    type: object\n    properties: {category: {type: string, enum: [bug, feature]}}\n",
        "  response_schema: {from_file: schemas/classify.json}\n",
    )
    root = write_manifests({**VALID, "tasks.yaml": task + "---\n" + ASSIGNMENT, "schemas/classify.json": '{"type": "object"}'})
    code, _, err = cli_run("validate", str(root))
    assert (code, err) == (0, "")


RUN = """\
apiVersion: reconciler/v1
kind: Run
metadata: {name: nightly}
spec:
  assignment: triage-classify
  prompt_template: "Message: {text}"
"""


def test_run_template_placeholder_missing_from_inputs(cli_run, write_manifests) -> None:
    run = RUN + "  inputs:\n    - {text: hello}\n    - {body: oops}\n"
    code, _, err = cli_run("validate", str(write_manifests({**VALID, "run.yaml": run})))
    assert code == 1
    assert "run.yaml:9:7: error: Run \"nightly\" spec.prompt_template: {text} is not a field of input 1 (fields: body)" in err.replace(os.sep, "/")


def test_run_inputs_file_bad_row_names_line(cli_run, write_manifests) -> None:
    run = RUN + "  inputs_file: data/in.jsonl\n"
    root = write_manifests({**VALID, "run.yaml": run, "data/in.jsonl": '{"text": "a"}\n{"text": \n'})
    code, _, err = cli_run("validate", str(root))
    assert code == 1
    assert "spec.inputs_file: in.jsonl: line 2 is not valid JSON" in err


def test_run_needs_existing_assignment(cli_run, write_manifests) -> None:
    run = RUN.replace("assignment: triage-classify", "assignment: nope") + "  inputs: [hello]\n"
    code, _, err = cli_run("validate", str(write_manifests({**VALID, "run.yaml": run.replace("{text}", "{input}")})))
    assert code == 1
    assert "spec.assignment: refers to Assignment 'nope'" in err


def test_validate_json_output(cli_run, write_manifests) -> None:
    import json

    root = write_manifests({**VALID, "agents.yaml": AGENT + "  temperature: 9\n"})
    code, out, _ = cli_run("validate", str(root), "-o", "json")
    data = json.loads(out)
    assert code == 1
    assert data["valid"] is False
    assert data["problems"][0]["line"] == 8
    assert data["problems"][0]["field"] == "spec.temperature"


def test_name_list_bounds_long_messages() -> None:
    from reconciler.errors import name_list

    assert name_list(["b", "a"]) == "'a', 'b'"
    assert name_list([f"p{i:02}" for i in range(12)], shown=3) == "'p00', 'p01', 'p02' and 9 more"
