"""Counterfactual branches on the real ScienceWorld engine, and the paired target on a hand-made example.

A parent run is played with the simulated pool; its episodes are branched at a
sampled turn. The branches must give back the parent's prefix line for line (the
engine replays it), carry their provenance and the design's propensity, bill only
what they spent, share every random stream with their siblings except the branched
decision, and be read by training and by the off-policy importer like any run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.agent import run_episode
from harness.backends import build_backends
from harness.benchmarks import get_benchmark
from harness.branching import (
    RESTORED_FIELDS,
    BranchDesign,
    BranchDivergence,
    BranchPoint,
    Source,
    branch_points,
    collect_branches,
    play_branch,
)
from harness.config import BENCHMARKS_DIR, Limits, RouterSpec, RunConfig, recorded
from harness.errors import ConfigError, TrajectoryError
from harness.exploration import exploration_spend
from harness.pool import load_pool
from harness.records import EpisodeRecord, TurnRecord
from harness.replay.evaluate import load_logs, logging_episodes
from harness.replay.importers import read_run_dir
from harness.replay.ope import evaluate_policy
from harness.trajectory import RunStore
from harness.types import Decision, Message, TurnState
from routers import make_router
from routers.base import Router
from routers.learned.dataset import (
    TargetOptions,
    TargetStats,
    build_training_set,
    load_samples,
    split_episodes,
)
from routers.learned.fitting import paired_rows, paired_sets
from routers.learned.targets import paired

BENCHMARK = get_benchmark("scienceworld")
POOL = load_pool("paper6")
LIMITS = Limits(max_turns=8)
TASK = BENCHMARK.load_split().tasks("train", quick=True)[0]
BENCHMARK_SPLITS = BENCHMARKS_DIR / "splits"
PARENT_ROUTER = RouterSpec("sticky-random", {"switch_prob": 0.3})


@pytest.fixture(scope="module")
def parent_run(env, tmp_path_factory) -> Path:
    """One episode of the simulated pool under sticky-random exploration, written as ``harness run`` does."""
    out = tmp_path_factory.mktemp("branching") / "parent"
    config = RunConfig(router=PARENT_ROUTER, split="train", limits=LIMITS, seed=5)
    store = RunStore(out)
    store.open({"run": recorded(config)})
    router = make_router(PARENT_ROUTER.name, PARENT_ROUTER.params, POOL.cards)
    result = run_episode(BENCHMARK, env, build_backends(POOL, "simulated"), router, TASK, 5, LIMITS, store)
    store.record_episode(result.record(PARENT_ROUTER.label))
    store.close()
    assert result.turns == LIMITS.max_turns  # long enough to branch in the middle
    return out


def branched(env, parent_run: Path, out: Path, **design) -> tuple[list[EpisodeRecord], Source]:
    records = collect_branches(parent_run, out, BranchDesign(**design), cache=False, env=env)
    return records, Source.read(parent_run)


@pytest.mark.parametrize("prefix", ["log", "calls"])
def test_branches_replay_the_parent_prefix_on_the_engine(env, parent_run, tmp_path, prefix):
    records, source = branched(env, parent_run, tmp_path / "b", models=3, prefix=prefix, seed=1)
    (parent,) = source.episodes.values()
    parent_turns = source.turns(parent.episode)
    assert len(records) == 3 and len({r.branch_of["model"] for r in records}) == 3
    store = RunStore(tmp_path / "b")
    for record in records:
        provenance = record.branch_of
        t = provenance["turn"]
        assert 0 <= t < parent.turns and provenance["parent"] == parent.episode
        assert provenance["continuation"] == {"name": "random", "params": {}}
        assert record.seed == parent.seed
        turns = store.turns(record.episode)
        for mine, logged in zip(turns[:t], parent_turns[:t], strict=True):
            assert {k: getattr(mine, k) for k in RESTORED_FIELDS} == {
                k: getattr(logged, k) for k in RESTORED_FIELDS
            }
            assert mine.propensity == logged.propensity and mine.extra["replayed"] == prefix
        assert turns[t].model == provenance["model"] and "replayed" not in turns[t].extra
        assert turns[t].propensity == pytest.approx(1 / len(POOL.names))
        assert all(line.propensity == pytest.approx(1 / len(POOL.names)) for line in turns[t + 1 :])
        spent = sum(line.dollars for line in turns)
        assert record.cost == pytest.approx(spent)
        prefix_dollars = sum(line.dollars for line in turns[:t])
        assert record.billed_cost == pytest.approx(spent - (prefix_dollars if prefix == "log" else 0.0))
    # The branches are an ordinary run: training and the off-policy importer read every one of them.
    assert {s.episode for s in load_samples([tmp_path / "b"])} == {r.episode for r in records}
    episodes, _, _ = read_run_dir(tmp_path / "b")
    assert len(episodes) == 3
    logs = load_logs([parent_run, tmp_path / "b"])
    assert [run.router for run in logs.runs] == [PARENT_ROUTER, None]  # no one router logged the branches
    with pytest.raises(ConfigError, match="needs every run's router"):
        logging_episodes(logs, POOL.cards, "mixture")
    with pytest.raises(ConfigError, match="holds branches"):
        collect_branches(tmp_path / "b", tmp_path / "bb", BranchDesign(), env=env)
    # Exploration spend counts what was billed: the prefix's model calls only when they were re-made.
    spend = exploration_spend([tmp_path / "b"])
    all_turns = sum(r.turns for r in records)
    prefix_turns = 3 * records[0].branch_of["turn"]
    assert spend.model_calls == (all_turns - prefix_turns if prefix == "log" else all_turns)
    assert spend.dollars == pytest.approx(sum(r.billed_cost for r in records))
    assert spend.episodes == 3 and spend.engine_steps >= all_turns - 3  # a finish turn steps nothing
    # Rerunning resumes: nothing is played twice.
    assert (
        collect_branches(parent_run, tmp_path / "b", BranchDesign(models=3, prefix=prefix, seed=1), env=env)
        == []
    )


def test_a_prefix_the_engine_does_not_give_back_is_refused(env, parent_run, tmp_path):
    forged = tmp_path / "forged"
    shutil.copytree(parent_run, forged)
    (turn_file,) = (forged / "turns").iterdir()
    lines = [json.loads(line) for line in turn_file.read_text().splitlines()]
    lines[0]["observation"] = "a room that is not there"
    turn_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    design = BranchDesign(models=2, seed=1)
    assert branch_points([(TASK.key, LIMITS.max_turns)], POOL.names, design)[0].turn > 0  # turn 0 is replayed
    with pytest.raises(BranchDivergence, match="different 'observation'"):
        collect_branches(forged, tmp_path / "b", design, cache=False, env=env)


def test_a_prefix_turn_without_a_logged_propensity_stays_unknown(env, parent_run, tmp_path):
    """A parent that logged no propensity (an imported log) gives branches whose prefix propensities are
    unknown, not 1: importance weights over them are refused by name, and training says which turn."""
    unlogged = tmp_path / "unlogged"
    shutil.copytree(parent_run, unlogged)
    (turn_file,) = (unlogged / "turns").iterdir()
    lines = [json.loads(line) for line in turn_file.read_text().splitlines()]
    for line in lines:
        line["propensity"] = None
    turn_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    design = BranchDesign(models=2, seed=1)
    t = branch_points([(TASK.key, LIMITS.max_turns)], POOL.names, design)[0].turn
    assert t > 0  # a prefix to replay
    records = collect_branches(unlogged, tmp_path / "b", design, cache=False, env=env)
    store = RunStore(tmp_path / "b")
    for record in records:
        turns = store.turns(record.episode)
        assert [line.propensity for line in turns[:t]] == [None] * t
        assert turns[t].propensity == pytest.approx(1 / len(POOL.names))
    episodes, _, _ = read_run_dir(tmp_path / "b")
    uniform = lambda episode, turn: np.full(len(POOL.names), 1 / len(POOL.names))  # noqa: E731
    with pytest.raises(ConfigError, match=rf"need logged propensities; {2 * t} turn\(s\) have none"):
        evaluate_policy(episodes, POOL.names, uniform, ["pdis"])
    with pytest.raises(TrajectoryError, match="turn 0 has no propensity"):
        load_samples([tmp_path / "b"])


class DrawLogger(Router):
    """A continuation that logs its first draw per turn and takes a state-dependent number of draws, so a
    shared sequential stream would drift apart between siblings."""

    name = "draw-logger"

    def __init__(self, log: list[tuple[int, float]]):
        self.log = log

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        draws = rng.random(1 + len(state.history[-1].content) % 3)  # what the last observation said
        self.log.append((state.turn, float(draws[0])))
        n = len(state.candidates)
        return Decision(state.candidates[int(draws[0] * n)].name, 1.0 / n)


class SeedLogger:
    """A pool model that logs the seed, task and turn of every call it answers."""

    def __init__(self, inner, log: list[tuple[int, str, int, str]]):
        self.inner, self.log, self.card = inner, log, inner.card

    def complete(self, messages: list[Message], ctx, tools=None):
        self.log.append((ctx.turn, self.card.name, ctx.seed, ctx.task.key))
        return self.inner.complete(messages, ctx, tools)


def test_siblings_share_every_random_stream_but_the_branched_decision(env, parent_run, tmp_path):
    source = Source.read(parent_run)
    (parent,) = source.episodes.values()
    parent_turns = source.turns(parent.episode)
    t = 3
    point = BranchPoint(parent.episode, t, tuple(POOL.names))
    design = BranchDesign(prefix="calls")
    store = RunStore(tmp_path / "b")
    store.open({"run": {}})
    draws: dict[str, list[tuple[int, float]]] = {}
    calls: dict[str, list[tuple[int, str, int, str]]] = {}
    records = {}
    for model in point.models:
        draws[model], calls[model] = [], []
        backends = {n: SeedLogger(b, calls[model]) for n, b in build_backends(POOL, "simulated").items()}
        records[model] = play_branch(
            source, point, model, design, env, backends, store, continuation=DrawLogger(draws[model])
        )
    # The continuation's draws: the same at every turn any two siblings both reached.
    by_turn: dict[int, set[float]] = {}
    for log in draws.values():
        assert [turn for turn, _ in log] == list(range(t + 1, t + 1 + len(log)))
        for turn, draw in log:
            by_turn.setdefault(turn, set()).add(draw)
    assert by_turn and all(len(values) == 1 for values in by_turn.values())
    # The models' draws: every call of every sibling is seeded with the parent's episode seed and task.
    assert {(seed, key) for log in calls.values() for _, _, seed, key in log} == {(parent.seed, TASK.key)}
    # The branched decision is the one thing that differs at turn t ...
    at_t = {model: [c for c in calls[model] if c[0] == t] for model in point.models}
    assert all(log == [(t, model, parent.seed, TASK.key)] for model, log in at_t.items())
    # ... and the sibling that chose the parent's model there answered exactly as the parent did.
    same = parent_turns[t].model
    mine = store.turns(records[same].episode)
    assert mine[t].output == parent_turns[t].output
    # Every sibling's first continuation turn went to the same model (the same draw, the same rule).
    first = {store.turns(r.episode)[t + 1].model for r in records.values() if r.turns > t + 1}
    assert len(first) == 1


def test_the_design_is_checked_and_reproducible():
    with pytest.raises(ConfigError, match="models must be >= 2"):
        BranchDesign(models=1)
    with pytest.raises(ConfigError, match="prefix must be one of"):
        BranchDesign(prefix="snapshot")
    design = BranchDesign(states_per_episode=2, models=3, seed=4)
    parents = [("a/x/0", 10), ("a/x/1", 1), ("a/x/2", 0)]
    points = branch_points(parents, POOL.names, design)
    assert points == branch_points(parents, POOL.names, design)
    assert [p.parent for p in points] == ["a/x/0", "a/x/0", "a/x/1"]  # one turn only where there is one
    assert all(len(set(p.models)) == 3 and set(p.models) <= set(POOL.names) for p in points)
    assert len({p.key(m) for p in points for m in p.models}) == 9


# ---------------------------------------------------------------- the paired target, by hand


def test_paired_centres_each_group_and_leaves_the_rest_out():
    values = np.array([0.9, 0.6, 0.3, 0.5, 0.4, 0.2])
    groups = np.array(["p@1", "p@1", "p@1", None, "q@2", "q@2"], dtype=object)
    np.testing.assert_allclose(paired(values, groups), [0.3, 0.0, -0.3, np.nan, 0.1, -0.1], atol=1e-12)


def write_episode(
    store: RunStore, key: str, models: list[str], dollars: list[float], score: float, branch=None
):
    """A hand-made episode of the real run format: ``len(models)`` turns, one command each."""
    path = store.begin_episode(key)
    initial = [Message("system", "sys"), Message("user", "Task: boil water.")]
    for t, (model, spent) in enumerate(zip(models, dollars, strict=True)):
        store.record_turn(
            path,
            TurnRecord(
                episode=key,
                turn=t,
                history_len=2 + 2 * t,
                initial_messages=initial if t == 0 else None,
                task_description="boil water" if t == 0 else None,
                messages=[Message("assistant", f"Action: look {t}"), Message("user", f"obs {t}")],
                model=model,
                propensity=1 / 6,
                dollars=spent,
                action=f"look {t}",
                valid=True,
                error=None,
                score=0,
            ),
        )
    store.record_episode(
        EpisodeRecord(
            episode=key,
            benchmark="scienceworld",
            task="boil",
            variation=0,
            split="train",
            score=score,
            turns=len(models),
            status="max_turns",
            branch_of=branch,
        )
    )


def test_paired_targets_of_a_three_branch_example(tmp_path):
    """Three branches of one parent at turn 1 (outcomes 90, 60, 30; cost-to-go 0.5, 0.2, 0.8 dollars), a
    lone branch of another point, and an ordinary episode: only the three branched decisions are kept,
    with score targets +0.3, 0, -0.3 and cost targets 0, -0.3, +0.3 (cost in units of 1 dollar)."""
    a, b, c, d = POOL.names[:4]
    store = RunStore(tmp_path / "run")
    store.open({"run": {}})

    def branch(model: str, turn: int = 1, parent: str = "p") -> dict:
        return {"run": "R", "parent": parent, "turn": turn, "model": model, "group": f"{parent}@{turn}"}

    write_episode(store, "p/b-a", [d, a, d], [0.1, 0.2, 0.3], 90, branch(a))
    write_episode(store, "p/b-b", [d, b, d], [0.1, 0.1, 0.1], 60, branch(b))
    write_episode(store, "p/b-c", [d, c, d], [0.1, 0.4, 0.4], 30, branch(c))
    write_episode(store, "q/b-a", [a, a], [0.1, 0.1], 50, branch(a, 0, "q"))
    write_episode(store, "ordinary", [a, b, c], [0.1, 0.1, 0.1], 40)
    store.close()
    samples = load_samples([tmp_path / "run"])
    stats = TargetStats(score_low=0.0, score_high=100.0, mean_episode_cost=1.0, mean_episode_turns=3.0)
    data = build_training_set(
        samples, np.zeros((len(samples), 2)), POOL.cards, stats, TargetOptions(target="paired")
    )
    kept = paired_rows(data)
    chosen = [POOL.names[i] for i in kept.model_index]
    assert chosen == [a, b, c] and list(kept.turn) == [1, 1, 1]
    np.testing.assert_allclose(kept.score, [0.3, 0.0, -0.3], atol=1e-6)
    np.testing.assert_allclose(kept.cost, [0.0, -0.3, 0.3], atol=1e-6)
    # Without branches there is nothing to train on, and that is said before any fit.
    ordinary = [s for s in samples if s.branch_group is None]
    plain = build_training_set(
        ordinary, np.zeros((len(ordinary), 2)), POOL.cards, stats, TargetOptions(target="paired")
    )
    with pytest.raises(ConfigError, match="target 'paired'"):
        paired_sets(plain, None)


def test_siblings_stay_on_one_side_of_the_validation_split(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open({"run": {}})
    names = POOL.names
    for p in range(6):
        for m in names[:3]:
            group = {"run": "R", "parent": f"p{p}", "turn": 0, "model": m, "group": f"p{p}@0"}
            write_episode(store, f"p{p}/b-{m}", [m, m], [0.1, 0.1], 50, group)
    store.close()
    samples = load_samples([tmp_path / "run"])
    for seed in range(5):
        train, val = split_episodes(samples, 0.3, seed)
        assert val and not {s.branch_group for s in train} & {s.branch_group for s in val}


# ---------------------------------------------------------------- from a benchmark definition


def test_a_definition_collects_branches_beside_its_stage_a(tmp_path):
    from harness.config import load_benchmark
    from harness.pipeline import BenchmarkRun

    split = json.loads((BENCHMARK_SPLITS / "scienceworld-v1.json").read_text())
    split["version"], split["quick"]["train"] = "scienceworld-tiny", {"find-animal": [0, 1]}
    (tmp_path / "tiny.json").write_text(json.dumps(split))
    path = tmp_path / "branchy.yaml"
    path.write_text(
        "name: branchy\n"
        f"split_file: {tmp_path / 'tiny.json'}\n"
        "fixed_routers: [{name: random}]\n"
        "limits: {max_turns: 3}\n"
        "workers: 1\n"
        "collect:\n"
        "  router: {name: sticky-random, params: {switch_prob: 0.3}}\n"
        "  seeds: [0]\n"
        "  quick: true\n"
        "  branch: {continuation: {name: single, params: {model: gpt-5}}, episodes: 2, models: 2}\n"
    )
    definition = load_benchmark(str(path))
    assert definition.collect.branch == BranchDesign(
        continuation=RouterSpec("single", {"model": "gpt-5"}), episodes=2, models=2
    )
    run = BenchmarkRun(definition, tmp_path / "results")
    run.validate()
    assert [(b.episodes, b.recorded) for b in run.planned_batches() if b.stage == "collect"] == [
        (2, 0),
        (4, 0),
    ]
    sticky, branches = run.collect()
    assert [(b.episodes, b.recorded) for b in run.planned_batches() if b.stage == "collect"] == [
        (2, 2),
        (4, 4),
    ]
    records = RunStore(branches).episodes()
    assert len(records) == 4 and {r.branch_of["run"] for r in records} == {str(sticky.resolve())}
    assert all(
        line.model == "gpt-5"
        for r in records
        for line in RunStore(branches).turns(r.episode)
        if line.turn > r.branch_of["turn"]
    )
    spend = exploration_spend([sticky, branches])
    assert spend.episodes == len(RunStore(sticky).episodes()) + 4 == 6
    assert run.exploration_spend() == spend.as_dict()  # what benchmark.json records
    bad = path.read_text().replace(
        "name: single, params: {model: gpt-5}", "name: single, params: {model: gpt-9}"
    )
    path.write_text(bad)
    with pytest.raises(Exception, match="gpt-9"):
        BenchmarkRun(load_benchmark(str(path)), tmp_path / "results2").validate()


def test_the_prefix_cache_changes_nothing_recorded(env, parent_run, tmp_path):
    """Branches restored through the engine prefix cache (the default) are the ones the bare engine gives."""
    design = BranchDesign(models=3, states_per_episode=2, seed=2)
    runs = {}
    for cache in (True, False):
        out = tmp_path / f"cache-{cache}"
        records = collect_branches(parent_run, out, design, cache=cache, env=env)
        turns = {  # without the wall-clock span times
            p.name: [
                {k: v for k, v in json.loads(x).items() if k != "times"} for x in p.read_text().splitlines()
            ]
            for p in (out / "turns").iterdir()
        }
        runs[cache] = ([replace(r, duration_s=None) for r in records], turns)
    assert runs[True] == runs[False] and len(runs[True][0]) == 6
