"""`harness benchmark` end to end on a tiny definition: real engine, real MiniLM, real MLflow store.

Collects sticky-random exploration on the quick train subset, trains ridge,
evaluates it with a single-model and the random router on quick test_id, and
prints one table per evaluation split with score, total cost and switch rate.
A second invocation resumes: nothing is collected, trained or played again; nor in a copy of the results.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.config import load_benchmark
from harness.pipeline import BenchmarkRun
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


def test_benchmark_command_runs_every_stage_prints_the_table_and_resumes_in_place_or_copied(tmp_path: Path):
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
    # The time estimate comes before the first episode: nothing of scienceworld is recorded yet to time it by,
    # so the reference machine's time per simulated episode stands in.
    assert first.output.index("estimate: 65 of 65 planned episodes to play") < first.output.index(
        "collect train s0:"
    )
    assert "0.27 s per episode on one worker of a 2-core reference machine) = about" in " ".join(
        first.output.split()
    )
    # Real models' time is nobody's reference: it says it has none.
    real = replace(load_benchmark(path), name="tiny-real", backend="litellm")
    assert BenchmarkRun(real, tmp_path / "fresh").estimate().seconds is None
    assert "benchmark" in first.output and "left ~" in first.output  # the whole benchmark's bar
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

    # Another definition beside it is timed by the episodes this one recorded.
    other = BenchmarkRun(replace(load_benchmark(path), name="tiny2"), tmp_path / "results").estimate()
    assert other.to_play == 65 and other.seconds_per_episode is not None and other.seconds_per_episode > 0
    assert "recorded scienceworld episodes" in other.line() and "= about" in other.line()

    turns_before = sorted(p.stat().st_mtime_ns for p in bench.rglob("turns/*.jsonl"))
    second = CliRunner().invoke(app, [*argv, "--no-track"], env={"COLUMNS": "200"})
    assert second.exit_code == 0, second.output
    assert "checkpoint up to date" in second.output
    assert "estimate: 0 of 65 planned episodes to play; every planned episode is recorded" in second.output
    assert sorted(p.stat().st_mtime_ns for p in bench.rglob("turns/*.jsonl")) == turns_before
    # The stage profile counts every attempt: the rerun adds its seconds to the first run's.
    resumed = json.loads((bench / "benchmark.json").read_text())["stage_seconds"]
    assert all(resumed[stage] >= seconds for stage, seconds in stages.items())
    assert resumed["evaluate"] > 0 and sum(resumed.values()) > sum(stages.values())

    # Every path the results directory records of itself is relative: a copy (or a move) resumes where it
    # is, its checkpoints up to date, nothing played again, its MLflow store logging into its own artifacts.
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "results", copy, symlinks=True)  # keeps modification times
    moved = copy / "tiny"
    written = {str(p.relative_to(moved)): p.stat().st_mtime_ns for p in moved.rglob("*.jsonl")}
    again = [*argv[:2], "--results", str(copy), "--reports", str(tmp_path / "copy-reports")]
    third = CliRunner().invoke(app, again, env={"COLUMNS": "200"})
    assert third.exit_code == 0, third.output
    assert "checkpoint up to date" in third.output
    assert {str(p.relative_to(moved)): p.stat().st_mtime_ns for p in moved.rglob("*.jsonl")} == written
    ridge = json.loads((moved / "runs" / "test_id" / "ridge@lam=0" / "config.json").read_text())["run"]
    assert ridge["router"]["params"]["checkpoint"] == {"relative_path": "../../../models/ridge"}
    experiments = sqlite3.connect(moved / "mlflow.db").execute("SELECT artifact_location FROM experiments")
    assert {location for (location,) in experiments} == {f"{moved}/mlartifacts", f"{moved}/mlartifacts/0"}


def test_the_benchmark_bar_shows_the_whole_benchmarks_remaining_time(monkeypatch):
    """Before an episode: the estimate's; after: episodes left times the seconds per episode measured."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from harness import cli
    from harness.estimate import PlannedBatch, TimeEstimate

    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=200, force_terminal=False))
    clock = iter([100.0, 130.0])  # plan at t=100; the first episode ends 30 s later
    monkeypatch.setattr(cli.time, "monotonic", lambda: next(clock))
    estimate = TimeEstimate((PlannedBatch("collect", 6, 2), PlannedBatch("evaluate", 4)), 3.0, "measured")
    bar = cli.ProgressBar()
    bar.plan(estimate)
    whole = bar._progress.tasks[0]
    assert whole.completed == 2 and whole.total == 10 and whole.fields["seconds_left"] == 24.0
    assert "left ~24 s" in str(cli.RemainingColumn().render(whole))
    bar.start("collect train s0", 6, [])
    bar.episode(SimpleNamespace(score=50.0, cost=0.01))  # what the bar reads of an episode record
    assert whole.completed == 3 and whole.fields["seconds_left"] == 7 * 30.0
    assert "left ~4 min" in str(cli.RemainingColumn().render(whole))
    bar.stop()
    bar.finish()
    assert "collect train s0: 1/6" in out.getvalue()


def test_a_tuning_trial_with_an_infrastructure_failure_is_played_again_on_the_rerun(
    tmp_path: Path, monkeypatch
):
    """A val batch a fault cut short (a full disk, a dead engine) is no trial result: the benchmark stops in one
    line, and its rerun plays the same λ's episodes again and tunes as if nothing had happened."""
    definition = {
        **DEFINITION,
        "name": "tuned",
        "fixed_routers": [{"name": "random"}],
        "tune": {"trials": 2, "lam_range": [0.0, 0.5], "split": "val", "quick": True},
    }
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(definition))
    argv = ["benchmark", str(path), "--results", str(tmp_path / "results"), "--no-track"]
    argv += ["--reports", str(tmp_path / "reports")]
    real_run = BenchmarkRun.run

    def run_with_a_fault(self, config, out, label):
        records = real_run(self, config, out, label)
        if label.startswith("tune "):  # the fault strikes the first tuning batch's last episode
            store = RunStore(out)
            hit = replace(
                records[-1], status="failed", failure="infrastructure", error="StorageError: disk full"
            )
            lines = [json.dumps(r.to_line()) for r in [*records[:-1], hit]]
            store.episodes_path.write_text("".join(line + "\n" for line in lines))
            records = [*records[:-1], hit]
        return records

    monkeypatch.setattr(BenchmarkRun, "run", run_with_a_fault)
    first = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert first.exit_code == 1, first.output
    assert "failed for infrastructure reasons" in first.output and "Traceback" not in first.output
    monkeypatch.setattr(BenchmarkRun, "run", real_run)
    second = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert second.exit_code == 0, second.output
    manifest = json.loads((tmp_path / "results" / "tuned" / "benchmark.json").read_text())
    assert len(manifest["selected"]["ridge"]["trials"]) == 2  # both trials complete, none counted twice
    for run in (tmp_path / "results" / "tuned" / "runs" / "val").iterdir():
        assert not [r for r in RunStore(run).episodes() if r.failed]
