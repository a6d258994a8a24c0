"""providers check/models, secrets rotate/forget/generate-key, and validation after apply."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from reconciler.cli import cli
from reconciler.cli.options import db_option

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Engine

    from reconciler.providers.validation import ValidationResult

DEFAULT_TIMEOUT = 10.0
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="S",
    help="Seconds each provider may take to answer.",
)


def _engine(db: str | None) -> Engine:
    from reconciler.errors import ReconcilerError
    from reconciler.state.db import open_engine

    engine = open_engine(db, create=False)
    if engine is None:
        raise ReconcilerError("the state database does not exist yet: there are no providers", hint="run `reconciler apply` first")
    return engine


def describe_validation(r: ValidationResult) -> str:
    if not r.ok:
        return f"error: {r.error}"
    n = len(r.models)
    return f"connected ({n} model{'s' if n != 1 else ''})"


@cli.group()
def providers() -> None:
    """Check that providers answer and list the models they serve."""


@providers.command("check")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@db_option
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="Print each status change as a JSON line.")
def check(names: tuple[str, ...], db: str | None, timeout: float, as_json: bool) -> int:
    """Re-validate providers (default: every active one) concurrently; exit 1 if any fails."""
    from reconciler.cli.output import emit_rows
    from reconciler.errors import ReconcilerError
    from reconciler.providers.events import json_line, provider_events
    from reconciler.providers.status import check_providers
    from reconciler.state.db import translate_db_errors

    engine = _engine(db)
    unsubscribe = provider_events.subscribe(lambda event: click.echo(json_line(event))) if as_json else None
    try:
        with translate_db_errors(engine.url, "validating providers"):
            results = check_providers(engine, list(names) or None, timeout=timeout)
    finally:
        if unsubscribe is not None:
            unsubscribe()
    if not as_json:
        if not results:
            click.echo("No active providers to check.")
        rows = [{"name": r.name, "status": r.status, "models": len(r.models), "time": f"{r.elapsed:.2f}s", "error": r.error} for r in results]
        if rows:
            emit_rows(rows, "table", ["name", "status", "models", "time", "error"])
    missing = report_models(engine, [r.name for r in results], as_json=as_json)
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise ReconcilerError(
            f"{len(failed)} of {len(results)} provider{'s' if len(results) != 1 else ''} failed validation: {', '.join(failed)}",
            hint="fix the provider's base_url or api_key and run `reconciler providers check` again",
        )
    if missing:
        raise ReconcilerError(
            f"{len(missing)} active agent{'s' if len(missing) != 1 else ''} use a model {'its' if len(missing) == 1 else 'their'} "
            f"provider does not serve: {', '.join(missing)}",
            hint="fix each agent's model_name (see the warnings above), or make the provider serve it",
        )
    return 0


def report_models(engine: Engine, providers: Sequence[str] | None, *, as_json: bool = False) -> list[str]:
    """Check every active agent's model_name against its provider's model list (of ``providers``, or
    all); warn about each missing one (a JSON line with ``as_json``) and return their agents' names."""
    import json

    from reconciler.providers.model_check import ModelStatus, model_checks

    checks = [c for c in model_checks(engine, active_only=True).values() if providers is None or c.provider in providers]
    missing = [c for c in checks if c.status is ModelStatus.MISSING]
    for c in missing:
        if as_json:
            click.echo(json.dumps({"event": "model_check", **c.to_dict()}))
        else:
            click.echo(f"warning: {c.message()}\n  hint: {c.hint()}", err=True)
    return [c.agent for c in missing]


@providers.command("models")
@click.argument("name")
@db_option
@timeout_option
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text")
def models(name: str, db: str | None, timeout: float, fmt: str) -> int:
    """List the models provider NAME serves."""
    import json

    from reconciler.errors import ReconcilerError
    from reconciler.providers.status import list_models
    from reconciler.state.db import translate_db_errors

    engine = _engine(db)
    with translate_db_errors(engine.url, "reading the provider"):
        result = list_models(engine, name, timeout=timeout)
    if not result.ok:
        raise ReconcilerError(f"provider {name!r}: {result.error}")
    if fmt == "json":
        click.echo(json.dumps({"provider": name, "url": result.url, "models": list(result.models)}, indent=2))
    elif result.models:
        click.echo("\n".join(result.models))
    else:
        click.echo(f"Provider {name!r} serves no models.", err=True)
    return 0


@cli.group()
def secrets() -> None:
    """Manage the key that encrypts provider API keys at rest."""


@secrets.command("rotate")
@db_option
@click.option("--keep-old", is_flag=True, help="Keep the previous keys in the key file (e.g. for other databases that use it).")
@click.option("--lock-timeout", type=float, default=None, help="Seconds to wait for a running apply (default 60).")
def rotate(db: str | None, keep_old: bool, lock_timeout: float | None) -> int:
    """Re-encrypt every stored API key under a new key.

    With the key file (.reconciler/secret.key) a new key is generated. With RECONCILER_SECRET_KEY,
    put the new key first (NEW,OLD), rotate, then keep only NEW.
    """
    from reconciler.providers.rotation import rotate_secrets

    engine = _engine(db)
    result = rotate_secrets(engine, keep_old=keep_old, lock_timeout=lock_timeout)
    n = len(result.providers)
    click.echo(f"Re-encrypted {n} API key{'s' if n != 1 else ''} under the new key" + (f" ({', '.join(result.providers)})." if n else "."))
    if result.generated:
        click.echo(f"Generated the new key in {result.source}.")
    if result.source.startswith("$"):
        click.echo(f"Now set {result.source[1:]} to the new key alone (the first one); the old key is no longer needed.")
    elif result.old_keys_kept:
        click.echo(f"Kept {result.old_keys_kept} previous key(s) in {result.source}; remove them once no database needs them.")
    return 0


@secrets.command("forget")
@db_option
@click.option("--undecryptable", is_flag=True, required=True, help="Clear the stored API keys no configured key can decrypt.")
@click.option("--lock-timeout", type=float, default=None, help="Seconds to wait for a running apply (default 60).")
def forget(db: str | None, undecryptable: bool, lock_timeout: float | None) -> int:
    """Clear API keys encrypted under a lost key, so the next apply stores them again."""
    from reconciler.providers.rotation import forget_undecryptable

    names = forget_undecryptable(_engine(db), lock_timeout=lock_timeout)
    if names:
        click.echo(f"Cleared the API keys of {', '.join(names)}. Run `reconciler apply` to encrypt them again from the manifests.")
    else:
        click.echo("Every stored API key decrypts with the configured key; nothing was cleared.")
    return 0


@secrets.command("generate-key")
def generate_key_command() -> int:
    """Print a new random key (for RECONCILER_SECRET_KEY)."""
    from reconciler.providers.secrets import generate_key

    click.echo(generate_key())
    return 0
