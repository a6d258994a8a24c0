from __future__ import annotations

import pytest

from tests.conftest import REPO

EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir() and any(p.rglob("*.yaml")) and p.name != "ci")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_manifests_validate(cli_run, example) -> None:
    code, out, err = cli_run("validate", str(example), env={"OPENAI_API_KEY": "sk-example"})
    assert code == 0, err
    assert out.startswith("Valid:")
