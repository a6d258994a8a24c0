"""serve: the read-only status server (JSON API, live events, dashboard). The web stack is imported
inside the command, so no other command pays for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from reconciler.cli import cli
from reconciler.cli.options import db_option

if TYPE_CHECKING:
    import socket
    from types import FrameType

    from starlette.applications import Starlette

MIN_TOKEN_LENGTH = 16


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free port).")
@click.option("--token", envvar="RECONCILER_SERVE_TOKEN", metavar="TOKEN", help="Require Authorization: Bearer TOKEN (env RECONCILER_SERVE_TOKEN).")
@click.option(
    "--poll-interval", type=click.FloatRange(0.05, 10.0), default=0.5, show_default=True, help="Seconds between checks of the database for events."
)
@click.option(
    "--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN", help="Allow this origin's scripts to read the API (repeatable; off by default)."
)
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
def serve(db: str | None, host: str, port: int, token: str | None, poll_interval: float, cors_origins: tuple[str, ...], access_log: bool) -> int:
    """Serve the state read-only: a JSON API under /api/v1, Server-Sent Events at /api/v1/events and a
    dashboard at /. Nothing it serves changes the configuration (that comes through git)."""
    import socket

    from reconciler.errors import ReconcilerError
    from reconciler.serve.security import is_loopback

    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ReconcilerError(
            f"--token is {len(token)} characters long; a token needs at least {MIN_TOKEN_LENGTH}",
            hint="generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    if not is_loopback(host) and token is None:
        raise ReconcilerError(
            f"--host {host} would serve the state to other machines without authentication",
            hint="give a token (--token TOKEN or RECONCILER_SERVE_TOKEN); clients then send Authorization: Bearer TOKEN",
        )
    try:
        import uvicorn  # noqa: F401  (checked here: a missing one is a hint, not a traceback)

        from reconciler.serve.app import ServeSettings, create_app
    except ModuleNotFoundError as exc:
        if exc.name not in {"starlette", "uvicorn", "jinja2"}:
            raise
        raise ReconcilerError(
            f"reconciler serve needs {exc.name}, which is not installed", hint="install the serve extra: pip install 'reconciler[serve]'"
        ) from None
    from reconciler.serve.source import StateSource

    source = StateSource(db)
    engine = source.engine()  # a bad URL or an unknown schema fails now, not on the first request
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without, a keep-alive client's delayed ACK stalls every
    # response (headers and body are two writes) by 40 ms
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections made as soon as the address is printed wait for uvicorn, not refused
    except OSError as exc:
        sock.close()
        raise ReconcilerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="choose another --port or --host") from None
    settings = ServeSettings(db=db, token=token, loopback_only=is_loopback(host), poll_interval=poll_interval, cors_origins=cors_origins)
    app = create_app(settings, source)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    state = source.display if engine is not None else f"{source.display} (not created yet: waiting for the first apply)"
    click.echo(f"Serving http://{shown}:{bound}/ (API /api/v1, events /api/v1/events) read-only from {state}", err=True)
    if token is not None:
        click.echo("Every request needs Authorization: Bearer TOKEN (browsers: sign in at /login).", err=True)
    _run(app, sock, access_log)
    return 0


def _run(app: Starlette, sock: socket.socket, access_log: bool) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
        proxy_headers=False,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # open event streams never end by themselves: end them, or shutdown waits for its timeout
            loop = getattr(app.state, "loop", None)
            if loop is not None:
                loop.call_soon_threadsafe(app.state.hub.close)
            super().handle_exit(sig, frame)

    Server(config).run(sockets=[sock])
