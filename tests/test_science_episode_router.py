"""Episode-level routers: trained through `harness train`'s contract, one choice at turn 0 kept to the end."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.errors import ConfigError
from harness.types import ModelCard, PriceCard, TurnState
from routers import router_class, trainable
from routers.episode_level import EpisodeKNNModel, EpisodeTaskModel
from routers.learned.dataset import TargetOptions, TargetStats, TrainingSet, load_samples
from routers.learned.embedding import CachedEmbedder, l2_normalise
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.train import train_router

CARDS = [
    ModelCard("cheap", PriceCard(0.1, 0.4, "test"), knowledge_cutoff="2024-01"),
    ModelCard("mid", PriceCard(1.0, 4.0, "test"), knowledge_cutoff="2024-06"),
    ModelCard("strong", PriceCard(5.0, 20.0, "test"), knowledge_cutoff="2025-01", reasoning=True),
]
HELPER = {"boil": "cheap", "grow-plant": "mid", "measure-melting": "strong"}
KINDS = ("episode-knn", "episode-task", "episode-classifier")


class HashingEmbedder:
    name = "test:hashing-bag-of-words-64"
    dim = 64

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        return l2_normalise(out)


def state_of(sample, task: str | None = None, variation: int = 0) -> TurnState:
    return TurnState(
        benchmark=sample.benchmark,
        task=task or sample.task,
        variation=variation,
        task_description=sample.task_description,
        history=sample.history,
        turn=sample.turn,
        dollars_spent=0.0,
        budget_dollars=2.0,
        max_turns=50,
        candidates=list(CARDS),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("episode")
    encoder = HistoryEncoder(CachedEmbedder(HashingEmbedder(), work / "cache"), mode="incremental")
    # Sticky exploration: the opening model answers (almost) every turn, so the episode's score is its outcome.
    stage_a = write_synthetic_run(
        work / "stage-a", CARDS, HELPER, episodes_per_task=40, seed=0, switch_prob=0.05
    )
    held_out = load_samples(
        [write_synthetic_run(work / "held-out", CARDS, HELPER, episodes_per_task=8, seed=1)]
    )
    checkpoints = {}
    for kind in KINDS:
        checkpoints[kind] = work / kind
        train_router(kind, [stage_a], checkpoints[kind], pool=CARDS, lam=0.0, encoder=encoder, seed=0)
    return checkpoints, encoder, held_out


def test_registered_as_trainable_families():
    assert set(KINDS) <= set(trainable())


@pytest.mark.parametrize("kind", KINDS)
def test_turn_zero_choice_reads_the_task(kind, trained):
    checkpoints, encoder, held_out = trained
    router = router_class(kind)(str(checkpoints[kind]), lam=0.0, encoder=encoder)
    firsts = [s for s in held_out if s.turn == 0]
    right = [router.route(state_of(s), np.random.default_rng(0)).model == HELPER[s.task] for s in firsts]
    assert np.mean(right) >= 0.7, f"{kind}: helpful model at turn 0 in {np.mean(right):.0%} (random 33%)"


@pytest.mark.parametrize("kind", KINDS)
def test_keeps_its_model_for_the_whole_episode(kind, trained):
    checkpoints, encoder, held_out = trained
    router = router_class(kind)(str(checkpoints[kind]), lam=0.0, encoder=encoder)
    boil = next(s for s in held_out if s.turn == 0 and s.task == "boil")
    first = router.route(state_of(boil), np.random.default_rng(0)).model
    # Later turns of the same episode whose histories a per-turn router would route elsewhere.
    later = [s for s in held_out if s.turn > 0 and s.task == "measure-melting"][:10]
    per_turn = {router.greedy(state_of(s))[0] for s in later}
    assert per_turn - {first}, "the later states must tempt a per-turn router away from the first choice"
    kept = {router.route(state_of(s, task="boil"), np.random.default_rng(0)).model for s in later}
    assert kept == {first}
    # A new episode decides afresh at its turn 0.
    melt = next(s for s in held_out if s.turn == 0 and s.task == "measure-melting")
    assert router.route(state_of(melt), np.random.default_rng(0)).model == router.greedy(state_of(melt))[0]


def test_lambda_makes_the_choice_cheaper(trained):
    checkpoints, encoder, held_out = trained
    firsts = [s for s in held_out if s.turn == 0]
    price = {c.name: c.price.output_per_mtok for c in CARDS}
    spend = {}
    for lam in (0.0, 50.0):
        router = router_class("episode-knn")(str(checkpoints["episode-knn"]), lam=lam, encoder=encoder)
        spend[lam] = np.mean(
            [price[router.route(state_of(s), np.random.default_rng(0)).model] for s in firsts]
        )
    assert spend[50.0] < spend[0.0]


def decisions(vectors, turns, scores, tasks=None, models=None, costs=None) -> TrainingSet:
    """Logged decisions in a 2-d vector space; by default all of one model, costs all 1."""
    n = len(scores)
    return TrainingSet(
        embeddings=np.asarray(vectors, dtype=np.float32),
        model_index=np.zeros(n, dtype=np.int64) if models is None else np.asarray(models, dtype=np.int64),
        score=np.asarray(scores, dtype=np.float32),
        cost=np.ones(n, dtype=np.float32) if costs is None else np.asarray(costs, dtype=np.float32),
        weight=np.ones(n, dtype=np.float32),
        cards=CARDS[:1] if models is None else CARDS[: max(models) + 1],
        stats=TargetStats(score_low=0.0, score_high=1.0, mean_episode_cost=1.0, mean_episode_turns=10.0),
        options=TargetOptions(),
        turn=np.asarray(turns, dtype=np.int64),
        task=None if tasks is None else np.asarray(tasks, dtype=object),
    )


def test_knn_neighbours_are_episodes_not_decisions():
    # Episode A (score 1) logged ten decisions along x; episode B (score 0) opened along x too.
    train = decisions([[1, 0]] * 10 + [[1, 0.1]], list(range(10)) + [0], [1.0] * 10 + [0.0])
    model = EpisodeKNNModel(k=2, prior_strength=0.0).fit(train)
    score, cost = model.predict(np.array([[1.0, 0.0]]), CARDS[:1])
    # The two nearest episodes: (1 + 0) / 2. Counted in decisions it would have been A's ten rows: 1.0.
    assert score[0, 0] == pytest.approx(0.5)
    assert cost[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize(("val_score", "expected_k"), [(1.0, 5), (0.1, 50)])
def test_knn_chooses_k_by_validation_error(val_score, expected_k):
    # 5 of 50 episodes open along x and scored 1, the other 45 along y and scored 0; the model's mean is 0.1.
    # A query along x: k=5 predicts (5 + 2 * 0.1) / 7 = 0.743, k=50 predicts (5 + 0.2) / 52 = 0.1.
    train = decisions([[1, 0]] * 5 + [[0, 1]] * 45, [0] * 50, [1.0] * 5 + [0.0] * 45)
    val = decisions([[1, 0]] * 4, [0] * 4, [val_score] * 4)
    model = EpisodeKNNModel().fit(train, val)
    assert model.chosen_k == expected_k
    expected = {5: 5.2 / 7, 50: 0.1}[expected_k]
    assert model.predict(np.array([[1.0, 0.0]]), CARDS[:1])[0][0, 0] == pytest.approx(expected, rel=1e-5)
    assert EpisodeKNNModel().fit(train).chosen_k == 25, "without val episodes k stays at its default"


def two_task_logs() -> TrainingSet:
    """Task "x" opens along x, task "y" along y. Model 0 ("cheap") scored 1, 1, 0 on x and 0 on y at cost 1;
    model 1 ("mid") scored 0 on x and 1, 1 on y at cost 3. Later turns (turn 1) must not count; with no prior
    weight, a task a model never opened falls back to that model's mean."""
    return decisions(
        vectors=[[1, 0], [1, 0.1], [1, -0.1], [1, 0], [0, 1], [0.1, 1], [0, 1], [1, 0]],
        turns=[0, 0, 0, 0, 0, 0, 0, 1],
        scores=[1, 1, 0, 0, 0, 1, 1, 0],
        tasks=["x", "x", "x", "x", "y", "y", "y", "x"],
        models=[0, 0, 0, 1, 0, 1, 1, 1],
        costs=[1, 1, 1, 3, 1, 3, 3, 3],
    )


