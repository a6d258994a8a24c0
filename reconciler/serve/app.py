"""The ASGI application: API routes from the endpoint table, events, dashboard, static files,
JSON errors for everything (a 500 carries no traceback), and the guard around it all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from reconciler.errors import ReconcilerError, first_line
from reconciler.serve import api, dashboard, experiments
from reconciler.serve.events import Hub, Poller, sse_stream
from reconciler.serve.openapi import openapi_document
from reconciler.serve.security import Guard
from reconciler.serve.source import StateSource
from reconciler.serve.wire import ApiError, dumps, error_body, parse_query, reason_of

log = logging.getLogger("reconciler.serve")


@dataclass(frozen=True)
class ServeSettings:
    db: str | None = None
    token: str | None = None
    loopback_only: bool = True  # accept only loopback Host headers (the server binds loopback, no token)
    poll_interval: float = 0.5
    cors_origins: tuple[str, ...] = ()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status, {"cache-control": "no-store", **(headers or {})}, media_type="application/json")


def _api_route(endpoint: api.Endpoint, source: StateSource) -> Route:
    handler = endpoint.handler
    assert handler is not None

    def call(path: dict[str, str], query: dict[str, Any]) -> api.Reply:
        return handler(api.Context(source.engine(), path, query))

    async def serve(request: Request) -> Response:
        query = parse_query(request.query_params, endpoint.params)
        reply = await run_in_threadpool(call, dict(request.path_params), query)
        headers = {"x-total-count": str(reply.total)} if reply.total is not None else None
        return json_response(reply.body, headers=headers)

    return Route(endpoint.url, serve, methods=["GET"], name=endpoint.name)


def build_routes(settings: ServeSettings, source: StateSource, hub: Hub, poller: Poller) -> list[BaseRoute]:
    routes: list[BaseRoute] = [_api_route(e, source) for e in api.ENDPOINTS if e.handler is not None]
    document = openapi_document(secured=settings.token is not None)

    async def openapi(request: Request) -> Response:
        return json_response(document)

    async def events(request: Request) -> Response:
        last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        last_id = int(last) if last and last.isascii() and last.isdigit() and len(last) < 19 else None
        return StreamingResponse(
            sse_stream(hub, last_id),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def page(request: Request) -> Response:
        html = await run_in_threadpool(lambda: dashboard.render_page(source.engine(), source.display))
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def partial(request: Request) -> Response:
        section = request.path_params["section"]
        if section not in dashboard.SECTIONS:
            raise ApiError(404, f"no dashboard section {section[:40]!r}", f"sections: {', '.join(dashboard.SECTIONS)}")
        drift = poller.known_drift() if section == "drift" else None
        html = await run_in_threadpool(lambda: dashboard.render_section(section, source.engine(), source.display, drift))
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    routes += [
        Route(f"{api.API}/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route(f"{api.API}/events", events, methods=["GET"], name="events"),
        Route("/", page, methods=["GET"], name="dashboard"),
        Route("/partials/{section}", partial, methods=["GET"], name="partial"),
        Mount("/static", StaticFiles(directory=dashboard.HERE / "static"), name="static"),
    ]
    return routes


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response(error_body(exc.status, exc.message, exc.hint), exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    if exc.status_code == 404:
        message = f"no such endpoint: {request.url.path[:200]}"
        hint = f"the API is under {api.API} (its endpoints: GET {api.API})"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed: this server is read-only"
        hint = "configuration changes come through git: edit the manifests and run `reconciler apply`"
        headers["allow"] = "GET, HEAD"  # Starlette's comes from a set: its order changes from run to run
    else:
        message, hint = str(exc.detail), ""
    return json_response(error_body(exc.status_code, message, hint), exc.status_code, headers)


async def _state_error(request: Request, exc: Exception) -> Response:
    """The database is down, locked or unreadable: the server is fine, the state is not reachable."""
    reason = reason_of(exc)
    log.warning("request %s failed: %s", request.url.path, reason)
    return json_response(error_body(503, f"the state database cannot be read: {reason}", "retry shortly"), 503)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s: %s: %s", request.url.path, type(exc).__name__, first_line(exc), exc_info=exc)
    return json_response(error_body(500, "internal error", "see the server's log"), 500)


def create_app(settings: ServeSettings | None = None, source: StateSource | None = None) -> Starlette:
    settings = settings or ServeSettings()
    source = source or StateSource(settings.db)
    hub = Hub()
    poller = Poller(source, hub, settings.poll_interval, extra=experiments.progress)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()
        task = asyncio.create_task(poller.run())
        try:
            yield
        finally:
            hub.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            source.dispose()

    app = Starlette(
        routes=build_routes(settings, source, hub, poller),
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            ReconcilerError: _state_error,
            SQLAlchemyError: _state_error,
            Exception: _internal_error,
        },
    )
    app.router.redirect_slashes = False  # "/api/v1/agents/" is a 404 like any other unknown path, not a redirect
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET"], allow_headers=["authorization"])
    app.add_middleware(Guard, token=settings.token, loopback_only=settings.loopback_only and settings.token is None)
    app.state.source, app.state.hub, app.state.poller, app.state.settings = source, hub, poller, settings
    return app
