"""The MLflow UI in a real headless Chromium, on a small ScienceWorld benchmark run by the test itself.

``harness benchmark`` plays a small definition (three single models, the random and heuristic routers
and ridge, on the quick test_id subset, every episode traced) into a fresh results directory;
``harness ui`` serves its store on a free loopback port, and Debian's Chromium is driven through
ChromeDriver (``.ci/install-browser.sh`` installs both). With ``UI_RESULTS=<results dir>`` (and
``UI_BENCH``, default ``quick``) the test opens that benchmark's store instead, e.g. the quick
benchmark ``make benchmark`` wrote. Screenshots go to ``$UI_SCREENSHOTS`` when set (``reports/ui/``
holds the README's), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import re
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
import yaml

from harness.layout import ResultsLayout
from harness.tracking import tracking_uri
from harness.trajectory import RunStore

sys.path.insert(0, str(Path(__file__).parent))

from services import unavailable  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Chromium as root in a container, offline: no sandbox, no GPU, no background downloads.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--window-size=1500,950",
)
DEFINITION = {
    "name": "uibench",
    "description": "The browser test's benchmark: a small ScienceWorld comparison, every episode traced.",
    "pool": "paper6",
    "quick": True,
    "workers": 2,
    "limits": {"max_turns": 30, "budget_dollars": 2.0},
    "collect": {"router": {"name": "sticky-random"}, "split": "train", "quick": True, "seeds": [0]},
    "eval_splits": ["test_id"],
    "fixed_routers": [
        {"name": "single", "params": {"model": "gpt-5"}},
        {"name": "single", "params": {"model": "gpt-oss-120b"}},
        {"name": "single", "params": {"model": "gemini-2.5-flash-lite"}},
        {"name": "random"},
        {"name": "heuristic"},
    ],
    "learned": [{"name": "ridge", "lambdas": [0.05]}],
    "trace_episodes": "all",
}
WAIT_S = 120
BENCHMARK_S = 1800


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _benchmark(tmp: Path) -> tuple[Path, str]:
    """(results directory, benchmark name): ``UI_RESULTS``' store, else a fresh small benchmark."""
    if os.environ.get("UI_RESULTS"):
        return Path(os.environ["UI_RESULTS"]).resolve(), os.environ.get("UI_BENCH", "quick")
    definition = tmp / "uibench.yaml"
    definition.write_text(yaml.safe_dump(DEFINITION))
    results = tmp / "results"
    argv = [sys.executable, "-m", "harness.cli", "benchmark", str(definition), "--results", str(results)]
    argv += ["--reports", str(tmp / "reports")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=BENCHMARK_S)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return results, "uibench"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        unavailable("Chromium and ChromeDriver are not installed (run .ci/install-browser.sh)")
    pytest.importorskip("selenium")
    results, bench = _benchmark(tmp_path_factory.mktemp("ui"))
    root = ResultsLayout.of(results, bench).root
    client = mlflow.MlflowClient(tracking_uri(root))
    experiment = client.get_experiment_by_name(bench)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "ui", "--results", str(results), "--bench", bench]
        + ["--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        printed = [server.stdout.readline(), server.stdout.readline()]
        link = next(
            (line.split(": ", 1)[1].strip() for line in printed if line.startswith("Score against")), None
        )
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stderr.read()[-2000:]
                assert time.monotonic() < deadline, f"harness ui did not come up within {WAIT_S} s"
                time.sleep(0.5)
        yield {"base": base, "client": client, "experiment_id": experiment.experiment_id, "root": root,
               "link": link, "printed": printed}  # fmt: skip
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


def _wait(driver: Any, what: str, condition: Any) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(condition)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"{driver.current_url} never showed {what}; it shows:\n{body[:3000]}")


