"""The agent loop on the real ScienceWorld engine with the simulated pool."""

from __future__ import annotations

import numpy as np
import pytest

from harness.agent import run_episode
from harness.backends import build_backends
from harness.batch import Worker
from harness.benchmarks import get_benchmark
from harness.config import Limits, RouterSpec, RunConfig
from harness.pool import SimulatedProfile, load_pool
from harness.trajectory import RunStore, read_lines
from harness.types import Decision, TaskInstance
from routers import make_router
from routers.base import Router

TASK = TaskInstance("scienceworld", "find-animal", 1, "test_id")


@pytest.fixture(scope="module")
def pool():
    return load_pool("paper6")


@pytest.fixture(scope="module")
def backends(pool):
    return build_backends(pool, "simulated")


SCIENCEWORLD = get_benchmark("scienceworld")
DEFAULT_LIMITS = SCIENCEWORLD.limits


def play(env, backends, pool, name, params=None, task=TASK, limits=DEFAULT_LIMITS, store=None, seed=0):
    router = make_router(name, params or {}, pool.names)
    return run_episode(SCIENCEWORLD, env, backends, router, task, seed, limits, store)


@pytest.mark.parametrize(
    "name, params",
    [("single", {"model": "gpt-5"}), ("random", {}), ("round-robin", {}), ("heuristic", {})],
)
def test_every_router_type_plays_a_real_episode(env, backends, pool, tmp_path, name, params):
    store = RunStore(tmp_path / name)
    store.open({})
    result = play(env, backends, pool, name, params, store=store)
    turns = store.turns(TASK.key)
    assert result.status in {"done", "submitted", "max_turns", "budget"}
    assert len(turns) == result.turns >= 1
    assert [t.turn for t in turns] == list(range(result.turns))
    assert turns[0].initial_messages[0].role == "system"
    # The ledger is the only source of totals: the turn lines add up to the episode's cost.
    assert sum(c["dollars"] for t in turns for c in t.charges) == pytest.approx(result.ledger.total)
    assert result.score == turns[-1].score
    for t in turns:
        card = pool.model(t.model).price
        assert t.dollars == pytest.approx(card.dollars(t.prompt_tokens, t.completion_tokens))
        assert t.history_len == 2 + 2 * t.turn
    if name == "single":
        assert {t.model for t in turns} == {"gpt-5"} and result.switches == 0
    if name == "random":
        assert all(t.propensity == pytest.approx(1 / 6) for t in turns)
    if name == "round-robin":
        assert [t.model for t in turns] == [pool.names[i % 6] for i in range(result.turns)]
    if name == "heuristic":
        assert turns[0].model == "gpt-5"
        for before, after in zip(turns, turns[1:], strict=False):
            if not before.valid:
                assert after.model == "gpt-5"


def test_same_seed_same_episode_other_seed_differs(env, backends, pool, tmp_path):
    def actions(seed, where):
        store = RunStore(tmp_path / where)
        store.open({})
        play(env, backends, pool, "random", store=store, seed=seed)
        return [(t.model, t.action, t.observation, t.score, t.prompt_tokens) for t in store.turns(TASK.key)]

    assert actions(3, "a") == actions(3, "b")
    assert actions(3, "a") != actions(4, "c")


def test_prompt_tokens_grow_with_the_history(env, backends, pool, tmp_path):
    store = RunStore(tmp_path / "run")
    store.open({})
    play(env, backends, pool, "single", {"model": "kimi-k2-0905"}, store=store)
    prompts = [t.prompt_tokens for t in store.turns(TASK.key)]
    assert all(b > a for a, b in zip(prompts, prompts[1:], strict=False))


def test_turn_and_budget_limits(env, backends, pool):
    capped = play(
        env,
        backends,
        pool,
        "single",
        {"model": "gemini-2.5-flash-lite"},
        limits=Limits(max_turns=2, budget_dollars=2.0),
    )
    assert capped.turns <= 2
    broke = play(
        env, backends, pool, "single", {"model": "gpt-5"}, limits=Limits(max_turns=50, budget_dollars=1e-6)
    )
    assert broke.status == "budget" and broke.turns == 1


