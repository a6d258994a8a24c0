"""Small real HTTP servers on 127.0.0.1 for provider validation tests (no network beyond loopback)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes -> sent as is
    content_type: str | None = None
    delay: float = 0.0  # seconds before answering
    echo_headers: bool = False  # answer with the request's headers as plain text
    bearer: str | None = None  # if set, answer 401 unless "Authorization: Bearer <bearer>" is sent


@dataclass
class FakeServer:
    routes: dict[str, Reply]
    url: str = ""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            server.requests.append((self.path, dict(self.headers)))
            reply = server.routes.get(self.path, Reply(404, {"error": "not found"}))
            if reply.delay:
                time.sleep(reply.delay)
            if reply.bearer is not None and self.headers.get("Authorization") != f"Bearer {reply.bearer}":
                reply = Reply(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
            if reply.echo_headers:
                body = "".join(f"{k}: {v}\n" for k, v in self.headers.items()).encode()
                ctype = "text/plain"
            elif isinstance(reply.body, (dict, list)):
                body, ctype = json.dumps(reply.body).encode(), "application/json"
            else:
                raw = reply.body or ""
                body, ctype = (raw.encode() if isinstance(raw, str) else raw), "text/html"
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type or ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve(routes: dict[str, Reply]) -> Iterator[FakeServer]:
    """Serve ``routes`` (path -> Reply; anything else is a JSON 404) until the block ends."""
    fake = FakeServer(routes)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    httpd.daemon_threads = True
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OLLAMA_TAGS = {"models": [{"name": "llama3.2:1b", "model": "llama3.2:1b", "size": 1}, {"name": "qwen2.5:0.5b", "model": "qwen2.5:0.5b"}]}
OPENAI_MODELS = {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}, {"id": "gpt-4o", "object": "model"}]}
