"""`harness benchmark` logging to a real `mlflow server` on PostgreSQL, found again through the MLflow client.

A tiny definition (two fixed routers on a two-episode split, real engine) runs
with ``MLFLOW_TRACKING_URI`` naming the server, with a password in it that must
never reach a log line, an output, a stored file or a logged value. The parent
run, the nested family and point runs, the frontier artifacts and the episodes'
traces are on the server and none in the results directory; a rerun logs the same
runs and traces again without duplicating any.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from harness.benchmarks import get_benchmark
from harness.cli import app

pytest_plugins = ("services",)
pytestmark = pytest.mark.scale

SECRET = "s3cret-pw"
ROUTERS = [{"name": "single", "params": {"model": "gpt-oss-120b"}}, {"name": "random"}]


def tiny_split(path: Path) -> Path:
    """The shipped split with quick subsets of one find-animal and one find-plant variation (one variation
    of one task type on the OOD split, which has neither)."""
    split = json.loads(get_benchmark("scienceworld").split_file.read_text())
    for name, per_task in split["splits"].items():
        types = [t for t in ("find-animal", "find-plant") if t in per_task] or sorted(per_task)[:1]
        split["quick"][name] = {task: per_task[task][:1] for task in types}
    split["version"] = "tiny-remote"
    path.write_text(json.dumps(split))
    return path


def definition(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-remote.yaml"
    spec = {
        "name": "tiny-remote",
        "pool": "paper6",
        "split_file": str(tiny_split(tmp_path / "split.json")),
        "quick": True,
        "workers": 1,
        "limits": {"max_turns": 10},
        "collect": {"router": {"name": "random"}, "split": "train", "quick": True, "seeds": [0]},
        "eval_splits": ["test_id"],
        "fixed_routers": ROUTERS,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def logged(client: MlflowClient, experiment_id: str) -> dict[str, list]:
    runs = client.search_runs([experiment_id], max_results=1000)
    traces = client.search_traces(locations=[experiment_id], max_results=500)
    return {"runs": runs, "traces": traces}


def test_benchmark_logs_to_a_tracking_server_as_results_arrive_and_a_rerun_duplicates_nothing(
    mlflow_server, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    server_with_password = mlflow_server.url.replace("http://", f"http://harness:{SECRET}@")
    results, reports = tmp_path / "results", tmp_path / "reports"
    argv = ["benchmark", str(definition(tmp_path)), "--results", str(results), "--reports", str(reports)]
    env = {"MLFLOW_TRACKING_URI": server_with_password, "COLUMNS": "200"}
    with caplog.at_level(logging.DEBUG):
        first = CliRunner().invoke(app, argv, env=env)
    assert first.exit_code == 0, first.output
    assert f"mlflow_uri: {mlflow_server.url}" in first.output

    bench = results / "tiny-remote"
    assert not (bench / "mlflow.db").exists() and not (bench / "mlartifacts").exists()
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("tiny-remote")
    found = logged(client, experiment.experiment_id)
    runs = {r.info.run_name: r for r in found["runs"]}
    parent = runs["tiny-remote"]
    assert parent.data.tags["kind"] == "benchmark" and parent.info.status == "FINISHED"
    families = [r for r in found["runs"] if r.data.tags.get("kind") == "family"]
    assert {r.info.run_name for r in families} == {"family single", "family random"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in families)
    points = {r.info.run_name: r for r in found["runs"] if r.data.tags.get("kind") == "point"}
    assert set(points) == {"single:gpt-oss-120b", "random"}
    family_ids = {r.info.run_id for r in families}
    assert all(p.data.tags["mlflow.parentRunId"] in family_ids for p in points.values())
    assert points["random"].data.metrics["test_id/episodes"] == 2
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"frontier_test_id.json", "pareto_test_id.png", "benchmark.json"} <= artifacts
    frontier = client.download_artifacts(parent.info.run_id, "frontier_test_id.json", str(tmp_path / "back"))
    table = json.loads(Path(frontier).read_text())  # MLflow's table layout: columns and rows
    assert {"single:gpt-oss-120b", "random"} <= {
        v for row in table["data"] for v in row if isinstance(v, str)
    }
    # One trace per evaluated episode (each has a turn file).
    episodes = sum(1 for _ in (bench / "runs").rglob("turns/*.jsonl"))
    assert episodes > 0 and len(found["traces"]) == episodes

    with caplog.at_level(logging.DEBUG):
        second = CliRunner().invoke(app, argv, env=env)
    assert second.exit_code == 0, second.output
    again = logged(client, experiment.experiment_id)
    assert sorted(r.info.run_id for r in again["runs"]) == sorted(r.info.run_id for r in found["runs"])
    assert len(again["traces"]) == len(found["traces"])
    point = points["random"].info.run_id
    assert len(client.get_metric_history(point, "test_id/score")) == 1
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == artifacts

    # The password is nowhere: not in what was printed or logged, stored, or logged to the server.
    assert SECRET not in first.output + second.output + caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for run in again["runs"]:
        values = [*run.data.params.values(), *run.data.tags.values()]
        assert not [v for v in values if SECRET in v], run.info.run_name
