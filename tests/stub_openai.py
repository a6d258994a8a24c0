"""A stub OpenAI-compatible server on 127.0.0.1 for tests and benchmarks.

It answers ``POST /v1/chat/completions`` with whatever ``behaviour(request, n)`` returns (``n``
counts requests from 1): a dict is sent as the assistant's JSON content, a ``Reply`` gives full
control (status, headers, raw content). Run it alone with ``python -m tests.stub_openai`` (the
benchmark does, so the stub does not share the client's GIL).
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # the assistant message text (for 200)
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None  # a raw body (errors)


Behaviour = Callable[[dict[str, Any], int], "Reply | dict[str, Any] | str"]


def fixed(answer: dict[str, Any]) -> Behaviour:
    return lambda request, n: answer


def delayed(answer: dict[str, Any], seconds: float) -> Behaviour:
    """The same answer after ``seconds`` (each request on its own thread, so they overlap)."""

    def behaviour(request: dict[str, Any], n: int) -> dict[str, Any]:
        time.sleep(seconds)
        return answer

    return behaviour


def completion(content: str, model: str = "stub") -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # many clients connect at once (the default backlog of 5 refuses them)
    daemon_threads = True


class StubServer:
    def __init__(self, behaviour: Behaviour, port: int = 0, models: tuple[str, ...] = ("gpt-4o-mini", "stub")) -> None:
        self.behaviour = behaviour
        self.models = models  # what GET /v1/models lists
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        counter = itertools.count(1)
        lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall per reply

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in stub.models]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                with lock:
                    n = next(counter)
                    stub.requests.append(request)
                    stub.authorizations.append(self.headers.get("Authorization"))
                reply = stub.behaviour(request, n)
                if isinstance(reply, dict):
                    reply = Reply(content=json.dumps(reply))
                elif isinstance(reply, str):
                    reply = Reply(content=reply)
                if reply.status != 200:
                    self._send(reply.status, reply.body or {"error": {"message": f"stub error {reply.status}", "type": "server_error"}}, reply.headers)
                else:
                    self._send(200, completion(reply.content or ""), reply.headers)

        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description="stub OpenAI-compatible server answering at once")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--answer", default='{"category": "bug", "confidence": 90}')
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each answer takes (a model's fixed latency)")
    args = parser.parse_args()
    answer = json.loads(args.answer)
    server = StubServer(fixed(answer) if not args.latency else delayed(answer, args.latency), args.port)
    print(server.base_url, flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
