"""Command line: parse arguments, call one function, print. Implementation modules are imported
inside each command so `reconciler --help` stays fast and plan/apply never import pydantic-ai."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

import click

from reconciler import __version__

# command -> the module of reconciler.cli that defines it (registering itself on `cli`); a test keeps
# this equal to what the modules register
COMMAND_MODULES = {
    "validate": "core",
    "plan": "core",
    "apply": "core",
    "get": "core",
    "history": "core",
    "providers": "providers",
    "secrets": "providers",
    "run": "runs",
    "runs": "runs",
    "test": "runs",
    "experiments": "experiments",
    "worker": "workers",
    "drift": "gitops",
    "watch": "gitops",
    "export": "gitops",
    "adopt": "gitops",
    "serve": "serve",
}


class _LazyGroup(click.Group):
    """Imports a command's module when that command is asked for (click's lazy-loading pattern):
    `reconciler plan` imports ``cli.core`` and none of the other commands' modules, which cost
    about 5 ms of every command; ``--help`` and completion list them all."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            _import_commands(module)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register()
        return super().list_commands(ctx)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="reconciler")
def cli() -> None:
    """GitOps for LLM agent configuration: YAML manifests -> plan -> apply."""


def _import_commands(module: str) -> None:
    """Import ``reconciler.cli.<module>`` (its commands register themselves on ``cli``); a module
    left out of the installation (an optional part) registers nothing."""
    try:
        __import__(f"reconciler.cli.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"reconciler.cli.{module}":
            raise


def _register() -> None:
    """Every command, for listing them."""
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        _import_commands(module)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print a located message and exit 1, never a traceback."""
    from reconciler.errors import ReconcilerError, first_line
    from reconciler.gcpolicy import tune_for_batch

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
    except Exception as exc:  # last resort: a short message, traceback only on request
        if os.environ.get("RECONCILER_DEBUG"):
            raise
        click.echo(f"error: internal error: {type(exc).__name__}: {first_line(exc)}", err=True)
        click.echo("  hint: rerun with RECONCILER_DEBUG=1 for a traceback and report it", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


def entry_point() -> NoReturn:
    """The installed ``reconciler`` command: ``main``, then exit without tearing the interpreter down.

    Freeing the objects of 10,000 loaded manifests one by one at interpreter shutdown took 0.1-0.2 s
    of a 1.5 s plan, for nothing. Exit handlers still run (they stop the embedded model server and
    close database connections) and output is flushed; only when other threads are still running
    does this fall back to a normal exit, so nothing is cut short. Tests call ``main`` instead."""
    try:
        main()
    except SystemExit as exc:
        code = _exit_status(exc)
    else:  # pragma: no cover - main always exits
        code = 0
    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`reconciler plan | head`): nothing to deliver
            pass
    os._exit(code)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1
