"""`expected` names an input field and an output property, checked against the task's schema; and
`reconciler run` exits 0 / 1 / 100 (or $RECONCILER_FAILED_ITEMS_EXIT_CODE) so CI can tell them apart."""

from __future__ import annotations

import json

import pytest

from reconciler.errors import ReconcilerError
from reconciler.kinds.expected import expected_fields, expected_problem
from reconciler.runs.outcome import Outcome, exit_code, failed_items_exit_code, outcome_of
from tests.runs.conftest import CONFIG, RUN, keyword_classifier

# the issue's reproduction: the inputs call the answer `label`, the task's answers call it `category`
LABELLED_RUN = RUN.replace("category: bug}", "label: bug}").replace("category: feature}", "label: feature}").replace(
    "category: question}", "label: question}"
)
SCHEMA = {"type": "object", "properties": {"category": {"type": "string"}, "confidence": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("expected", "schema", "problem"),
    [
        ("category", SCHEMA, None),
        ({"input": "label", "output": "category"}, SCHEMA, None),
        ("label", SCHEMA, ("expected output field 'label' is not a property of the task's response_schema (properties: category, confidence)",
                           "name both fields: expected: {input: label, output: category} (the input field, then the answer's property)")),
        ({"input": "label", "output": "categroy"}, SCHEMA, ("expected output field 'categroy' is not a property of the task's response_schema (properties: category, confidence)",
                                                            "did you mean 'category'? output names a property of the response_schema")),
        ("label", {"type": "string"}, None),  # the whole answer is compared
        ({"input": "label", "output": "category"}, {"type": "string"}, ("expected names output field 'category', but the answers of the task's response_schema have no fields",
                                                                          "compare the whole answer: expected: label")),
        ("label", {"anyOf": [{"type": "object"}, {"type": "string"}]}, None),  # cannot be told
        (None, SCHEMA, None),
    ],
    ids=["same-name", "both-named", "issue-repro", "typo", "free-text", "free-text-with-field", "unknowable", "none"],
)
def test_expected_problem(expected: object, schema: dict, problem: tuple[str, str] | None) -> None:
    assert expected_problem(expected, schema) == problem


def test_expected_fields() -> None:
    assert expected_fields("category") == ("category", "category")
    assert expected_fields({"input": "label", "output": "category"}) == ("label", "category")
    assert expected_fields(None) is None


def test_validate_rejects_an_output_field_the_task_lacks(cli_run, write_manifests) -> None:
    root = write_manifests({"config.yaml": CONFIG, "run.yaml": LABELLED_RUN.replace("expected: category", "expected: label")})
    code, out, err = cli_run("validate", str(root))
    assert code == 1
    assert (
        "run.yaml:7:3: error: Run \"sample\" spec.expected: expected output field 'label' is not a property of the response_schema "
        "of Task 'classify' (properties: category, confidence)\n  hint: name both fields: expected: {input: label, output: category}"
    ) in err


def test_validate_locates_a_bad_output_and_a_missing_input_field(cli_run, write_manifests) -> None:
    run = LABELLED_RUN.replace("expected: category", "expected: {input: lable, output: categry}")
    code, out, err = cli_run("validate", str(write_manifests({"config.yaml": CONFIG, "run.yaml": run})))
    assert code == 1
    assert "run.yaml:7:28: error: Run \"sample\" spec.expected.output: expected output field 'categry' is not a property" in err
    assert "hint: did you mean 'category'?" in err
    assert "run.yaml:10:7: error: Run \"sample\" spec.expected.input: {lable} is not a field of input 0 (fields: label, text)" in err


def test_validate_rejects_a_misshapen_expected(cli_run, write_manifests) -> None:
    run = RUN.replace("expected: category", "expected: {input: category, outptu: category}")
    code, out, err = cli_run("validate", str(write_manifests({"config.yaml": CONFIG, "run.yaml": run})))
    assert code == 1
    assert "run.yaml:7:31: error: Run \"sample\" spec.expected.outptu: unknown field" in err
    assert "spec.expected.output: missing required field" in err
    assert "valid string" not in err  # the other form of expected is not blamed


def test_both_named_expected_scores_right_answers_as_right(cli_run, write_manifests, fake_model, sqlite_url: str) -> None:
    fake_model(keyword_classifier)
    run = LABELLED_RUN.replace("expected: category", "expected: {input: label, output: category}")
    root = write_manifests({"config.yaml": CONFIG, "run.yaml": run})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    code, out, err = cli_run("run", "sample", "--db", sqlite_url)
    assert code == 0, err
    assert "completed — 4/4 valid, 0 failed, accuracy 100%" in out
    results = json.loads(cli_run("runs", "results", "sample", "--db", sqlite_url, "-o", "json")[1])
    assert [(r["expected"], r["correct"]) for r in results] == [("bug", True), ("feature", True), ("question", True), ("bug", True)]


def test_run_file_refuses_an_output_field_only_the_database_task_lacks(cli_run, write_manifests, fake_model, sqlite_url: str) -> None:
    """`run FILE` checks references against the database, so the schema check happens when the run starts."""
    fake_model(keyword_classifier)
    assert cli_run("apply", str(write_manifests({"config.yaml": CONFIG})), "--db", sqlite_url, "--auto-approve")[0] == 0
    run = write_manifests({"run.yaml": LABELLED_RUN.replace("expected: category", "expected: label")}, directory="runs") / "run.yaml"
    code, out, err = cli_run("run", str(run), "--db", sqlite_url)
    assert code == 1
    assert "run 'sample': expected output field 'label' is not a property of the response_schema of Task 'classify'" in err
    assert "hint: name both fields: expected: {input: label, output: category}" in err
    assert json.loads(cli_run("runs", "list", "--db", sqlite_url, "-o", "json")[1])[0]["status"] == "pending"


@pytest.mark.parametrize(
    ("failed", "unfinished", "outcome"),
    [(0, 0, Outcome.OK), (2, 0, Outcome.FAILED_ITEMS), (0, 3, Outcome.ERROR), (1, 1, Outcome.ERROR)],
    ids=["all-valid", "some-failed", "stopped", "both"],
)
def test_outcome_of(failed: int, unfinished: int, outcome: Outcome) -> None:
    assert outcome_of(failed, unfinished) is outcome


def test_exit_code_is_the_worst_outcome() -> None:
    assert exit_code([Outcome.OK, Outcome.OK]) == 0
    assert exit_code([Outcome.OK, Outcome.FAILED_ITEMS]) == 100
    assert exit_code([Outcome.FAILED_ITEMS, Outcome.ERROR]) == 1
    assert exit_code([Outcome.FAILED_ITEMS], failed_items_code=0) == 0
    assert failed_items_exit_code({}) == 100
    assert failed_items_exit_code({"RECONCILER_FAILED_ITEMS_EXIT_CODE": "3"}) == 3
    for bad in ("abc", "256", "-1"):
        with pytest.raises(ReconcilerError, match="not an exit status"):
            failed_items_exit_code({"RECONCILER_FAILED_ITEMS_EXIT_CODE": bad})


def test_run_exit_codes_through_the_cli(cli_run, write_manifests, fake_model, sqlite_url: str) -> None:
    fake_model(lambda p: {"category": "urgent", "confidence": 5} if "Export" in p else keyword_classifier(p))
    second = RUN.replace("name: sample", "name: sample-2").replace("Export is broken", "Export fails")
    root = write_manifests({"config.yaml": CONFIG, "run.yaml": RUN, "run2.yaml": second})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    code, out, err = cli_run("run", "sample", "--db", sqlite_url, env={"RECONCILER_FAILED_ITEMS_EXIT_CODE": "oops"})
    assert code == 1 and "$RECONCILER_FAILED_ITEMS_EXIT_CODE is 'oops', not an exit status" in err
    assert json.loads(cli_run("runs", "list", "--db", sqlite_url, "-o", "json")[1])[0]["status"] == "pending"  # nothing ran
    code, out, err = cli_run("run", "sample", "--db", sqlite_url, env={"RECONCILER_FAILED_ITEMS_EXIT_CODE": "3"})
    assert code == 3 and "partial — 3/4 valid, 1 failed" in out
    code, out, err = cli_run("run", "sample-2", "--db", sqlite_url)
    assert code == 100
    fake_model(keyword_classifier)
    code, out, err = cli_run("run", "sample", "--db", sqlite_url, "--retry-failed")
    assert code == 0 and "completed — 4/4 valid" in out
