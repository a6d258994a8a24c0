from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gitops.helpers import GitRepo
from tests.runs.conftest import fake_model  # noqa: F401  (a fixture: runs started by watch)


@pytest.fixture
def git_repo(tmp_path: Path) -> Callable[..., GitRepo]:
    """git_repo("name") -> a fresh repository under the test's temporary directory."""

    def make(name: str = "repo") -> GitRepo:
        return GitRepo(tmp_path / name)

    return make
