"""Who may talk to the server: loopback by default, a bearer token for anything else.

- Without a token the server binds loopback only (the CLI refuses other addresses) and accepts only
  loopback ``Host`` headers, so a web page elsewhere cannot read it through DNS rebinding.
- With a token every request needs ``Authorization: Bearer TOKEN`` (compared in constant time,
  over digests so not even the length leaks), or the session cookie a browser gets from
  ``/login``: an EventSource cannot send headers. The cookie holds an HMAC of the token, never
  the token, and is HttpOnly and SameSite=Strict.
- Every response carries headers that keep it out of frames, sniffing and other origins' scripts;
  there is no CORS unless origins are named.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from reconciler.serve.wire import dumps, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_ENV = "RECONCILER_SERVE_TOKEN"
COOKIE = "reconciler_session"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_LOGIN_BODY = 4096

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        (
            b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
    ),
]


def is_loopback(host: str) -> bool:
    """Does binding ``host`` keep the server on this machine?"""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"reconciler serve session v1", hashlib.sha256).hexdigest()


class TokenCheck:
    def __init__(self, token: str) -> None:
        self._token_digest = _digest(token.encode())
        self._session_digest = _digest(session_value(token).encode())
        self.session = session_value(token)

    def bearer_ok(self, header: bytes | None) -> bool:
        if not header or header[:7].lower() != b"bearer ":
            return False
        return hmac.compare_digest(_digest(header[7:].strip()), self._token_digest)

    def token_ok(self, value: str) -> bool:
        return hmac.compare_digest(_digest(value.encode()), self._token_digest)

    def cookie_ok(self, header: bytes | None) -> bool:
        if not header:
            return False
        ok = False
        for part in header.split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == COOKIE.encode():
                ok |= hmac.compare_digest(_digest(value), self._session_digest)
        return ok


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return None


def _host_name(host: bytes) -> str:
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class Guard:
    """ASGI middleware: host check, authentication, security headers, and ``/login`` when a token is set."""

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.check = TokenCheck(token) if token else None
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # there is no WebSocket endpoint: refuse before anything is read
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = headers
            await send(message)

        if self.loopback_only:
            host = _header(scope, b"host")
            if host is None or _host_name(host) not in LOOPBACK_NAMES:
                await _json(
                    send_secured,
                    400,
                    "the Host header must name this machine (localhost or 127.0.0.1)",
                    "the server listens on loopback only; to serve other hosts start it with --host and a --token",
                )
                return
        if self.check is not None:
            path = scope.get("path", "")
            if path == "/login":
                await self._login(scope, receive, send_secured)
                return
            if not (self.check.bearer_ok(_header(scope, b"authorization")) or self.check.cookie_ok(_header(scope, b"cookie"))):
                if scope.get("method") == "GET" and path == "/" and b"text/html" in (_header(scope, b"accept") or b""):
                    await _respond(send_secured, 303, b"", [(b"location", b"/login")])
                    return
                await _json(
                    send_secured,
                    401,
                    "a token is required: send Authorization: Bearer TOKEN",
                    "the token is the one the server was started with (--token or RECONCILER_SERVE_TOKEN)",
                    [(b"www-authenticate", b'Bearer realm="reconciler"')],
                )
                return
        await self.app(scope, receive, send_secured)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.check is not None
        method = scope.get("method")
        if method == "GET":
            await _respond(send, 200, _login_page(""), [(b"content-type", b"text/html; charset=utf-8")])
            return
        if method != "POST":
            await _json(send, 405, f"method {method} is not allowed on /login", extra=[(b"allow", b"GET, POST")])
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_LOGIN_BODY:
                await _json(send, 413, "the login form is too large")
                return
            if not message.get("more_body"):
                break
        token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
        if not self.check.token_ok(token):
            await _respond(
                send, 401, _login_page("That token is not the one the server was started with."), [(b"content-type", b"text/html; charset=utf-8")]
            )
            return
        cookie = f"{COOKIE}={self.check.session}; HttpOnly; SameSite=Strict; Path=/".encode()
        await _respond(send, 303, b"", [(b"location", b"/"), (b"set-cookie", cookie)])


def _login_page(error: str) -> bytes:
    from html import escape

    note = f"<p role=alert>{escape(error)}</p>" if error else ""
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>reconciler: sign in</title>"
        "<h1>reconciler</h1><p>This server needs the token it was started with.</p>"
        + note
        + "<form method=post action=/login><label>Token <input type=password name=token autocomplete=off autofocus></label> "
        "<button type=submit>Sign in</button></form></html>"
    ).encode()


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, message: str, hint: str = "", extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond(send, status, dumps(error_body(status, message, hint)), [(b"content-type", b"application/json"), *(extra or [])])
