"""The MLflow UI in a real headless Chromium: runs, the Pareto figure, an episode's session and a trace.

A small benchmark store (two operating points of the tool-call test benchmark, played through
the real agent loop and logged with :func:`harness.tracking.log_benchmark`) is served by
``harness ui`` on a free loopback port, and Debian's Chromium is driven through ChromeDriver
(``.ci/install-browser.sh`` installs both). Screenshots go to ``$UI_SCREENSHOTS`` when set
(``reports/ui/`` holds the README's), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import pytest

from harness.layout import ResultsLayout
from harness.tracking import log_benchmark, tracking_uri
from harness.trajectory import RunStore

sys.path.insert(0, str(Path(__file__).parent))

from services import unavailable  # noqa: E402
from test_traces import play  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Chromium as root in a container, offline: no sandbox, no GPU, no background downloads.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1500,950",
)
POINTS = ("single:agent", "single:agent-b")
WAIT_S = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        unavailable("Chromium and ChromeDriver are not installed (run .ci/install-browser.sh)")
    pytest.importorskip("selenium")
    results = tmp_path_factory.mktemp("ui")
    root = ResultsLayout.of(results, "uibench").root
    for point in POINTS:
        store = RunStore(ResultsLayout(root).run("test_id", point))
        store.open(
            {
                "run": {"router": {"name": "single", "params": {"model": "agent", "label": point}}},
                "price_cards": {"agent": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "version": "test"}},
            }
        )
        for variation in (0, 1):
            play(store, variation)
    parent = log_benchmark(root, "c0ffee", log_models=False, n_boot=200)
    client = mlflow.MlflowClient(tracking_uri(root))
    experiment_id = client.get_run(parent).info.experiment_id
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "ui", "--results", str(results), "--bench", "uibench"]
        + ["--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, f"harness ui did not come up within {WAIT_S} s"
                time.sleep(0.5)
        yield {"base": base, "client": client, "experiment_id": experiment_id, "parent": parent}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser(served, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    # An explicit driver path: Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("UI_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(driver: Any, url: str, *texts: str) -> str:
    """Load ``url`` and wait until the page shows every one of ``texts``; returns the page's text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    try:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(
            lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in texts)
        )
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"{url} never showed {texts}; it shows:\n{body[:3000]}")
    time.sleep(1.0)  # let images and charts settle before a screenshot
    return driver.find_element(By.TAG_NAME, "body").text


def _shot(driver: Any, shots: Path, name: str) -> Path:
    path = shots / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def test_the_experiment_opens_on_its_runs_with_parent_and_nested_runs(served, browser, shots):
    from selenium.webdriver.common.by import By

    # MLflow 3.17 picks the experiment page from its workflow-type switch (GenAI / Model training),
    # kept in the URL and the browser's storage; the runs view is the Model training side.
    url = f"{served['base']}/#/experiments/{served['experiment_id']}/runs?workflowType=machine_learning"
    text = _open(browser, url, "uibench", "matching runs")
    # Expand the parent row, then the family row (each expander clicked once), until the points show.
    expanded: set[str] = set()
    for _ in range(8):
        if all(p in text for p in POINTS):
            break
        for row in browser.find_elements(By.CSS_SELECTOR, ".ag-row[row-id]"):
            row_id = row.get_attribute("row-id")
            toggles = row.find_elements(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']")
            if row_id in expanded or not toggles:
                continue
            expanded.add(row_id)
            toggles[0].click()
            time.sleep(1.5)
            break
        text = browser.find_element(By.TAG_NAME, "body").text
    assert all(p in text for p in POINTS), text[:3000]
    assert "uibench" in text and "single" in text  # the parent and the family above the points
    _shot(browser, shots, "runs.png")


def test_the_parent_run_shows_the_pareto_figure(served, browser, shots):
    from selenium.webdriver.common.by import By

    url = f"{served['base']}/#/experiments/{served['experiment_id']}/runs/{served['parent']}/artifacts/pareto_test_id.png?workflowType=machine_learning"
    text = _open(browser, url, "pareto_test_id.png", "frontier_test_id.json")
    assert "benchmark.json" in text
    widths = [i.get_property("naturalWidth") or 0 for i in browser.find_elements(By.TAG_NAME, "img")]
    assert max(widths, default=0) > 400  # the figure itself, loaded, not a broken image
    _shot(browser, shots, "pareto.png")


def test_an_episode_session_lists_its_turns(served, browser, shots):
    session = "test_id/single:agent/lookup/count/0"
    url = (
        f"{served['base']}/#/experiments/{served['experiment_id']}/chat-sessions/"
        + urllib.parse.quote(session, safe="")
        + "?workflowType=genai"
    )
    # Three turns and the judge, in order, each showing its chosen model.
    text = _open(browser, url, session, "Turn 1", "Turn 4")
    assert "Turn 5" not in text
    assert text.index("Turn 1") < text.index("Turn 2") < text.index("Turn 3") < text.index("Turn 4")
    assert "agent" in text and "lookup/count/0" in text
    _shot(browser, shots, "session.png")


def test_a_trace_shows_its_spans(served, browser, shots):
    client, experiment_id = served["client"], served["experiment_id"]
    traces = client.search_traces(locations=[experiment_id], max_results=100, include_spans=False)
    trace = next(t for t in traces if t.info.tags.get("mlflow.traceName") == "turn 0")
    url = f"{served['base']}/#/experiments/{experiment_id}/traces/{trace.info.trace_id}?workflowType=genai"
    text = _open(browser, url, "route", "chat agent", "tool lookup")
    assert "turn 0" in text
    _shot(browser, shots, "trace.png")
