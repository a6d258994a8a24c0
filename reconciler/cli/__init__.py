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

# command -> (the module of reconciler.cli that defines it, registering itself on `cli`; its one-line
# summary in `reconciler --help`, the first sentence of its docstring). A test keeps both equal to
# what the modules register.
COMMANDS = {
    "validate": ("core", "Check manifests without a database or network; report every problem at once."),
    "plan": ("core", "Show what apply would change in the database (--evaluate: and in the agents' behaviour)."),
    "apply": ("core", "Make the database match the manifests (PATH...) or apply a saved plan (FILE)."),
    "get": ("core", "List the resources of one KIND (e.g. providers, agents, tasks, assignments) as stored in the database."),
    "history": ("core", "List past applies: when, who, which commit, what changed."),
    "providers": ("providers", "Check that providers answer and list the models they serve."),
    "secrets": ("providers", "Manage the key that encrypts provider API keys at rest."),
    "run": (
        "runs",
        "Execute (or resume) a run or an experiment by name (run/NAME or experiment/NAME when both kinds have one of that"
        " name), or the Run and Experiment manifests in FILE (applied first); with --distribute, hand a run's (or an"
        " experiment's) items to workers on any host that share the PostgreSQL database.",
    ),
    "runs": ("runs", "List runs, show one with its config snapshot, print its results."),
    "test": ("runs", "Send one prompt to an agent: response, elapsed time, model, provider, task."),
    "experiments": (
        "experiments",
        "List experiments; show one's report (accuracy with intervals, McNemar against the baseline, a plot).",
    ),
    "worker": (
        "workers",
        "Process the chunks of distributed runs (`reconciler run NAME --distribute`) until SIGTERM or Ctrl-C: the items in"
        " flight finish, the rest go back to the queue for other workers.",
    ),
    "drift": ("gitops", "Report managed resources changed in the database outside reconciler since they were applied."),
    "watch": ("gitops", "Keep the database equal to the manifests: apply on every change, check for drift on an interval."),
    "export": ("gitops", "Write the database's configuration as manifests (secrets as references, never values)."),
    "adopt": ("gitops", "Put existing rows reconciler does not manage under management (KIND/NAME, globs allowed)."),
    "serve": (
        "serve",
        "Serve the state read-only: a JSON API under /api/v1, Server-Sent Events at /api/v1/events and a dashboard at /.",
    ),
}
COMMAND_MODULES = {name: module for name, (module, _) in COMMANDS.items()}


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

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """``--help``'s list of commands from ``COMMANDS``' summaries, formatted by click as ever:
        importing every command module for their docstrings' first sentences took about 10 ms of a
        70 ms ``--help``. A command already registered is listed as itself."""
        listed = {**{name: click.Command(name, help=summary) for name, (_, summary) in COMMANDS.items()}, **self.commands}
        click.Group(self.name, commands=listed).format_commands(ctx, formatter)


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
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:
        # imported here: every command has imported it by now, and `--help` need not (3 ms)
        from reconciler.errors import ReconcilerError, first_line

        if isinstance(exc, ReconcilerError):
            for problem in exc.problems:
                click.echo(problem.render(), err=True)
            sys.exit(1)
        # last resort: a short message, traceback only on request
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