def test_format_errors_and_invalid_actions_count_as_turns(env, pool, tmp_path):
    from harness.backends.simulated import SimulatedBackend

    clumsy = {
        "malformed": SimulatedBackend(
            pool.model("gpt-5").card, SimulatedProfile(skill={"default": 0.0}, error_mix={"malformed": 1.0})
        ),
        "invalid": SimulatedBackend(
            pool.model("gpt-5").card, SimulatedProfile(skill={"default": 0.0}, error_mix={"invalid": 1.0})
        ),
    }
    for kind, backend in clumsy.items():
        store = RunStore(tmp_path / kind)
        store.open({})
        router = make_router("single", {"model": "gpt-5"}, pool.names)
        result = run_episode(
            SCIENCEWORLD,
            env,
            {"gpt-5": backend},
            router,
            TASK,
            0,
            Limits(max_turns=4, budget_dollars=2.0),
            store,
        )
        turns = store.turns(TASK.key)
        assert result.turns == 4 and result.status == "max_turns"
        assert all(not t.valid for t in turns)
        assert {t.error for t in turns} == {"format" if kind == "malformed" else "invalid_action"}


def test_a_task_type_give_up_rate_ends_only_that_task_types_episodes(env, pool):
    """task_premature_finish replaces premature_finish on its task types: certain give-up there, none elsewhere."""
    from harness.backends.simulated import SimulatedBackend

    profile = SimulatedProfile(skill={"default": 1.0}, task_premature_finish={TASK.task: 1.0})
    quitter = {"gpt-5": SimulatedBackend(pool.model("gpt-5").card, profile)}
    router = make_router("single", {"model": "gpt-5"}, pool.names)
    other = TaskInstance("scienceworld", "boil", 1, "test_id")
    gave_up = run_episode(
        SCIENCEWORLD, env, quitter, router, TASK, 0, Limits(max_turns=6, budget_dollars=2.0), None
    )
    kept_on = run_episode(
        SCIENCEWORLD, env, quitter, router, other, 0, Limits(max_turns=6, budget_dollars=2.0), None
    )
    assert gave_up.turns == 1 and gave_up.status == "submitted"
    assert kept_on.turns == 6 and kept_on.status == "max_turns"
    with pytest.raises(Exception, match="task_premature_finish"):
        SimulatedProfile(skill={"default": 1.0}, task_premature_finish={"boil": 1.5})


class KillJvmOnce(Router):
    """Kills the environment's JVM at turn 2 of the first attempt: a real mid-episode crash."""

    name = "kill-jvm"
    env = None
    kills_left = 1

    def route(self, state, rng: np.random.Generator) -> Decision:
        if state.turn == 2 and KillJvmOnce.kills_left > 0:
            KillJvmOnce.kills_left -= 1
            import os
            import signal

            os.kill(KillJvmOnce.env.jvm_pid, signal.SIGKILL)
            KillJvmOnce.env._jvm.process.wait()
        return Decision(model="gpt-oss-120b", propensity=1.0)


@pytest.mark.parametrize("kills, status", [(1, "done"), (2, "failed")])
def test_crashed_jvm_is_restarted_and_retried_once(tmp_path, kills, status):
    config = RunConfig(router=RouterSpec("single", {"model": "gpt-oss-120b"}), seed=0)
    worker = Worker()
    store = RunStore(tmp_path)
    store.open({})
    player = worker.player(config, tmp_path)
    player.router = KillJvmOnce()
    KillJvmOnce.env = player.env
    KillJvmOnce.kills_left = kills
    try:
        record = store.with_earlier_attempts(
            player.play(TaskInstance("scienceworld", "power-component", 0, "test_id"))
        )
    finally:
        worker.close()
    if status == "failed":
        assert record.status == "failed" and "JVM" in record.error
    else:
        assert record.attempts == 2 and record.status != "failed"
        (aside,) = store.interrupted_files(record.episode)
        on_lines = sum(c["dollars"] for t in read_lines(aside) for c in t["charges"])
        cut_short = sum(c["dollars"] for c in record.unrecorded_charges if c["abandoned"])
        assert on_lines > 0 and cut_short > 0  # the crash came at turn 2, after that turn's model call
        assert record.abandoned_cost == pytest.approx(on_lines + cut_short)


def test_sticky_random_logs_exact_propensities(env, backends, pool, tmp_path):
    store = RunStore(tmp_path / "sticky")
    store.open({})
    play(env, backends, pool, "sticky-random", {"switch_prob": 0.2}, store=store)
    turns = store.turns(TASK.key)
    assert turns[0].propensity == pytest.approx(1 / 6)
    for before, after in zip(turns, turns[1:], strict=False):
        kept = after.model == before.model
        assert after.propensity == pytest.approx(0.8 + 0.2 / 6 if kept else 0.2 / 6)
    assert sum(a.model != b.model for a, b in zip(turns, turns[1:], strict=False)) < len(turns) / 2
