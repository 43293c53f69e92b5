"""A benchmark and a learned router from a third-party distribution, end to end, without Java.

The counter benchmark (tests/plugins/toy_benchmark.py) and the ``toy-ridge``
learned family are registered only through the entry-point groups of a
test-only installed distribution. With them: one episode, a batch over two
worker processes, ``harness train`` for every trainable family, and ``harness
benchmark`` on a tiny definition (collect, train, tune, evaluate, track, report).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.agent import run_episode
from harness.backends import build_backends
from harness.batch import execute
from harness.benchmarks import available, get_benchmark
from harness.cli import app
from harness.config import RouterSpec, RunConfig
from harness.pool import load_pool
from harness.trajectory import RunStore
from harness.types import TaskInstance
from routers import make_router, trainable

LEARNED = (
    "mtrouter",
    "mtrouter-task",
    "lgbm",
    "ridge",
    "cluster",
    "episode-knn",
    "episode-task",
    "episode-classifier",
    "toy-ridge",
)
SMALL = {
    "mtrouter": ["max_epochs=3"],
    "mtrouter-task": ["max_epochs=3"],
    "lgbm": ["n_estimators=20", "min_child_samples=5"],
    "cluster": ["k=3"],
}


@pytest.fixture(scope="module")
def pool_file(plugin_distribution: Path) -> str:
    return str(plugin_distribution / "toy_pool.yaml")


@pytest.fixture(scope="module")
def stage_a(pool_file: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("counter") / "stage-a"
    config = RunConfig(
        router=RouterSpec("sticky-random", {"switch_prob": 0.3}),
        benchmark="counter",
        pool=pool_file,
        split="train",
        workers=2,
    )
    records = execute(config, out)
    assert len(records) == 12 and all(not r.failed for r in records)
    return out


def test_the_plugin_is_found_through_its_entry_points(plugin_distribution):
    assert available()["counter"] == "toy_benchmark:CounterBenchmark"
    assert "toy-ridge" in trainable() and set(LEARNED) <= set(trainable())


def test_one_episode_is_played_and_scored_by_the_plugin(pool_file, tmp_path):
    benchmark = get_benchmark("counter")
    pool = load_pool(pool_file)
    store = RunStore(tmp_path / "one")
    store.open({})
    router = make_router("single", {"model": "careful"}, pool.names)
    task = TaskInstance("counter", "count", 1, "train")  # target 3
    result = run_episode(
        benchmark, benchmark.make_environment(), build_backends(pool, "simulated"), router, task, 0,
        benchmark.limits, store,
    )  # fmt: skip
    turns = store.turns(task.key)
    assert result.score in (0.0, 100.0) and result.turns == len(turns) <= 8
    # Each turn line holds the messages it appended: the reply, then what the model was shown.
    assert [m.role for m in turns[0].messages] == ["assistant", "user"]
    assert turns[0].messages[1].content.startswith("The count is")
    assert turns[0].task_description == "Count to 3."
    if result.status == "done":
        assert result.score == 100.0 and turns[-1].observation == "The count is 3."


def test_batch_over_two_workers_is_resumable(stage_a, pool_file):
    records = RunStore(stage_a).episodes()
    assert {r.benchmark for r in records} == {"counter"}
    again = execute(RunConfig(
        router=RouterSpec("sticky-random", {"switch_prob": 0.3}), benchmark="counter", pool=pool_file,
        split="train", workers=2,
    ), stage_a)  # fmt: skip
    assert len(again) == 12  # nothing replayed


@pytest.mark.parametrize("family", LEARNED)
def test_harness_train_fits_every_learned_family(stage_a, family, tmp_path):
    params = [f"-p{p}" for p in SMALL.get(family, [])] + [f"-pcache_dir={tmp_path / 'cache'}"]
    out = tmp_path / family
    result = CliRunner().invoke(app, ["train", family, "--data", str(stage_a), "--out", str(out), *params])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "checkpoint.json").read_text())["kind"] == family
    assert "val MSE" in result.output


def test_harness_train_names_an_unknown_hyperparameter(stage_a, tmp_path):
    result = CliRunner().invoke(
        app, ["train", "ridge", "--data", str(stage_a), "--out", str(tmp_path / "m"), "-palpah=1"]
    )
    assert result.exit_code == 2 and "no training option or hyperparameter 'alpah'" in result.output


def test_harness_benchmark_runs_the_plugin_end_to_end(pool_file, tmp_path):
    definition = {
        "name": "counter-tiny",
        "benchmark": "counter",
        "pool": pool_file,
        "quick": True,
        "workers": 2,
        "collect": {"router": {"name": "sticky-random", "params": {"switch_prob": 0.3}}, "seeds": [0, 1]},
        "eval_splits": ["test_id", "test_ood"],
        "fixed_routers": [{"name": "single", "params": {"model": "careful"}}, {"name": "random"}],
        "learned": [{"name": "toy-ridge", "lambdas": [0.0]}],
        "tune": {"trials": 2, "lam_range": [0.0, 0.5], "split": "val", "quick": True},
    }
    path = tmp_path / "counter-tiny.yaml"
    path.write_text(yaml.safe_dump(definition))
    argv = ["benchmark", str(path), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "r")]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    bench = tmp_path / "results" / "counter-tiny"
    manifest = json.loads((bench / "benchmark.json").read_text())
    assert manifest["reference_point"] == {"score": 0.0, "cost": 0.5}  # the plug-in's range bottom
    assert "toy-ridge" in manifest["selected"]
    for split in ("test_id", "test_ood"):
        assert len(RunStore(bench / "runs" / split / "toy-ridge@lam=0").finished_keys()) > 0
    assert (tmp_path / "r" / "counter-tiny.md").exists() and (bench / "mlflow.db").exists()


def test_benchmark_definition_is_validated_before_any_episode(pool_file, tmp_path):
    definition = {
        "name": "bad",
        "benchmark": "counter",
        "pool": pool_file,
        "fixed_routers": [{"name": "single", "params": {"model": "careful"}}],
        "learned": [{"name": "random"}],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(definition))
    result = CliRunner().invoke(app, ["benchmark", str(path), "--results", str(tmp_path / "results")])
    assert result.exit_code == 2 and "'random' is not a trainable router family" in result.output
    assert not (tmp_path / "results" / "bad" / "data").exists()


def test_run_config_file_merges_with_explicit_options(pool_file, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "router": {"name": "single", "params": {"model": "sloppy"}}, "benchmark": "counter", "pool": pool_file,
        "split": "val", "limits": {"max_turns": 5},
    }))  # fmt: skip
    out = tmp_path / "run"
    argv = [
        "run",
        "--config",
        str(config),
        "--split",
        "test_id",
        "--budget",
        "0.5",
        "-p",
        "model=careful",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    run = RunStore(out).config()["run"]
    assert run["split"] == "test_id" and run["benchmark"] == "counter"  # the option wins, the file fills in
    assert run["router"] == {"name": "single", "params": {"model": "careful"}}
    assert run["limits"] == {"max_turns": 5, "budget_dollars": 0.5}
    assert {e.split for e in RunStore(out).episodes()} == {"test_id"}
