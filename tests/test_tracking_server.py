"""Logging to a real ``mlflow server`` backed by PostgreSQL, through the MLflow client.

The server (tests/services.py) runs as its own process with a PostgreSQL backend
store and proxied local artifacts; the test finds what it logged through a second,
independent client, then logs everything again and checks nothing was duplicated.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

import harness.tracking_server
from harness.errors import ConfigError, HarnessError, InfrastructureError
from harness.tracking_server import KEY_TAG, ServerTracker, check_answers, key_digest

# The fixtures, until the tests' conftest registers them for every module.
pytest_plugins = ("services",)
POINTS = {"lam=0.0": (0.71, 0.020), "lam=0.5": (0.64, 0.011)}


def _log_tiny_benchmark(tracker: ServerTracker, frontier: Path) -> dict[str, str]:
    """A parent run, one family run with the frontier artifact, one nested run per operating point."""
    ids = {"bench": tracker.log("tiny", "tiny", params={"seed": 7, "api_key": "sk-secret"}, finished=False)}
    ids["family"] = tracker.log(
        "tiny/mtrouter", "mtrouter", parent=ids["bench"], params={"family": "mtrouter"}, artifacts=[frontier]
    )
    for point, (score, cost) in POINTS.items():
        ids[point] = tracker.log(
            f"tiny/mtrouter/test/{point}",
            point,
            parent=ids["family"],
            params={"lam": point.split("=")[1]},
            metrics={"test/score": score, "test/cost": cost},
            tags={"split": "test"},
        )
    tracker.log("tiny", "tiny", finished=True)
    return ids


@pytest.mark.slow  # the session's mlflow server takes ~25 s to migrate its PostgreSQL store and start
def test_a_benchmark_logged_twice_to_a_server_is_found_once(
    mlflow_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    frontier = tmp_path / "frontier.csv"
    frontier.write_text("lam,score,cost\n0.0,0.71,0.020\n0.5,0.64,0.011\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    first = _log_tiny_benchmark(ServerTracker("tiny-bench"), frontier)  # the server from the environment

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("tiny-bench")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"tiny", "mtrouter", *POINTS}
    parent, family = runs["tiny"], runs["mtrouter"]
    assert parent.info.status == "FINISHED" and parent.data.params == {"seed": "7"}  # no credential logged
    assert family.data.tags["mlflow.parentRunId"] == parent.info.run_id
    for point, (score, cost) in POINTS.items():
        run = runs[point]
        assert run.data.tags["mlflow.parentRunId"] == family.info.run_id
        assert run.data.metrics == {"test/score": score, "test/cost": cost}
        assert run.data.tags[KEY_TAG] == key_digest(f"tiny/mtrouter/test/{point}")
    assert [a.path for a in client.list_artifacts(family.info.run_id)] == ["frontier.csv"]
    fetched = client.download_artifacts(family.info.run_id, "frontier.csv", str(tmp_path / "back"))
    assert Path(fetched).read_text() == frontier.read_text()
    # The artifact went through the server's proxy into its own artifact root.
    assert list(mlflow_server.artifacts.rglob("frontier.csv"))

    again = _log_tiny_benchmark(ServerTracker("tiny-bench", tracking_uri=mlflow_server.url), frontier)
    assert again == first
    assert len(client.search_runs([experiment.experiment_id])) == len(runs)
    for point in POINTS:
        assert len(client.get_metric_history(first[point], "test/score")) == 1
    assert [a.path for a in client.list_artifacts(family.info.run_id)] == ["frontier.csv"]


@pytest.mark.slow
def test_a_changed_param_under_the_same_key_is_refused(mlflow_server):
    tracker = ServerTracker("conflicts", tracking_uri=mlflow_server.url)
    tracker.log("point", "point", params={"lam": 0.5})
    with pytest.raises(HarnessError, match=r"'point' has param lam='0.5', not '0.7'"):
        tracker.log("point", "point", params={"lam": 0.7})


def test_a_missing_or_silent_server_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        ServerTracker("x")
    with socket.socket() as held:  # bound, not listening: nothing answers on it meanwhile
        held.bind(("127.0.0.1", 0))
        silent = f"http://me:hunter2@127.0.0.1:{held.getsockname()[1]}"
        with pytest.raises(HarnessError, match=r"'http://me:\*\*\*@127.0.0.1:\d+': not answering") as error:
            ServerTracker("x", tracking_uri=silent)
    assert "hunter2" not in str(error.value)


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _serve_health(port: int) -> http.server.HTTPServer:
    server = http.server.HTTPServer(("127.0.0.1", port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_server_that_answered_is_waited_for_through_a_restart_then_is_an_infrastructure_failure(
    monkeypatch: pytest.MonkeyPatch,
):
    """A tracking server restarted mid-benchmark is not a wrong address: the benchmark waits for it, and
    if it stays away it fails as infrastructure (exit 1), not as bad input (exit 2)."""
    server = _serve_health(0)
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}"
    check_answers(url)
    server.shutdown()
    server.server_close()
    monkeypatch.setattr(harness.tracking_server, "OUTAGE_WAIT_S", 1.5)
    started = time.monotonic()
    with pytest.raises(InfrastructureError, match=r"stopped answering for 2 s"):
        check_answers(url)
    assert time.monotonic() - started >= 1.5
    monkeypatch.setattr(harness.tracking_server, "OUTAGE_WAIT_S", 30.0)
    restarted_at: list[float] = []  # noted before the server listens: under load the check may win the race
    restarted: list[http.server.HTTPServer] = []

    def restart() -> None:
        restarted_at.append(time.monotonic())
        restarted.append(_serve_health(port))

    timer = threading.Timer(1.0, restart)
    waiting = time.monotonic()
    timer.start()
    try:
        check_answers(url)  # back within the wait: no error
        assert restarted_at and restarted_at[0] - waiting >= 0.9  # it waited for the restart
    finally:
        timer.join()
        for again in restarted:
            again.shutdown()
            again.server_close()
