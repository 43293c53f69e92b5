"""`harness benchmark` end to end on a tiny definition: real engine, real MiniLM, real MLflow store.

Collects sticky-random exploration on the quick train subset, trains ridge,
evaluates it with a single-model and the random router on quick test_id, and
prints one table per evaluation split with score, total cost and switch rate.
A second invocation resumes: nothing is collected, trained or played again.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.trajectory import RunStore

DEFINITION = {
    "name": "tiny",
    "pool": "paper6",
    "quick": True,
    "workers": 2,
    "collect": {"router": {"name": "sticky-random"}, "split": "train", "quick": True, "seeds": [0]},
    "eval_splits": ["test_id"],
    "fixed_routers": [{"name": "single", "params": {"model": "gpt-oss-120b"}}, {"name": "random"}],
    "learned": [{"name": "ridge", "lambdas": [0.0]}],
}


def test_benchmark_command_runs_every_stage_prints_the_table_and_resumes(tmp_path: Path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(DEFINITION))
    argv = [
        "benchmark",
        str(path),
        "--results",
        str(tmp_path / "results"),
        "--reports",
        str(tmp_path / "reports"),
    ]
    first = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    bench = tmp_path / "results" / "tiny"
    for label in ("single:gpt-oss-120b", "random", "ridge@lam=0"):
        assert label in first.output
        assert len(RunStore(bench / "runs" / "test_id" / label).finished_keys()) == 13
    assert "tiny: test_id" in first.output and "switch rate" in first.output and "$ total" in first.output
    assert (tmp_path / "reports" / "tiny.md").exists()
    assert (bench / "mlflow.db").stat().st_size > 0
    manifest = json.loads((bench / "benchmark.json").read_text())
    assert manifest["definition"]["name"] == "tiny"
    stages = manifest["stage_seconds"]  # the profile of the run, stage by stage
    assert set(stages) == {"collect", "train", "stage_b", "tune", "select", "evaluate", "track", "report"}
    assert all(seconds >= 0 for seconds in stages.values()) and stages["evaluate"] > 0

    turns_before = sorted(p.stat().st_mtime_ns for p in bench.rglob("turns/*.jsonl"))
    second = CliRunner().invoke(app, [*argv, "--no-track"], env={"COLUMNS": "200"})
    assert second.exit_code == 0, second.output
    assert "checkpoint up to date" in second.output
    assert sorted(p.stat().st_mtime_ns for p in bench.rglob("turns/*.jsonl")) == turns_before
