"""The dashboard: its sections rendered from a real database, the experiments extension point, and
headless Chromium (Debian's chromium + chromidriver, driven by Selenium) watching the page update
without a reload while other processes apply, edit and run."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from reconciler.serve import dashboard, experiments, queries
from reconciler.state.db import open_engine
from reconciler.state.tables import agent_configs
from tests.serve.conftest import State

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


class RunComparison:
    """An ExperimentBackend for tests: compares real runs (by name) as the variants of one experiment."""

    def __init__(self, name: str, runs: list[str]) -> None:
        self.name, self.runs = name, runs

    def _rows(self, engine: Any) -> list[dict[str, Any]]:
        rows = {r["name"]: r for r in queries.list_runs(engine, queries.Page(0, 1000)).rows}
        return [rows[n] for n in self.runs if n in rows]

    def list(self, engine: Any) -> list[dict[str, Any]]:
        rows = self._rows(engine)
        return [{"name": self.name, "status": "completed" if rows and all(r["status"] == "completed" for r in rows) else "running"}]

    def report(self, engine: Any, name: str) -> dict[str, Any] | None:
        if name != self.name:
            return None
        variants = [{"name": r["name"], "run": r["name"], "metrics": {"accuracy": r["accuracy"], "cost_estimate": r["cost_estimate"], "items": r["items_done"]}}
                    for r in self._rows(engine)]
        return {"name": name, "status": self.list(engine)[0]["status"], "primary_metric": "accuracy",
                "metrics": ["accuracy", "cost_estimate", "items"], "variants": variants}

    def progress(self, engine: Any) -> dict[str, dict[str, Any]]:
        return {self.name: {"name": self.name, "done": sum(r["items_done"] for r in self._rows(engine))}}


@pytest.fixture
def comparison() -> Iterator[RunComparison]:
    backend = RunComparison("prompt-ab", ["sample", "live"])
    experiments.register(backend)
    yield backend
    experiments.reset()


def test_sections_render_from_the_database(shared_state: State, no_experiments: None) -> None:
    engine = open_engine(shared_state.url, create=False)
    html = dashboard.render_page(engine, "sqlite:///state.db")
    for expected in ('data-provider="stub"', 'data-status="connected"', 'data-apply="1"', 'data-run="sample"',
                     "4/4", "100%", "Experiments are not part of this reconciler build", 'data-count="agents">3<'):
        assert expected in html, expected
    assert 'data-deferred="1"' in html and "Checking…" in html and "No drift" not in html  # fetched by the script
    assert "No drift" in dashboard.render_section("drift", engine, "db")
    assert "<script>" not in html  # no inline script: the CSP allows only /static/dashboard.js


def test_the_page_escapes_what_the_database_holds(sqlite_state: State) -> None:
    """A name or error written by another service is text on the page, never markup."""
    from reconciler.state.tables import llm_providers

    engine = open_engine(sqlite_state.url, create=False)
    with engine.begin() as conn:
        conn.execute(update(llm_providers).where(llm_providers.c.name == "spare").values(validation_error="<img src=x onerror=alert(1)>"))
    html = dashboard.render_section("providers", engine, "db")
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_the_experiment_comparison_table_and_chart(shared_state: State, comparison: RunComparison) -> None:
    engine = open_engine(shared_state.url, create=False)
    html = dashboard.render_section("experiments", engine, "db")
    assert 'data-experiment="prompt-ab"' in html and 'data-variant="sample"' in html
    assert '<svg class="chart"' in html and 'data-bar="sample"' in html
    assert 'width="360.0"' in html  # the best variant's bar spans the chart (100% of 360 px)
    assert "100%" in html


def test_experiment_endpoints_and_events_go_through_the_extension_point(shared_state: State, live: Any, comparison: RunComparison) -> None:
    server = live(shared_state.url)
    assert server.get("/api/v1/experiments").json() == [{"name": "prompt-ab", "status": "completed"}]
    report = server.get("/api/v1/experiments/prompt-ab").json()
    assert [v["name"] for v in report["variants"]] == ["sample"]
    assert server.get("/api/v1/experiments/nope").status_code == 404
    assert server.get("/api/v1/status").json()["experiments"] is True


def _driver() -> Any:
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are not installed (.ci/run installs them)")
        pytest.skip("chromium and chromedriver are not installed: apt-get install chromium chromium-driver")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


def _wait(driver: Any, condition: Any, what: str, timeout: float = 20.0) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        raise AssertionError(f"the page never showed {what} within {timeout} s") from None


def _text(driver: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


@pytest.mark.slow
def test_the_dashboard_updates_live_in_a_real_browser(sqlite_state: State, live: Any, comparison: RunComparison, tmp_path: Path) -> None:
    sqlite_state.cli("run", str(sqlite_state.run_manifest("sample")))
    server = live(sqlite_state.url)
    driver = _driver()
    try:
        started = time.perf_counter()
        driver.get(server.url + "/")
        _wait(driver, lambda d: d.find_element("css selector", "body").get_attribute("data-live") == "live", "the live indicator")
        first_load = time.perf_counter() - started
        assert _text(driver, 'tr[data-provider="stub"] .badge') == "connected"
        assert _text(driver, 'tr[data-provider="spare"] .badge') == "pending"
        assert _text(driver, 'tr[data-run="sample"] [data-progress]') == "4/4"
        _wait(driver, lambda d: "No drift" in _text(d, "#section-drift"), "the drift section, fetched after the page")
        assert _text(driver, '[data-count="providers"]') == "2"
        driver.execute_script("window.__notReloaded = 42")

        # another process applies a new provider and a changed prompt: new rows, new counts, its status
        sqlite_state.write(prompt="Classify the message; answer in JSON.", extra=_NEW_PROVIDER.replace("BASE", sqlite_state.base_url))
        sqlite_state.apply()
        _wait(driver, lambda d: _text(d, 'tr[data-provider="newbie"] .badge') == "connected", "the new provider, connected")
        _wait(driver, lambda d: _text(d, '[data-count="providers"]') == "3", "three providers")
        assert _text(driver, 'tr[data-apply="3"] .changes') == "+1 ~1 -0"

        # drift made through another connection
        engine = open_engine(sqlite_state.url, create=False)
        with engine.begin() as conn:
            conn.execute(update(agent_configs).where(agent_configs.c.name == "classifier").values(temperature=1.3))
        _wait(driver, lambda d: "classifier" in _text(d, '#section-drift [data-drift="Agent/classifier"]'), "the drifted agent")

        # a run in another process, and the experiment comparing it with the first
        sqlite_state.cli("run", str(sqlite_state.run_manifest("live")))
        _wait(driver, lambda d: _text(d, 'tr[data-run="live"] .badge') == "completed", "the finished run")
        _wait(driver, lambda d: _text(d, '[data-experiment="prompt-ab"] tr[data-variant="live"]') != "", "the run in the comparison")
        assert driver.execute_script("return window.__notReloaded") == 42, "the page was reloaded"
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        target = os.environ.get("SERVE_SCREENSHOT")
        if target:
            shutil.copy(shot, target)
        assert shot.stat().st_size > 10_000
        print(f"dashboard first load (to live): {first_load:.3f} s")
    finally:
        driver.quit()


_NEW_PROVIDER = """
---
apiVersion: reconciler/v1
kind: Provider
metadata: {name: newbie}
spec: {type: openai, base_url: "BASE"}
"""


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "–"), (0, "$0"), (1.8e-5, "$0.000018"), (0.00123, "$0.0012"), (0.05, "$0.0500"), (2.5, "$2.50"), (1234.5, "$1,234.50")],
)
def test_money(value: float | None, shown: str) -> None:
    assert dashboard._money(value) == shown
