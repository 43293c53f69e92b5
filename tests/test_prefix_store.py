"""The prefix cache on disk: two writer processes at once, a nondeterministic engine seen across
processes, and live ScienceWorld batches (2 workers) whose records are the same with and without it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from prefix_store_writer import STORE, TallyWorld, play, walks
from typer.testing import CliRunner

from harness.batch import CACHE_FILE, Workers, add_cache_counts, execute, read_cache_counts
from harness.cli import app
from harness.config import Limits, RouterSpec, RunConfig, load_benchmark
from harness.errors import ConfigError
from harness.pipeline import BenchmarkRun
from harness.records import EpisodeRecord
from harness.replay.prefix_cache import CacheStats, PrefixCacheEnv
from harness.replay.prefix_store import StoredPrefixCache, store_path
from harness.trajectory import RunStore
from harness.types import Action, StepResult, TaskInstance

WRITER = Path(__file__).with_name("prefix_store_writer.py")


def test_two_processes_grow_one_store_at_once(tmp_path):
    env = {"PYTHONPATH": ":".join(sys.path)}
    writers = [
        subprocess.Popen(
            [sys.executable, str(WRITER), str(tmp_path), worker], stdout=subprocess.PIPE, text=True, env=env
        )
        for worker in ("0", "1")
    ]
    outputs = [json.loads(w.communicate(timeout=120)[0]) for w in writers]
    assert [w.returncode for w in writers] == [0, 0]
    plans = [walks(seed=0), list(reversed(walks(seed=0)))]
    for output, plan in zip(outputs, plans, strict=True):
        assert output["results"] == play(TallyWorld(), plan)  # what the engine alone gives
        assert output["counts"]["mismatches"] == 0
    # A third process's view: every walk is served from the store, the engine never stepped.
    engine = TallyWorld()
    third = PrefixCacheEnv(engine, StoredPrefixCache(tmp_path / STORE))
    assert play(third, plans[0]) == play(TallyWorld(), plans[0])
    assert engine.steps == 0 and third.stats.served_steps == sum(len(a) for _, a in plans[0])


class Drifting(TallyWorld):
    """The same world, except that one step's observation differs: another engine version, say."""

    def step(self, action: Action) -> StepResult:
        result = super().step(action)
        if self.prefix == ["a", "b"]:
            return StepResult(result.observation + " (drifted)", result.score, result.done)
        return result


def test_a_mismatch_found_by_one_process_reaches_the_others(tmp_path):
    task = TaskInstance("counter", "t0", 0, "test")
    first = PrefixCacheEnv(TallyWorld(), StoredPrefixCache(tmp_path / STORE))
    walk = [first.reset(task), first.step(Action("a")), first.step(Action("b"))]
    # Another process (its own connection) over a drifting engine: served "a" and "b" from the first
    # one's nodes, then "c" leaves the tree, and replaying the prefix on its engine meets the drift.
    second = PrefixCacheEnv(Drifting(), StoredPrefixCache(tmp_path / STORE))
    assert [second.reset(task), second.step(Action("a")), second.step(Action("b"))] == walk
    assert second.inner.steps == 0
    second.step(Action("c"))
    assert second.stats.mismatches == 1 and task.key in second.stats.nondeterministic
    # The first process learns it at its next episode and plays that task on the engine alone.
    steps = first.inner.steps
    first.reset(task)
    first.step(Action("a"))
    assert first.inner.steps == steps + 1 and first.stats.fallback_episodes == 1
    assert first.stats.mismatches == 0  # found (and counted) by the other process


def test_a_store_names_its_engine_and_refuses_an_unwritable_directory(tmp_path):
    path = store_path(tmp_path, "scienceworld")
    assert path.parent == tmp_path and path.name.startswith("scienceworld-") and path.suffix == ".sqlite"
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="prefix cache directory .*file/cache is not writable"):
        StoredPrefixCache.open(blocker / "cache", "scienceworld")


def test_new_gold_paths_get_a_tree_of_their_own(tmp_path, monkeypatch):
    """A tree records whether each task had an oracle: served to a newer gold cache, a variation that has a
    path now would still be played without one (every simulated episode on it failing)."""
    import harness.benchmarks.scienceworld as scienceworld

    before = store_path(tmp_path, "scienceworld")
    assert store_path(tmp_path, "scienceworld") == before
    monkeypatch.setattr(scienceworld, "_gold_digest", lambda: "another-gold-cache")
    assert store_path(tmp_path, "scienceworld") != before


