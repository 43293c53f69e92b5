"""The engine prefix cache: identical episodes through the cache and through the real ScienceWorld engine,
and a nondeterministic environment detected, counted and run on the engine."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from harness.agent import run_episode
from harness.backends import build_backends
from harness.benchmarks import get_benchmark
from harness.benchmarks.scienceworld.prompt import FINISH
from harness.config import Limits
from harness.pool import load_pool
from harness.replay.importers import read_run_dir
from harness.replay.prefix_cache import PrefixCache, PrefixCacheEnv, cached_environment
from harness.trajectory import RunStore, read_lines
from harness.types import Action, StepResult, TaskInstance
from routers import make_router

BENCHMARK = get_benchmark("scienceworld")
POOL = load_pool("paper6")
LIMITS = Limits(max_turns=25)
TASKS = BENCHMARK.load_split().tasks("test_id", quick=True)[:2]


def play(
    env, out: Path, router: str, params: dict, seed: int = 0
) -> tuple[list[dict], dict[str, list[dict]]]:
    """Run the tasks with the simulated pool; the episode records (without durations) and turn lines."""
    store = RunStore(out)
    store.open({"run": {"router": {"name": router, "params": params}, "pool": "paper6"}})
    backends = build_backends(POOL, "simulated")
    records = []
    for task in TASKS:
        chooser = make_router(router, params, POOL.names)
        result = run_episode(BENCHMARK, env, backends, chooser, task, seed, LIMITS, store)
        store.record_episode(result.record(router))
        records.append(dataclasses.replace(result.record(router), duration_s=None))
    turns = {  # without the wall-clock span times, as the records are without their durations
        t.key: [
            {k: v for k, v in line.items() if k != "times"}
            for line in read_lines(out / "turns" / f"{t.key.replace('/', '__')}.jsonl")
        ]
        for t in TASKS
    }
    return records, turns


@pytest.fixture(scope="module")
def logged_run(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "single"
    return out, play(env, out, "single", {"model": "gpt-5"})


def test_logged_episodes_replay_through_the_cache_without_the_engine(env, logged_run, tmp_path):
    out, (records, turns) = logged_run
    assert {p.name for p in (out / "turns").iterdir()} == {f"{t.key.replace('/', '__')}.jsonl" for t in TASKS}
    episodes, _, _ = read_run_dir(out)
    cached = cached_environment(env, episodes)
    again, again_turns = play(cached, tmp_path / "cached", "single", {"model": "gpt-5"})
    assert again == records and again_turns == turns
    stats = cached.stats
    # Every step served. The engine ran only for what turn lines do not hold: the first observation
    # (a reset per task) and the visible objects the oracle ranks at a wrong focus (a replayed prefix).
    stepped = [t for lines in turns.values() for t in lines if t["action"] not in (None, FINISH)]
    assert stats.served_steps == len(stepped) > 0
    assert stats.engine_steps == stats.replayed_steps and stats.mismatches == 0
    # Now the cache holds those as well: a third pass never touches the engine.
    resets, steps = stats.engine_resets, stats.engine_steps
    assert play(cached, tmp_path / "third", "single", {"model": "gpt-5"}) == (records, turns)
    assert (stats.engine_resets, stats.engine_steps) == (resets, steps)
    assert stats.served_resets == len(TASKS)


def test_other_routers_leave_the_tree_and_match_the_engine(env, logged_run, tmp_path):
    """Sticky-random shares the first turns with the log, then diverges: the engine is materialised lazily,
    every replayed result is checked, and the episodes equal those of the plain engine."""
    out, _ = logged_run
    episodes, _, _ = read_run_dir(out)
    cached = cached_environment(env, episodes)
    params = {"switch_prob": 0.3}
    plain = {seed: play(env, tmp_path / f"plain{seed}", "sticky-random", params, seed) for seed in (0, 1)}
    for seed in (0, 1):
        assert play(cached, tmp_path / f"cached{seed}", "sticky-random", params, seed) == plain[seed]
    stats = cached.stats
    assert stats.mismatches == 0 and not stats.nondeterministic
    assert stats.engine_steps > 0 and stats.replayed_steps > 0
    # Leaving the tree early saves little (served steps are replayed); a rerun is served whole.
    steps = stats.engine_steps
    assert play(cached, tmp_path / "rerun", "sticky-random", params, 0) == plain[0]
    assert stats.engine_steps == steps and stats.engine_steps < stats.requested_steps


def test_the_oracle_stays_right_while_the_engine_is_not_stepped(env, logged_run):
    """Gold progress and the visible objects the oracle ranks, served and materialised, match the engine."""
    out, _ = logged_run
    episodes, _, _ = read_run_dir(out)
    cached = cached_environment(env, episodes)
    episode = episodes[0]
    task = TaskInstance(episode.benchmark, episode.task, episode.variation, episode.split)
    cached.reset(task)
    cached.reset(task)  # now served
    steps = [t.extra["action"] for t in episode.turns[:6] if t.extra.get("error") != "format"]
    for text in steps:
        cached.step(Action(text))
    assert cached.stats.engine_steps == 0
    served = (cached.oracle.progress(), cached.oracle.next_action(), cached.oracle.wrong_critical_actions(5))
    assert cached.stats.engine_steps == len(steps)  # the visible objects needed the engine once
    assert cached.oracle.wrong_critical_actions(5) == served[2] and cached.stats.engine_steps == len(steps)
    env.reset(task)
    for text in steps:
        env.step(Action(text))
    assert served == (env.oracle.progress(), env.oracle.next_action(), env.oracle.wrong_critical_actions(5))


class CoinWorld:
    """A toy engine: the observation is the action count, except on task 'flaky', whose reset flips a coin."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.steps = self.resets = 0
        self.noise = 0

    def reset(self, task: TaskInstance) -> tuple[str, str]:
        self.resets += 1
        self.count, self.task = 0, task
        self.noise = int(self.rng.integers(1000)) if task.task == "flaky" else 0
        return "count things", "start"

    def step(self, action: Action) -> StepResult:
        self.steps += 1
        self.count += 1
        return StepResult(f"{action.text} -> {self.count + self.noise}", float(self.count), False)

    @property
    def oracle(self):
        return None

    def close(self) -> None:
        pass


