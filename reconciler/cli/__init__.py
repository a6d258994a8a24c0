"""Command line: parse arguments, call one function, print. Implementation modules are imported
inside each command so `reconciler --help` stays fast and plan/apply never import pydantic-ai."""

from __future__ import annotations

import os
import sys

import click

from reconciler import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="reconciler")
def cli() -> None:
    """GitOps for LLM agent configuration: YAML manifests -> plan -> apply."""


def _register() -> None:
    from reconciler.cli import core  # noqa: F401  (commands register themselves on `cli`)

    for optional in ("providers", "runs", "gitops"):
        try:
            __import__(f"reconciler.cli.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"reconciler.cli.{optional}":
                raise


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print a located message and exit 1, never a traceback."""
    from reconciler.errors import ReconcilerError
    from reconciler.gcpolicy import tune_for_batch

    _register()
    tune_for_batch()
    try:
        rv = cli.main(args=argv, prog_name="reconciler", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ReconcilerError as exc:
        for problem in exc.problems:
            click.echo(problem.render(), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last resort: a short message, traceback only on request
        if os.environ.get("RECONCILER_DEBUG"):
            raise
        click.echo(f"error: internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("  hint: rerun with RECONCILER_DEBUG=1 for a traceback and report it", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