def _records(run: Path) -> tuple[list[EpisodeRecord], dict[str, list[dict]]]:
    episodes = sorted(
        (dataclasses.replace(r, duration_s=None) for r in RunStore(run).episodes()),
        key=lambda r: r.episode,
    )
    turns = {  # without the wall-clock span times, as the records are without their durations
        p.name: [{k: v for k, v in json.loads(x).items() if k != "times"} for x in p.read_text().splitlines()]
        for p in sorted((run / "turns").iterdir())
    }
    return episodes, turns


@pytest.mark.slow
def test_live_batches_with_the_cache_record_what_the_engine_alone_records(tmp_path):
    """Random routing over four quick test_id tasks, two worker processes: a plain run, a cold cached run
    and a warm one give the same episode records and turn files; the warm run is served from the store."""
    config = RunConfig(
        router=RouterSpec("random"),
        split="test_id",
        quick=True,
        task_filter="^(boil|find-animal|melt|test-conductivity)$",
        workers=2,
        limits=Limits(max_turns=15),
    )
    cache = tmp_path / "cache"
    cached = RunConfig(**{**config.__dict__, "prefix_cache": str(cache)})
    with Workers(2) as workers:  # the same two JVMs, behind the cache or not
        execute(config, tmp_path / "plain", workers=workers)
        execute(cached, tmp_path / "cold", workers=workers)
        execute(cached, tmp_path / "warm", workers=workers)
    plain = _records(tmp_path / "plain")
    assert len(plain[0]) == 4
    assert _records(tmp_path / "cold") == plain and _records(tmp_path / "warm") == plain
    # The cache leaves the run's config as it is: a run may be resumed with or without it.
    assert (tmp_path / "warm" / "config.json").read_text() == (tmp_path / "plain" / "config.json").read_text()
    assert not (tmp_path / "plain" / CACHE_FILE).exists()
    cold = json.loads((tmp_path / "cold" / CACHE_FILE).read_text())
    warm = json.loads((tmp_path / "warm" / CACHE_FILE).read_text())
    assert cold["episodes"] == warm["episodes"] == 4 and cold["store"] == str(cache)
    assert cold["misses"] > 0 and cold["mismatches"] == warm["mismatches"] == 0
    assert warm["hits"] == warm["requested_steps"] > 0 and warm["engine_steps"] == 0
    assert warm["served_resets"] == 4 and warm["saved_fraction"] == 1.0
    total = read_cache_counts([tmp_path / "cold", tmp_path / "warm", tmp_path / "plain"])
    assert total is not None and total["runs"] == 2 and total["hits"] == cold["hits"] + warm["hits"]


def test_the_cli_option_reaches_the_batch_and_a_bad_directory_stops_it_before_any_episode(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--router",
            "random",
            "--quick",
            "--out",
            str(tmp_path / "run"),
            "--prefix-cache",
            str(blocker),
        ],
    )
    assert (
        result.exit_code == 2
        and "prefix cache directory" in result.output
        and "not writable" in result.output
    )
    assert not (tmp_path / "run" / "episodes.jsonl").exists()


def test_benchmark_json_adds_up_the_counters_of_every_batch(tmp_path):
    run = BenchmarkRun(load_benchmark("quick"), tmp_path)
    assert run.prefix_cache == run.layout.prefix_cache  # quick.yaml turns it on
    counts = {name: 1 for name in CacheStats.COUNTERS} | {"served_steps": 9, "engine_steps": 1}
    for out in (run.layout.data("explore"), run.layout.run("test_id", "random"), run.layout.run("val", "x")):
        with RunStore(out) as store:  # a run directory: the layout lists it by its config.json
            store.open({"run": {}})
        add_cache_counts(out, str(run.prefix_cache), counts)
    add_cache_counts(run.layout.run("val", "x"), str(run.prefix_cache), counts)
    run.write_manifest({})
    total = json.loads(run.layout.manifest.read_text())["prefix_cache"]
    assert (total["runs"], total["episodes"], total["hits"], total["engine_steps"]) == (3, 4, 36, 4)
    # Requested: 9 served + 1 engine - 1 replayed per episode; the engine ran 1 of those 9.
    assert total["requested_steps"] == 36 and total["saved_fraction"] == pytest.approx(1 - 4 / 36)