def walk(env, task: TaskInstance, actions: list[str]) -> list[StepResult]:
    env.reset(task)
    return [env.step(Action(a)) for a in actions]


def test_a_nondeterministic_task_is_detected_counted_and_run_on_the_engine():
    engine = CoinWorld()
    cached = PrefixCacheEnv(engine, PrefixCache())
    steady, flaky = (TaskInstance("toy", name, 0, "test") for name in ("steady", "flaky"))
    for task in (steady, flaky):
        walk(cached, task, ["a", "b"])
    assert cached.stats.engine_steps == 4 and cached.stats.mismatches == 0
    # Repeats are served; the steady task leaves its tree at "c" and replays its prefix on the engine.
    assert walk(cached, steady, ["a", "b", "c"]) == walk(CoinWorld(), steady, ["a", "b", "c"])
    assert (cached.stats.served_steps, cached.stats.replayed_steps, cached.stats.mismatches) == (2, 2, 0)
    # The flaky task's replay meets another world: counted, the task dropped from the cache, engine from now on.
    walk(cached, flaky, ["a", "b", "c"])
    assert cached.stats.mismatches == 1 and cached.stats.nondeterministic == {flaky.key}
    steps = engine.steps
    results = walk(cached, flaky, ["a", "b"])
    assert engine.steps == steps + 2 and results[-1].observation == f"b -> {2 + engine.noise}"
    assert flaky.key not in cached.cache.roots
    # The steady task is untouched by the other's nondeterminism.
    before = engine.steps
    walk(cached, steady, ["a", "b", "c"])
    assert engine.steps == before


def test_a_reset_that_disagrees_with_the_tree_is_a_mismatch():
    engine = CoinWorld()
    cached = PrefixCacheEnv(engine, PrefixCache())
    task = TaskInstance("toy", "steady", 0, "test")
    walk(cached, task, ["a"])
    cached.cache.roots[task.key].observation = "other start"  # as if recorded from another engine
    walk(cached, task, ["a", "b"])  # served reset, served "a", then materialise: the reset differs
    assert cached.stats.mismatches == 1 and task.key in cached.stats.nondeterministic