def test_task_table_pools_a_tasks_episodes_by_hand():
    model = EpisodeTaskModel(prior_strength=1.0).fit(two_task_logs())
    assert model.tasks == ["x", "y"]
    # Model means over episodes (turn 0 only): cheap (1 + 1 + 0 + 0) / 4 = 0.5, cost 1; mid (0 + 1 + 1) / 3, cost 3.
    score, cost = model.predict(np.array([[1.0, 0.05], [0.02, 1.0]]), CARDS[:2])
    # Task x: cheap (2 + 1 * 0.5) / (3 + 1) = 0.625; mid (0 + 2 / 3) / (1 + 1) = 1 / 3.
    # Task y: cheap (0 + 0.5) / (1 + 1) = 0.25; mid (2 + 2 / 3) / (2 + 1) = 8 / 9.
    assert score == pytest.approx(np.array([[0.625, 1 / 3], [0.25, 8 / 9]]), rel=1e-6)
    assert cost == pytest.approx(np.array([[1.0, 3.0], [1.0, 3.0]]), rel=1e-6)


def test_task_table_borrows_the_nearest_tasks_row_for_an_unseen_task():
    model = EpisodeTaskModel(prior_strength=0.0).fit(two_task_logs())
    # A query between the two but nearer y's mean opening vector reads y's row: cheap 0, mid 1.
    score, _ = model.predict(np.array([[0.6, 0.8]]), CARDS[:2])
    assert model.nearest_task(np.array([[0.6, 0.8], [0.8, 0.6]])).tolist() == [1, 0]
    assert score[0].tolist() == pytest.approx([0.0, 1.0])
    lone = decisions([[1, 0], [0, 1]], [0, 0], [1.0, 0.0], tasks=["x", "y"], models=[0, 1])
    score, _ = EpisodeTaskModel(prior_strength=0.0).fit(lone).predict(np.array([[1.0, 0.0]]), CARDS[:2])
    assert score[0].tolist() == pytest.approx([1.0, 0.0]), "mid never opened x: its own mean, 0"


@pytest.mark.parametrize(("val_score", "expected_prior"), [(1.0, 0.5), (0.5, 32.0)])
def test_task_table_chooses_its_prior_weight_by_validation_error(val_score, expected_prior):
    # On task x cheap's own mean is 2 / 3 and its overall mean 0.5: val episodes of cheap on x scoring 1 favour
    # the smallest prior weight, scoring 0.5 (its overall mean) the largest.
    val = decisions([[1, 0]] * 3, [0] * 3, [val_score] * 3, tasks=["x"] * 3, models=[0, 0, 0])
    model = EpisodeTaskModel().fit(two_task_logs(), val)
    assert model.chosen_prior == expected_prior
    assert EpisodeTaskModel().fit(two_task_logs()).chosen_prior == 2.0, "without val it keeps its default"


def test_task_table_refuses_logs_without_tasks_and_a_negative_prior():
    logs = two_task_logs()
    logs.task = None
    with pytest.raises(ConfigError, match="task"):
        EpisodeTaskModel().fit(logs)
    with pytest.raises(ConfigError, match="prior_strength"):
        EpisodeTaskModel(prior_strength=-1.0)
