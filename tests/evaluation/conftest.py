"""The git repositories of the gitops tests, for the CI job played here."""

from tests.gitops.conftest import git_repo  # noqa: F401
