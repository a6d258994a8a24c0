"""Security of the server: token, host check, CORS, no secret-derived value anywhere, and a
hostile-input pass that must get 4xx answers, never a 500 or a traceback."""

from __future__ import annotations

import base64
import random
import threading
import time
import urllib.parse
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from reconciler.serve.api import API, ENDPOINTS
from reconciler.serve.security import TokenCheck, is_loopback
from reconciler.state.db import open_engine
from reconciler.state.tables import llm_providers, reconciler_applies, reconciler_resources
from tests.serve.conftest import API_KEY, KEY_ENV, State

TOKEN = "test-token-0123456789-abcdefghij"


def test_token_check() -> None:
    check = TokenCheck(TOKEN)
    assert check.bearer_ok(f"Bearer {TOKEN}".encode()) and check.bearer_ok(f"bearer {TOKEN}".encode())
    for bad in (b"", b"Bearer", b"Bearer ", f"Bearer {TOKEN}x".encode(), f"Basic {TOKEN}".encode(), TOKEN.encode()):
        assert not check.bearer_ok(bad), bad
    assert check.cookie_ok(f"a=1; reconciler_session={check.session}".encode())
    assert not check.cookie_ok(f"reconciler_session={TOKEN}".encode())  # the cookie holds an HMAC, not the token
    assert TOKEN not in check.session


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
                                                ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.com", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_with_a_token_every_request_needs_it(shared_state: State, live: Any) -> None:
    server = live(shared_state.url, token=TOKEN, loopback_only=False)
    paths = [e.url.replace("{name}", "stub") for e in ENDPOINTS if "events" not in e.url] + ["/", "/partials/providers", "/static/dashboard.js"]
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
            response = server.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"] == 'Bearer realm="reconciler"'
            assert response.json()["status"] == 401
        ok = server.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code in (200, 404, 501), (path, ok.status_code)
    assert server.get("/api/v1/events", headers={}).status_code == 401
    doc = server.get(f"{API}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert doc["security"] == [{"bearer": []}]


def test_a_browser_signs_in_once_and_the_cookie_carries_it(shared_state: State, live: Any) -> None:
    server = live(shared_state.url, token=TOKEN, loopback_only=False)
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        first = browser.get("/", headers={"Accept": "text/html"})
        assert (first.status_code, first.headers["location"]) == (303, "/login")
        assert "<form" in browser.get("/login").text
        wrong = browser.post("/login", data={"token": "not-it"})
        assert wrong.status_code == 401 and "not the one" in wrong.text
        signed = browser.post("/login", data={"token": TOKEN})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        page = browser.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "Providers" in page.text
        with browser.stream("GET", "/api/v1/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
        assert browser.post("/login", content=b"token=" + b"x" * 5000).status_code == 413


def test_without_a_token_only_loopback_host_headers_are_served(shared_state: State, live: Any) -> None:
    """A page on another site cannot read the server through DNS rebinding: its Host is refused."""
    server = live(shared_state.url)
    for host in ("evil.example", "evil.example:80", "10.0.0.5", "127.0.0.1.nip.io"):
        response = server.get(f"{API}/providers", headers={"Host": host})
        assert response.status_code == 400, host
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost", "[::1]:80"):
        assert server.get(f"{API}/providers", headers={"Host": host}).status_code == 200, host


def test_cors_is_off_unless_origins_are_named(shared_state: State, live: Any) -> None:
    plain = live(shared_state.url)
    response = plain.get(f"{API}/providers", headers={"Origin": "https://evil.example"})
    assert not any(k.lower().startswith("access-control-") for k in response.headers)
    opened = live(shared_state.url, cors_origins=("https://dash.example",))
    allowed = opened.get(f"{API}/providers", headers={"Origin": "https://dash.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
    other = opened.get(f"{API}/providers", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_security_headers(shared_state: State, live: Any) -> None:
    response = live(shared_state.url).get("/")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in response.headers["content-security-policy"]


def test_websocket_upgrades_are_refused(shared_state: State, live: Any) -> None:
    server = live(shared_state.url)
    response = server.get(f"{API}/events", headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()})
    assert response.status_code in (400, 403, 404)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--host", "0.0.0.0"], "without authentication", id="public-without-token"),
        pytest.param(["--host", "::"], "without authentication", id="ipv6-any-without-token"),
        pytest.param(["--token", "short"], "at least 16", id="short-token"),
        pytest.param(["--db", "mysql://x/y"], "unsupported database", id="bad-url"),
    ],
)
def test_the_command_refuses_unsafe_or_bad_settings(cli_run: Any, args: list[str], message: str) -> None:
    code, _, err = cli_run("serve", *args)
    assert code == 1 and message in err and "Traceback" not in err


def test_the_token_comes_from_the_environment_too(cli_run: Any) -> None:
    code, _, err = cli_run("serve", "--host", "0.0.0.0", env={"RECONCILER_SERVE_TOKEN": "short"})
    assert code == 1 and "at least 16" in err


# -- no secret-derived value in any response or event ------------------------------------------------


def _secret_forms(state: State) -> dict[str, str]:
    engine = open_engine(state.url, create=False)
    forms = {"key": API_KEY, "key-b64": base64.b64encode(API_KEY.encode()).decode().rstrip("="), "key-hex": API_KEY.encode().hex()}
    with engine.connect() as conn:
        for (token,) in conn.execute(select(llm_providers.c.api_key_encrypted).where(llm_providers.c.api_key_encrypted.is_not(None))):
            forms["ciphertext"] = bytes(token).decode()
            forms["ciphertext-b64"] = base64.b64encode(bytes(token)).decode()[:40]
        macs = [a["api_key"]["hmac"] for (a,) in conn.execute(select(reconciler_resources.c.applied)) if (a or {}).get("api_key")]
        plans = [str(p) for (p,) in conn.execute(select(reconciler_applies.c.plan))]
    assert macs and any(m in p for m in macs for p in plans), "the history should hold HMACs, or this test proves nothing"
    for i, mac in enumerate(macs):
        forms[f"hmac-{i}"] = mac.split(":", 1)[1]
    forms["hmac-prefix"] = "hmac-sha256:"
    return forms


def test_no_response_or_event_holds_a_key_its_ciphertext_or_its_hmac(state: State, live: Any, events: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    state.env[KEY_ENV] = API_KEY + "-rotated"
    state.apply()  # a changed key: the plan in the history holds new HMACs
    state.env[KEY_ENV] = API_KEY
    server = live(state.url)
    reader = events(server.url + f"{API}/events")
    state.apply()
    state.cli("providers", "check")
    reader.wait(lambda e: e["_event"] == "validation_update" and e["validation_status"] == "connected")
    reader.wait(lambda e: e["_event"] == "apply")
    bodies = [server.get(path).text for path in _every_path(server)]
    time.sleep(0.5)
    bodies += reader.raw
    forms = _secret_forms(state)
    text = "\n".join(bodies)
    assert "stub" in text and "(set, encrypted)" in text  # the scan read real answers
    for form, needle in forms.items():
        assert needle not in text, f"{form} leaked"


def _every_path(server: Any) -> list[str]:
    paths = ["/", *(f"/partials/{s}" for s in ("status", "providers", "applies", "drift", "runs", "experiments"))]
    for e in ENDPOINTS:
        if "events" in e.url:
            continue
        if "{name}" not in e.url:
            paths.append(e.url)
            continue
        collection = e.url.split("/{name}")[0]
        listed = server.get(collection).json() if "experiments" not in collection else []
        for row in listed if isinstance(listed, list) else []:
            key = str(row.get("name") or row.get("id"))
            paths.append(e.url.replace("{name}", str(row["id"]) if "history" in e.url else key))
    return paths


# -- hostile input ---------------------------------------------------------------------------------

HOSTILE_PATHS = [
    "/api/v1/agents/%00", "/api/v1/agents/a%00b", "/api/v1/providers/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/api/v1/agents/..%2F..%2F",
    "/api/v1/agents/" + "a" * 5000, "/api/v1/agents/" + "%C3%A9" * 300, "/api/v1/agents/%F0%9F%92%A5", "/api/v1/agents/%FF%FE",
    "/api/v1/agents/'%20OR%201=1--", "/api/v1/tasks/%25s%25s%25n", "/api/v1/history/99999999999999999999999999",
    "/api/v1/history/-1", "/api/v1/history/1e9", "/api/v1/runs/%0A%0D/results", "/api/v1/assignments/a+b+c", "/api/v1/assignments/+",
    "/api/v1/runs/x/results/../../..", "/static/../../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/",
    "/partials/..%2Fdashboard", "/partials/" + "x" * 3000, "/api/v1//agents", "/api/v1/agents/", "//", "/api", "/api/v2/agents",
    "/api/v1/providers?skip=-1", "/api/v1/providers?limit=0", "/api/v1/providers?limit=1001", "/api/v1/providers?limit=abc",
    "/api/v1/providers?limit=1e3", "/api/v1/providers?skip=" + "9" * 40, "/api/v1/providers?skip=99999999999999999999",
    "/api/v1/providers?limit=%EF%BC%95", "/api/v1/providers?active=maybe", "/api/v1/agents?provider=" + "p" * 5000,
    "/api/v1/agents?provider=%00", "/api/v1/assignments?agent=%00&task=%00", "/api/v1/runs?status=exploded",
    "/api/v1/runs/sample/results?valid=2", "/api/v1/providers?skip=1&skip=2&limit=3&limit=x", "/api/v1/providers?" + "&".join(f"k{i}=v" for i in range(500)),
    "/api/v1/events?last_event_id=" + "9" * 50,
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_hostile_requests_get_client_errors_never_a_500(state: State, live: Any, method: str) -> None:
    server = live(state.url)
    for path in HOSTILE_PATHS:
        if "events" in path:
            with httpx.stream(method, server.url + path, timeout=10) as response:
                assert response.status_code == 200
            continue
        response = httpx.request(method, server.url + path, timeout=30)
        assert 400 <= response.status_code < 500 or response.status_code == 200, (path[:80], response.status_code)
        assert "Traceback" not in response.text and "sqlalchemy" not in response.text.lower(), path[:80]
        if method == "GET" and response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
            assert response.json()["message"]


def test_random_paths_and_queries_never_get_a_500(shared_state: State, live: Any) -> None:
    """300 requests built from random bytes over every endpoint's path and parameters."""
    server = live(shared_state.url)
    rng = random.Random(16)
    alphabet = [chr(c) for c in range(1, 0x80)] + ["é", "💥", "\u202e", "\ufeff", "%", "/", "+", "\x00"]
    doc = server.get(f"{API}/openapi.json").json()
    templates = [p for p in doc["paths"] if "events" not in p]
    statuses = set()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(300):
            template = rng.choice(templates)
            junk = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
            path = template.replace("{name}", urllib.parse.quote(junk, safe="") or "x")
            params = {rng.choice(["skip", "limit", "active", "active_only", "provider", "agent", "task", "status", "valid", junk[:10] or "z"]):
                      "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 50))) for _ in range(rng.randint(0, 4))}
            response = client.get(path, params=params)
            statuses.add(response.status_code)
            assert response.status_code < 500 or response.status_code == 501, (path[:80], params, response.status_code, response.text[:200])
    assert {200, 400, 404} <= statuses


def test_many_concurrent_event_streams_and_requests(shared_state: State, live: Any, events: Any) -> None:
    """Fifty open event streams do not keep the API from answering."""
    server = live(shared_state.url)
    readers = [events(server.url + f"{API}/events") for _ in range(50)]
    errors: list[Any] = []

    def hammer() -> None:
        try:
            for _ in range(20):
                assert server.get(f"{API}/assignments").status_code == 200
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert server.app.state.hub.subscribers == len(readers)