def _open(driver: Any, url: str, *texts: str) -> str:
    """Load ``url`` and wait until the page shows every one of ``texts``; returns the page's text."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, texts, lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in texts))
    time.sleep(1.5)  # let images and charts settle before a screenshot
    return driver.find_element(By.TAG_NAME, "body").text


def _shot(driver: Any, shots: Path, name: str) -> Path:
    path = shots / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def _point_runs(served: dict[str, Any]) -> list[Any]:
    return served["client"].search_runs([served["experiment_id"]], "tags.kind = 'point'", max_results=1000)


def _shows_every_operating_point(browser: Any, served: dict[str, Any]) -> None:
    """Wait for the score-cost charts: one MLflow plotly scatter per test split (its x axis that split's
    cost), each with one marker per operating point scored on that split, and the Pareto figure with the
    frontier beside them, loaded."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    points = _point_runs(served)
    assert len(points) >= 5
    splits = {m.split("/")[0] for r in points for m in r.data.metrics if m.startswith("test_")}
    wanted = {s: sum(f"{s}/score" in r.data.metrics for r in points) for s in splits if s.startswith("test_")}
    assert wanted.get("test_id", 0) >= 5, wanted

    def markers(driver: Any) -> dict[str, int]:
        """Markers per split, read off each scatter's x-axis title ("<split>/cost")."""
        shown = {}
        try:
            for plot in driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"):
                axis = plot.find_elements(By.CSS_SELECTOR, ".xtitle")
                if axis and axis[0].text.endswith("/cost"):
                    split = axis[0].text.split("/")[0]
                    shown[split] = len(plot.find_elements(By.CSS_SELECTOR, ".scatterlayer path.point"))
        except WebDriverException:  # a chart redrawn while it was read
            return {}
        return shown

    _wait(browser, f"scatter markers per split {wanted}", lambda d: markers(d) == wanted)

    def pareto(driver: Any) -> bool:  # a thumbnail of the logged image
        images = driver.find_elements(By.CSS_SELECTOR, "img[src*='pareto_test_id']")
        return any((i.get_property("naturalWidth") or 0) > 100 for i in images)

    _wait(browser, "the Pareto figure", pareto)


def test_clicking_the_experiment_on_the_home_page_opens_its_score_cost_scatter(served, browser, shots):
    """The home page as MLflow opens it (its GenAI workflow), one click on the benchmark's experiment,
    and the runs page shows the score-cost charts, not the runs table (harness.ui_server)."""
    from selenium.webdriver.common.by import By

    experiment_id = served["experiment_id"]
    name = served["client"].get_experiment(experiment_id).name
    browser.get(served["base"] + "/")

    def link(driver: Any) -> Any:
        found = driver.find_elements(By.CSS_SELECTOR, f"a[href$='#/experiments/{experiment_id}']")
        return next((a for a in found if a.text.strip() == name), None)

    _wait(browser, f"a link to experiment {name}", link).click()
    _shows_every_operating_point(browser, served)
    assert "compareRunsMode=CHART" in browser.current_url
    time.sleep(1.0)  # let images and charts settle before a screenshot
    _shot(browser, shots, "runs.png")


