"""A Q-router trained on real logged ScienceWorld runs routes better than random on held-out episodes.

The data is small but real: sticky-random exploration of the simulated pool over the
real engine on two train-split task types whose best models differ (find-animal is
biology, where deepseek-v3.2 is strong and gpt-oss-120b is not; power-component is
electricity, the other way round). The router is evaluated live, on the test_id
variations of the same task types, against the random router on the same seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_learned_routers import hashing_encoder

from harness.agent import run_episode
from harness.batch import Player, prepare
from harness.benchmarks import get_benchmark
from harness.config import Limits, RouterSpec, RunConfig
from routers import make_router
from routers.learned.q_router import MTRouter
from routers.learned.train import TrainOptions, train_router

TASKS = "^(find-animal|power-component)$"
LIMITS = Limits(max_turns=25, budget_dollars=2.0)


def play_logged_run(env, out: Path, seed: int, switch_prob: float, **config) -> Path:
    """One sticky-random exploration run of the train split's ``TASKS`` on the real engine, in-process."""
    run = RunConfig(
        router=RouterSpec("sticky-random", {"switch_prob": switch_prob}),
        split="train",
        task_filter=TASKS,
        seed=seed,
        **config,
    )
    batch = prepare(run, out)
    player = Player(run, batch.store.root, env)
    for task in batch.pending:
        batch.store.record_episode(player.play(task))
    return batch.store.root


@pytest.fixture(scope="module")
def logged_runs(env, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("real-stage-a")
    return [play_logged_run(env, root / f"s{seed}", seed, 0.03, limits=LIMITS) for seed in (0, 1, 2)]


def test_q_router_trained_on_real_runs_beats_random_on_held_out_episodes(env, logged_runs, tmp_path: Path):
    encoder = hashing_encoder(tmp_path / "cache")
    report = train_router(
        "mtrouter", logged_runs, tmp_path / "mt", TrainOptions(pool="paper6", lam=0.0), encoder=encoder
    )
    assert report.train_decisions > 500

    config = prepare(RunConfig(router=RouterSpec("random"), task_filter=TASKS), tmp_path / "probe").config
    player = Player(config, tmp_path / "probe", env)
    held_out = get_benchmark("scienceworld").load_split().tasks("test_id", task_filter=TASKS)
    learned = MTRouter(str(tmp_path / "mt"), lam=0.0, encoder=encoder)
    random = make_router("random", {}, list(player.backends))
    scores: dict[str, list[float]] = {"mtrouter": [], "random": []}
    for seed in (100, 101):
        for task in held_out:
            for name, router in (("mtrouter", learned), ("random", random)):
                result = run_episode(player.benchmark, env, player.backends, router, task, seed, LIMITS)
                scores[name].append(result.score)
    learned_mean, random_mean = np.mean(scores["mtrouter"]), np.mean(scores["random"])
    assert learned_mean >= random_mean + 20, (
        f"mtrouter {learned_mean:.1f} vs random {random_mean:.1f} over {len(scores['random'])} held-out episodes"
    )
