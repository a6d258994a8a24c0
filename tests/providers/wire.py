"""Provider APIs on 127.0.0.1 that check the wire format of what reconciler sends.

One server per API (``openai`` for OpenAI and any OpenAI-compatible server, ``anthropic``,
``google``): it answers the model listing and the chat call the way the real API does, and
refuses (HTTP 400 with the reason, also kept in ``violations``) a request whose path, headers or body
are not what that API documents: the authentication header, the version header, the JSON body's
fields, the structured-output settings. ``answer(prompt, n)`` gives the assistant's answer (a dict
is sent as its JSON text) or a ``Reply`` (an error status with headers).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

Api = Literal["openai", "anthropic", "google"]
PAGE = 2  # models per page, so listings that page (Anthropic, Google) are followed


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: Any


Answer = Callable[[str, int], "dict[str, Any] | str | Reply"]


class WireError(Exception):
    """A request that breaks the API's wire format (answered with HTTP 400)."""


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise WireError(what)


@dataclass
class WireStub:
    api: Api
    key: str | None = None  # the key every request must carry (None: no key expected)
    models: Sequence[str] = ()
    answer: Answer = lambda prompt, n: {"category": "bug", "confidence": 90}
    prefix: str = ""  # a path the API lives under (an OpenAI-compatible server at http://host/prefix/v1)
    requests: list[Seen] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)  # per chat call: "native" (the API's JSON-schema mode) or "prompted"
    url: str = ""

    @property
    def base_url(self) -> str:
        """What a manifest's base_url says for this server."""
        return f"{self.url}{self.prefix}/v1" if self.api == "openai" else self.url

    def chats(self) -> list[Seen]:
        return [r for r in self.requests if r.method == "POST"]

    # --- the APIs ---------------------------------------------------------------------------

    def handle(self, seen: Seen, n: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        route = {"openai": self._openai, "anthropic": self._anthropic, "google": self._google}[self.api]
        return route(seen, n)

    def _openai(self, seen: Seen, n: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        root = f"{self.prefix}/v1"
        if self.key is not None and seen.headers.get("authorization") != f"Bearer {self.key}":
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}, {}
        if seen.method == "GET":
            _need(seen.path == f"{root}/models", f"GET {seen.path}: the models are listed at {root}/models")
            return 200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "stub"} for m in self.models]}, {}
        _need(seen.path == f"{root}/chat/completions", f"POST {seen.path}: chat goes to {root}/chat/completions")
        _need(seen.headers.get("content-type", "").startswith("application/json"), "Content-Type must be application/json")
        body = seen.body
        _need(isinstance(body.get("model"), str) and body["model"] in self.models, f"model {body.get('model')!r} is not served")
        messages = body.get("messages")
        _need(isinstance(messages, list) and messages and all(isinstance(m, dict) and m.get("role") in {"system", "developer", "user", "assistant", "tool"} for m in messages), "messages must be a list of {role, content}")
        _need(messages[-1]["role"] == "user", "the last message must be the user's")
        fmt = body.get("response_format")
        if fmt is not None:
            _need(fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema", {}).get("schema"), dict), "response_format must be {type: json_schema, json_schema: {name, schema}}")
            _need(isinstance(fmt["json_schema"].get("name"), str), "response_format.json_schema needs a name")
        self.modes.append("native" if fmt is not None else "prompted")
        reply = self._reply(_text(messages[-1]["content"]), n)
        if isinstance(reply, Reply):
            return reply.status, reply.body or {"error": {"message": f"stub error {reply.status}", "type": "server_error"}}, reply.headers
        return 200, {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }, {}

    def _anthropic(self, seen: Seen, n: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        _need(re.fullmatch(r"\d{4}-\d{2}-\d{2}", seen.headers.get("anthropic-version", "")) is not None, "anthropic-version header missing")
        if self.key is not None and seen.headers.get("x-api-key") != self.key:
            return 401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}, {}
        _need("authorization" not in seen.headers, "the key goes in x-api-key, not Authorization")
        if seen.method == "GET":
            _need(seen.path == "/v1/models", f"GET {seen.path}: the models are listed at /v1/models")
            after = seen.query.get("after_id", [None])[0]
            start = list(self.models).index(after) + 1 if after in self.models else 0
            page = list(self.models)[start : start + PAGE]
            more = start + PAGE < len(self.models)
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in page]
            return 200, {"data": data, "has_more": more, "first_id": page[0] if page else None, "last_id": page[-1] if page else None}, {}
        _need(seen.path == "/v1/messages", f"POST {seen.path}: chat goes to /v1/messages")
        body = seen.body
        served = {m for m in self.models} | {re.sub(r"-\d{8}$", "", m) for m in self.models}  # the API takes aliases too
        _need(body.get("model") in served, f"model {body.get('model')!r} is not served")
        _need(isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 0, "max_tokens is required")
        messages = body.get("messages")
        _need(isinstance(messages, list) and messages and messages[-1].get("role") == "user", "messages must end with the user's")
        _need(all(m.get("role") in {"user", "assistant"} for m in messages), "roles are user and assistant (system goes in 'system')")
        output = (body.get("output_config") or {}).get("format")
        if output is not None:
            _need(output.get("type") == "json_schema" and isinstance(output.get("schema"), dict), "output_config.format must be {type: json_schema, schema}")
        self.modes.append("native" if output is not None else "prompted")
        reply = self._reply(_text(messages[-1]["content"]), n)
        if isinstance(reply, Reply):
            return reply.status, reply.body or {"type": "error", "error": {"type": "api_error", "message": f"stub error {reply.status}"}}, reply.headers
        return 200, {
            "id": f"msg_{n}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }, {}

    def _google(self, seen: Seen, n: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        _need("key" not in seen.query, "the key goes in the x-goog-api-key header, not the URL")
        if self.key is not None and seen.headers.get("x-goog-api-key") != self.key:
            return 400, {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                                   "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}, {}
        if seen.method == "GET":
            _need(seen.path == "/v1beta/models", f"GET {seen.path}: the models are listed at /v1beta/models")
            token = seen.query.get("pageToken", [None])[0]
            start = int(token) if token else 0
            page = list(self.models)[start : start + PAGE]
            data: dict[str, Any] = {"models": [{"name": f"models/{m}", "supportedGenerationMethods": ["generateContent"]} for m in page]}
            if start + PAGE < len(self.models):
                data["nextPageToken"] = str(start + PAGE)
            return 200, data, {}
        match = re.fullmatch(r"/v1beta/models/([^/:]+):generateContent", seen.path)
        _need(match is not None, f"POST {seen.path}: chat goes to /v1beta/models/MODEL:generateContent")
        assert match is not None
        _need(match.group(1) in self.models, f"model {match.group(1)!r} is not served")
        body = seen.body
        contents = body.get("contents")
        _need(isinstance(contents, list) and contents and contents[-1].get("role") == "user", "contents must end with the user's")
        _need(all(isinstance(c.get("parts"), list) for c in contents), "each content needs parts")
        config = body.get("generationConfig") or {}
        native = config.get("responseMimeType") == "application/json"
        if native:
            _need(isinstance(config.get("responseJsonSchema") or config.get("responseSchema"), dict), "JSON output needs responseJsonSchema")
        self.modes.append("native" if native else "prompted")
        reply = self._reply("".join(p.get("text", "") for p in contents[-1]["parts"]), n)
        if isinstance(reply, Reply):
            return reply.status, reply.body or {"error": {"code": reply.status, "message": f"stub error {reply.status}", "status": "INTERNAL"}}, reply.headers
        return 200, {
            "candidates": [{"content": {"role": "model", "parts": [{"text": reply}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
            "modelVersion": match.group(1),
        }, {}

    def _reply(self, prompt: str, n: int) -> str | Reply:
        value = self.answer(prompt, n)
        if isinstance(value, Reply):
            return value
        return value if isinstance(value, str) else json.dumps(value)


def _text(content: Any) -> str:
    """The text of a message's content: a string, or a list of text blocks/parts."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


@contextmanager
def serve_api(stub: WireStub) -> Iterator[WireStub]:
    counter = itertools.count(1)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            seen = Seen(self.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}, body)
            with lock:
                n = next(counter)
                stub.requests.append(seen)
            try:
                if self.command == "POST":
                    _need(isinstance(body, dict), "the body must be a JSON object")
                status, payload, headers = stub.handle(seen, n)
            except WireError as err:
                stub.violations.append(f"{self.command} {parts.path}: {err}")
                status, payload, headers = 400, {"error": {"message": f"wire format: {err}", "type": "invalid_request_error"}}, {}
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = _serve  # http.server's naming
        do_POST = _serve

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    stub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
