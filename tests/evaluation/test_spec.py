"""A task's `evaluation`: checked offline by `validate` as a run's inputs are (template fields, `expected`
against the task's schema, the gate's ranges), each problem at its file:line."""

from __future__ import annotations

import json

import pytest

TASK = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: classify}
spec:
  response_schema: {type: object, properties: {category: {type: string}}, required: [category]}
  evaluation:
EVALUATION
"""


def _task(evaluation: str) -> str:
    return TASK.replace("EVALUATION", "\n".join("    " + line for line in evaluation.strip().splitlines()))


LABELLED = '{"text": "The app crashes", "label": "bug"}\n{"text": "Add dark mode", "label": "feature"}\n'


def test_a_valid_evaluation_passes(cli_run, write_manifests) -> None:
    evaluation = """
inputs_file: data/labelled.jsonl
prompt_template: "Message: {text}"
expected: {input: label, output: category}
gate: {min_accuracy: 0.55, max_drop: 0.05, significance: 0.05, min_valid: 0.95}
"""
    root = write_manifests({"task.yaml": _task(evaluation), "data/labelled.jsonl": LABELLED})
    code, out, err = cli_run("validate", str(root))
    assert (code, err) == (0, "") and "Valid: 1 resource in" in out


@pytest.mark.parametrize(
    ("evaluation", "line", "message"),
    [
        pytest.param(
            'inputs_file: data/labelled.jsonl\nprompt_template: "Message: {txt}"\nexpected: {input: label, output: category}',
            8,
            "spec.evaluation.prompt_template: {txt} is not a field of line 1 of data/labelled.jsonl (fields: label, text)",
            id="template-field",
        ),
        pytest.param(
            "inputs_file: data/labelled.jsonl\nexpected: {input: label, output: categry}",
            8,
            "spec.evaluation.expected.output: expected output field 'categry' is not a property of the response_schema of Task 'classify'",
            id="expected-output",
        ),
        pytest.param(
            "inputs_file: data/labelled.jsonl\nexpected: {input: answer, output: category}",
            8,
            "spec.evaluation.expected.input: {answer} is not a field of line 1 of data/labelled.jsonl",
            id="expected-input",
        ),
        pytest.param(
            "inputs_file: data/missing.jsonl\nexpected: {input: label, output: category}",
            7,
            "spec.evaluation.inputs_file:",
            id="missing-file",
        ),
        pytest.param(
            "inputs: [{text: a, label: bug}]\ninputs_file: data/labelled.jsonl\nexpected: {input: label, output: category}",
            6,
            "spec.evaluation: give exactly one of inputs or inputs_file",
            id="two-input-sources",
        ),
        pytest.param(
            "inputs: [{text: a, label: bug}]\nexpected: {input: label, output: category}\ngate: {min_accuracy: 1.5}",
            9,
            "spec.evaluation.gate.min_accuracy: found 1.5; input should be less than or equal to 1",
            id="gate-range",
        ),
        pytest.param(
            "inputs: [{text: a, label: bug}]\nexpected: {input: label, output: category}\ngate: {significance: 0.05}",
            9,
            "spec.evaluation.gate: significance qualifies max_drop: give max_drop as well",
            id="significance-without-drop",
        ),
        pytest.param(
            "inputs: [{text: a, label: bug}]\nexpected: category",
            8,
            "spec.evaluation.expected:",
            id="expected-needs-both-fields",
        ),
    ],
)
def test_a_bad_evaluation_is_located(cli_run, write_manifests, evaluation: str, line: int, message: str) -> None:
    root = write_manifests({"task.yaml": _task(evaluation), "data/labelled.jsonl": LABELLED})
    for _ in range(2):  # parsed, then from the parse cache: the same problems
        code, _, err = cli_run("validate", str(root))
        assert code == 1
        assert f"task.yaml:{line}:" in err and message in err, err
        assert "Traceback" not in err


def test_the_evaluation_is_not_configuration(cli_run, write_manifests, sqlite_url: str) -> None:
    """Adding an evaluation to an applied task plans no change: it is how the task is tested, not written."""
    plain = TASK.replace("  evaluation:\nEVALUATION\n", "")
    root = write_manifests({"task.yaml": plain})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    evaluation = _task("inputs_file: data/labelled.jsonl\nexpected: {input: label, output: category}")
    write_manifests({"task.yaml": evaluation, "data/labelled.jsonl": LABELLED})
    code, out, err = cli_run("plan", str(root), "--db", sqlite_url, "--json")
    assert code == 0, err
    assert json.loads(out)["changes"] == []