def test_the_table_is_one_click_away_and_other_experiments_open_as_mlflow_opens_them(served, browser):
    from selenium.webdriver.common.by import By

    base, experiment_id = served["base"], served["experiment_id"]
    browser.get(f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    _wait(browser, "the score-cost view", lambda d: "viewStateShareKey=score-cost" in d.current_url)
    table = "input[type='radio'][value='TABLE']"
    _wait(browser, "the table's toggle", lambda d: d.find_elements(By.CSS_SELECTOR, table))
    browser.find_element(By.CSS_SELECTOR, table).find_element(By.XPATH, "./ancestor::label").click()
    _wait(browser, "the runs table", lambda d: "compareRunsMode=TABLE" in d.current_url)
    time.sleep(3.0)  # no redirect comes after the choice
    assert "compareRunsMode=TABLE" in browser.current_url
    # MLflow's Default experiment carries no score-cost view: MLflow's own landing page.
    browser.get(f"{base}/#/experiments/0")
    _wait(browser, "the Default experiment", lambda d: "Default" in d.find_element(By.TAG_NAME, "body").text)
    time.sleep(3.0)
    assert "compareRunsMode" not in browser.current_url


def test_the_printed_link_opens_on_a_score_cost_scatter_of_every_operating_point(served, browser):
    assert served["link"] is not None, served["printed"]
    _open(browser, served["link"], "Score vs cost", "Group: point")
    _shows_every_operating_point(browser, served)


def test_the_parent_run_shows_the_pareto_figure(served, browser, shots):
    from selenium.webdriver.common.by import By

    client, experiment_id = served["client"], served["experiment_id"]
    (parent,) = client.search_runs([experiment_id], "tags.kind = 'benchmark'")
    url = (
        f"{served['base']}/#/experiments/{experiment_id}/runs/{parent.info.run_id}/artifacts/pareto_test_id.png"
        "?workflowType=machine_learning"
    )
    text = _open(browser, url, "pareto_test_id.png", "frontier_test_id.json")
    assert "benchmark.json" in text
    widths = [i.get_property("naturalWidth") or 0 for i in browser.find_elements(By.TAG_NAME, "img")]
    assert max(widths, default=0) > 400  # the figure itself, loaded, not a broken image
    _shot(browser, shots, "pareto.png")


def _an_episode(served: dict[str, Any]) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """A traced episode on the first page of MLflow's trace list (its 25 most recent: the trace header reads
    the list's row, so a trace off that page opens without it), of a learned router (its routing spans carry
    scores) where there is one, short enough that its whole span tree fits the page: trace, record, turns."""
    client, experiment_id = served["client"], served["experiment_id"]
    learned = {
        r.info.run_id
        for r in _point_runs(served)
        if r.data.tags.get("family") not in ("single", "random", "heuristic")
    }
    recent = client.search_traces(locations=[experiment_id], max_results=25, order_by=["timestamp_ms DESC"])
    trace = min(
        (t for t in recent if len(t.data.spans) >= 5),
        key=lambda t: (t.info.tags.get("run_id") not in learned, len(t.data.spans)),
    )
    split, name, episode = trace.info.trace_metadata["mlflow.trace.session"].split("/", 2)
    store = RunStore(ResultsLayout(served["root"]).run(split, name))
    record = next(r for r in store.episodes() if r.episode == episode)
    return trace, record, store.turns(episode)


def test_an_episode_session_and_trace_show_the_episode_records_tokens_and_dollars(served, browser, shots):
    """MLflow's session header adds the episode's tokens up, and the cost MLflow shows on each model call of
    the episode's trace adds up to the episode record's dollars (both read from the page)."""
    from selenium.webdriver.common.by import By

    trace, record, lines = _an_episode(served)
    session = trace.info.trace_metadata["mlflow.trace.session"]
    tokens = sum(line.prompt_tokens + line.completion_tokens for line in lines)
    url = (
        f"{served['base']}/#/experiments/{served['experiment_id']}/chat-sessions/"
        + urllib.parse.quote(session, safe="")
        + "?workflowType=genai"
    )
    text = _open(browser, url, session, "Tokens")
    assert re.search(rf"\bTokens\s+{tokens}\b", text), (tokens, text[:2000])
    _shot(browser, shots, "session.png")

    url = (
        f"{served['base']}/#/experiments/{served['experiment_id']}/traces"
        f"?selectedEvaluationId={trace.info.trace_id}&workflowType=genai"
    )
    calls = len(lines)
    _open(browser, url, "episode", "turn 0 chat", f"turn {calls - 1} chat")
    # The trace's own panel, not the list of traces behind it.
    drawer = next(
        text
        for text in (e.text for e in browser.find_elements(By.CSS_SELECTOR, "[role='dialog']"))
        if "turn 0 chat" in text
    )
    # The trace header: MLflow's sum of the episode's tokens, and of its dollars (shown to the cent).
    header = re.search(r"^([\d,]+) tokens\n\$(\d+\.\d+)$", drawer, flags=re.MULTILINE)
    assert header is not None, drawer[:2000]
    assert int(header.group(1).replace(",", "")) == tokens
    assert float(header.group(2)) == pytest.approx(round(record.cost, 2), abs=0.005)
    # Each model call's cost as the span tree shows it (to 6 decimals): together the episode's dollars.
    rest = drawer[header.end() :]
    shown = [float(x) for x in re.findall(r"^\$(\d+\.\d+)$", rest, flags=re.MULTILINE)]
    # A cost per model call, and one per routing decision that billed anything (an embedding, say).
    assert len([x for x in shown if x > 0]) == calls, (calls, shown)
    assert sum(shown) == pytest.approx(record.cost, abs=len(shown) * 5e-7 + 1e-9)
    _shot(browser, shots, "trace.png")
