"""Learned routers: targets worked out by hand, checkpoints, pool checks, and that learning happens.

Run directories are written with the real RunStore. Most tests use a small
hashing bag-of-words embedder (the task text is what carries the signal, and
any embedder that keeps words apart sees it); one test trains and routes with
the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from harness.benchmarks.scienceworld.prompt import FORMAT_ERROR, ScienceWorldFormat, observation_message
from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.errors import ConfigError, TrajectoryError
from harness.records import EpisodeRecord, TurnRecord
from harness.trajectory import RunStore
from harness.types import Message, ModelCard, PriceCard, TurnState
from routers import make_router, router_class
from routers.base import Router
from routers.learned.beta_mix import BetaMixRouter
from routers.learned.classic import ClusterModel, RidgeModel
from routers.learned.dataset import (
    DecisionSample,
    TargetOptions,
    TargetStats,
    annealed_error_weight,
    build_training_set,
    encode_histories,
    ipw_weights,
    load_samples,
    split_episodes,
)
from routers.learned.embedding import CachedEmbedder, l2_normalise
from routers.learned.encoder_spec import encoder_config
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.lgbm_router import LightGBMModel
from routers.learned.q_router import MTRouter, MTRouterModel
from routers.learned.train import REPORT_FILE, TrainOptions, train_router
from routers.learned.value_model import load_value_model

CARDS = [
    ModelCard("cheap", PriceCard(0.1, 0.4, "test"), knowledge_cutoff="2024-01"),
    ModelCard("mid", PriceCard(1.0, 4.0, "test"), knowledge_cutoff="2024-06"),
    ModelCard("strong", PriceCard(5.0, 20.0, "test"), knowledge_cutoff="2025-01", reasoning=True),
]
HELPER = {"boil": "cheap", "grow-plant": "mid", "measure-melting": "strong"}
KINDS = ("mtrouter", "lgbm", "ridge", "cluster")


def initial_messages(description: str, observation: str) -> list[Message]:
    return ScienceWorldFormat().initial_messages(description, observation)


MODEL_CLASSES = {
    "mtrouter": MTRouterModel,
    "lgbm": LightGBMModel,
    "ridge": RidgeModel,
    "cluster": ClusterModel,
}


class HashingEmbedder:
    """Signed hashing of lower-cased words into 64 dimensions: deterministic, instant, keeps words apart."""

    name = "test:hashing-bag-of-words-64"
    dim = 64

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        return l2_normalise(out)


def hashing_encoder(cache: Path) -> HistoryEncoder:
    return HistoryEncoder(CachedEmbedder(HashingEmbedder(), cache), mode="incremental")


def state_of(sample: DecisionSample, candidates: list[ModelCard] = CARDS) -> TurnState:
    return TurnState(
        benchmark=sample.benchmark,
        task=sample.task,
        variation=0,
        task_description=sample.task_description,
        history=sample.history,
        turn=sample.turn,
        dollars_spent=0.0,
        budget_dollars=2.0,
        max_turns=50,
        candidates=list(candidates),
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("learned")


@pytest.fixture(scope="module")
def stage_a(workdir: Path) -> Path:
    return write_synthetic_run(workdir / "stage-a", CARDS, HELPER, episodes_per_task=40, seed=0)


@pytest.fixture(scope="module")
def held_out(workdir: Path) -> list[DecisionSample]:
    """Episodes of a different seed: new model draws, new noise; never seen in training."""
    return load_samples(
        [write_synthetic_run(workdir / "held-out", CARDS, HELPER, episodes_per_task=8, seed=1)]
    )


@pytest.fixture(scope="module")
def encoder(workdir: Path) -> HistoryEncoder:
    return hashing_encoder(workdir / "cache")


@pytest.fixture(scope="module")
def checkpoints(workdir: Path, stage_a: Path, encoder: HistoryEncoder) -> dict[str, Path]:
    out = {}
    for kind in KINDS:
        out[kind] = workdir / f"ckpt-{kind}"
        train_router(kind, [stage_a], out[kind], TrainOptions(lam=0.0, seed=0), pool=CARDS, encoder=encoder)
    return out


# ---------------------------------------------------------------- targets by hand


def charge(kind: str, model: str, dollars: float) -> dict:
    return {
        "kind": kind,
        "model": model,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "dollars": dollars,
        "price_version": "t",
    }


def turn_record(
    key: str,
    turn: int,
    model: str,
    propensity: float,
    dollars: float,
    router: float,
    observation: str,
    first=None,
) -> TurnRecord:
    charges = [charge("model", model, dollars)] + ([charge("router", "embedder", router)] if router else [])
    output = f"Thought: turn {turn}.\nAction: look around"
    appended = [Message("assistant", output), observation_message(observation, 10.0 * turn)]
    return TurnRecord(
        episode=key,
        turn=turn,
        history_len=2 + 2 * turn,
        initial_messages=list(first) if turn == 0 else None,
        task_description=first[1].content.split("\n\n")[0].removeprefix("Task: ") if turn == 0 else None,
        messages=appended,
        model=model,
        propensity=propensity,
        dollars=dollars,
        charges=charges,
        output=output,
        action="look around",
        observation=observation,
        valid=True,
        score=10.0 * turn,
    )


def episode_record(key: str, task: str, score: float | None, turns: int, status: str) -> EpisodeRecord:
    return EpisodeRecord(key, "scienceworld", task, 0, score=score, turns=turns, status=status)


@pytest.fixture
def hand_run(tmp_path: Path) -> Path:
    """Two finished episodes, one failed one and one interrupted one; numbers chosen for hand arithmetic."""
    store = RunStore(tmp_path / "run")
    store.open({"run": {"pool": "hand"}})
    first = initial_messages("Boil the water.", "You are in the kitchen.")
    a = "scienceworld/boil/0"
    path = store.begin_episode(a)
    # turn dollars: 0.010 + 0.002 router = 0.012; 0.020; 0.030 + 0.001 router = 0.031
    store.record_turn(path, turn_record(a, 0, "cheap", 0.5, 0.010, 0.002, "You go to the stove.", first))
    store.record_turn(path, turn_record(a, 1, "mid", 0.25, 0.020, 0.0, "No known action matches that input."))
    store.record_turn(path, turn_record(a, 2, "cheap", 0.5, 0.030, 0.001, FORMAT_ERROR))
    store.record_episode(episode_record(a, "boil", 40.0, 3, "done"))
    b = "scienceworld/melt/0"
    path = store.begin_episode(b)
    store.record_turn(
        path,
        turn_record(b, 0, "mid", 1.0, 0.017, 0.0, "Nothing happens.", initial_messages("Melt ice.", "Hi.")),
    )
    store.record_episode(episode_record(b, "melt", -100.0, 1, "max_turns"))
    failed = "scienceworld/boil/1"
    path = store.begin_episode(failed)
    store.record_turn(path, turn_record(failed, 0, "mid", 0.5, 0.5, 0.0, "x", first))
    store.record_episode(episode_record(failed, "boil", None, 0, "failed"))
    interrupted = "scienceworld/boil/2"  # a turn file without an episode line: not finished
    store.record_turn(
        store.begin_episode(interrupted), turn_record(interrupted, 0, "mid", 0.5, 9.0, 0.0, "x", first)
    )
    return store.root


def test_samples_rebuild_histories_and_cost_to_go_by_hand(hand_run: Path):
    samples = load_samples([hand_run])
    assert [(s.episode, s.turn) for s in samples] == [
        ("scienceworld/boil/0", 0),
        ("scienceworld/boil/0", 1),
        ("scienceworld/boil/0", 2),
        ("scienceworld/melt/0", 0),
    ]
    # cost-to-go sums turn dollars (model + router charges) from the turn on: 0.063, 0.051, 0.031; 0.017
    assert [s.cost_to_go for s in samples] == pytest.approx([0.063, 0.051, 0.031, 0.017])
    assert [s.episode_cost for s in samples] == pytest.approx([0.063, 0.063, 0.063, 0.017])
    assert samples[0].task_description == "Boil the water."
    assert samples[3].task_description == "Melt ice."
    assert samples[2].history == [
        *initial_messages("Boil the water.", "You are in the kitchen."),
        Message("assistant", "Thought: turn 0.\nAction: look around"),
        observation_message("You go to the stove.", 0.0),
        Message("assistant", "Thought: turn 1.\nAction: look around"),
        observation_message("No known action matches that input.", 10.0),
    ]
    assert samples[0].error_turns == (1, 2)  # the engine's rejection and the format error


def test_normalised_targets_weights_and_annealed_error_cost_by_hand(hand_run: Path):
    samples = load_samples([hand_run])
    stats = TargetStats.fit(samples)
    # two episodes: mean cost (0.063 + 0.017) / 2 = 0.040, mean length (3 + 1) / 2 = 2
    assert stats == TargetStats(
        score_low=-100.0, score_high=100.0, mean_episode_cost=pytest.approx(0.040), mean_episode_turns=2.0
    )
    data = build_training_set(
        samples, np.zeros((4, 8)), CARDS, stats, TargetOptions(error_weight=0.1, score_target="final")
    )
    # (40 + 100) / 200 = 0.7; (-100 + 100) / 200 = 0
    assert data.score.tolist() == pytest.approx([0.7, 0.7, 0.7, 0.0])
    # gain target: turn scores are 0, 10, 20 so the scores shown before turns 0, 1, 2 are 0, 0, 10:
    # (40 - 0) / 200 = 0.2, 0.2, (40 - 10) / 200 = 0.15; episode b: (-100 - 0) / 200 = -0.5
    gain = build_training_set(samples, np.zeros((4, 8)), CARDS, stats, TargetOptions(score_target="gain"))
    assert gain.score.tolist() == pytest.approx([0.2, 0.2, 0.15, -0.5])
    # error turns 1 and 2 with expected length 2: turn 1 is at 50% -> 0.3 + 0.7 * (0.2 / 0.4) = 0.65; turn 2 at 100% -> 1.0
    # cost = ctg / 0.040 + 0.1 * (errors from this turn on): 1.575 + 0.165, 1.275 + 0.165, 0.775 + 0.1, 0.425
    assert data.cost.tolist() == pytest.approx([1.74, 1.44, 0.875, 0.425])
    # 1/p = 2, 4, 2, 1 with mean 2.25
    assert data.weight.tolist() == pytest.approx([2 / 2.25, 4 / 2.25, 2 / 2.25, 1 / 2.25])
    assert data.model_index.tolist() == [0, 1, 0, 1]
    without = build_training_set(samples, np.zeros((4, 8)), CARDS, stats)
    assert without.cost.tolist() == pytest.approx([1.575, 1.275, 0.775, 0.425])


def test_annealed_error_weight_and_clipped_ipw_by_hand():
    # expected length 10: flat 0.3 up to turn 3, linear to 1.0 at turn 7, flat after
    weights = [annealed_error_weight(t, 10) for t in (0, 3, 4, 5, 7, 9, 20)]
    assert weights == pytest.approx([0.3, 0.3, 0.475, 0.65, 1.0, 1.0, 1.0])
    # 1/p = 2, 4, 100 -> clipped at 50: 2, 4, 50, mean 56/3
    assert ipw_weights(np.array([0.5, 0.25, 0.01]), clip=50).tolist() == pytest.approx(
        [6 / 56, 12 / 56, 150 / 56]
    )
    with pytest.raises(ValueError):
        ipw_weights(np.array([0.5, 0.0]))


def test_turn_file_that_disagrees_with_its_episode_is_an_error(tmp_path: Path):
    store = RunStore(tmp_path / "run")
    store.open({"run": {"pool": "hand"}})
    key = "scienceworld/boil/0"
    path = store.begin_episode(key)
    store.record_turn(
        path, turn_record(key, 0, "cheap", 0.5, 0.01, 0.0, "ok", initial_messages("Boil.", "Hi."))
    )
    store.record_episode(episode_record(key, "boil", 10.0, 2, "done"))
    with pytest.raises(TrajectoryError, match="scienceworld/boil/0.*2 turns"):
        load_samples([store.root])


def test_split_is_by_episode_and_seeded(stage_a: Path):
    samples = load_samples([stage_a])
    train, val = split_episodes(samples, 0.25, seed=3)
    assert {s.episode for s in train}.isdisjoint({s.episode for s in val})
    assert len({s.episode for s in val}) == 30  # ceil(0.25 * 120)
    again, _ = split_episodes(samples, 0.25, seed=3)
    other, _ = split_episodes(samples, 0.25, seed=4)
    assert [s.episode for s in again] == [s.episode for s in train]
    assert {s.episode for s in other} != {s.episode for s in train}


def test_split_seed_fixes_the_validation_split_while_the_model_seed_varies(
    stage_a: Path, encoder: HistoryEncoder, tmp_path: Path
):
    def report(**seeds):
        return train_router(
            "ridge", [stage_a], tmp_path / str(seeds), TrainOptions(**seeds), pool=CARDS, encoder=encoder
        )

    reference = report(seed=0)
    same_split = report(seed=5, split_seed=0)
    other_split = report(seed=5)
    assert same_split.baseline_mse_score == reference.baseline_mse_score  # the same held-out decisions
    assert same_split.val_mse_score == reference.val_mse_score  # ridge has no other randomness
    assert other_split.baseline_mse_score != reference.baseline_mse_score


@pytest.mark.parametrize("kind", KINDS)
def test_fitting_zero_decisions_is_an_error_naming_the_router(
    kind: str, stage_a: Path, encoder: HistoryEncoder
):
    samples = load_samples([stage_a])[:1]
    data = build_training_set(
        samples, encode_histories(samples, encoder), CARDS, TargetStats.fit(samples), encoder=None
    )
    empty = dataclasses.replace(
        data,
        embeddings=data.embeddings[:0],
        model_index=data.model_index[:0],
        score=data.score[:0],
        cost=data.cost[:0],
        weight=data.weight[:0],
    )
    with pytest.raises(ConfigError, match=f"cannot fit a {kind} router on zero decisions"):
        MODEL_CLASSES[kind]().fit(empty)


# ---------------------------------------------------------------- checkpoints and pools


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_predictions(
    kind: str, stage_a: Path, encoder: HistoryEncoder, tmp_path: Path
):
    samples = load_samples([stage_a])[:300]
    embeddings = encode_histories(samples, encoder)
    stats = TargetStats.fit(samples)
    data = build_training_set(samples, embeddings, CARDS, stats, encoder=encoder_config(encoder))
    quick = {"max_epochs": 5} if kind == "mtrouter" else {}  # without validation it would run all its epochs
    model = MODEL_CLASSES[kind](seed=0, **quick).fit(data)
    model.save(tmp_path / kind)
    loaded = load_value_model(tmp_path / kind, pool_cards=CARDS)
    assert type(loaded) is type(model) and loaded.stats == stats and loaded.encoder == encoder_config(encoder)
    for fitted, restored in zip(
        model.predict(embeddings, CARDS), loaded.predict(embeddings, CARDS), strict=True
    ):
        assert fitted.shape == (300, 3)
        assert np.array_equal(fitted, restored)


def test_loading_against_a_different_pool_names_the_model(
    checkpoints: dict[str, Path], encoder: HistoryEncoder
):
    dearer = [CARDS[0], ModelCard("mid", PriceCard(2.0, 4.0, "test"), knowledge_cutoff="2024-06"), CARDS[2]]
    with pytest.raises(ConfigError, match="model 'mid' has a different price card") as err:
        load_value_model(checkpoints["mtrouter"], pool_cards=dearer)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="model 'strong' of the ridge checkpoint's pool is missing"):
        load_value_model(checkpoints["ridge"], pool_cards=CARDS[:2])
    newcomer = ModelCard("newcomer", PriceCard(0.5, 2.0, "test"), knowledge_cutoff="2025-03")
    with pytest.raises(ConfigError, match="model 'newcomer' is not in .*allow_new_models=True"):
        load_value_model(checkpoints["mtrouter"], pool_cards=[*CARDS, newcomer])
    with pytest.raises(ConfigError, match="model 'newcomer' .*cannot score unseen models"):
        load_value_model(checkpoints["cluster"], pool_cards=[*CARDS, newcomer], allow_new_models=True)
    with pytest.raises(ConfigError, match="model 'newcomer'"):
        params = {"checkpoint": str(checkpoints["ridge"]), "encoder": encoder}
        make_router("ridge", params, ["cheap", "mid", "strong", "newcomer"])


@pytest.mark.parametrize("kind", ["mtrouter", "lgbm"])
def test_new_model_gets_finite_scores_from_its_metadata(
    kind: str, checkpoints: dict[str, Path], encoder: HistoryEncoder, held_out: list[DecisionSample]
):
    newcomer = ModelCard("newcomer", PriceCard(0.5, 2.0, "test"), knowledge_cutoff="2025-03", reasoning=True)
    pool = [*CARDS, newcomer]
    router = router_class(kind)(str(checkpoints[kind]), lam=0.5, allow_new_models=True, encoder=encoder)
    router.check_pool([c.name for c in pool])
    decision = router.route(state_of(held_out[0], pool), np.random.default_rng(0))
    assert decision.model in {c.name for c in pool} and decision.propensity == 1.0
    assert set(decision.scores) == {c.name for c in pool} and all(np.isfinite(list(decision.scores.values())))
    if kind == "mtrouter":
        # the newcomer has no residual: its vector is the metadata MLP's alone
        model = router.model
        assert model.model_positions(pool)[-1] is None


def test_router_refuses_an_encoder_of_another_vector_space(checkpoints: dict[str, Path], tmp_path: Path):
    class Other(HashingEmbedder):
        name = "test:other"

    other = HistoryEncoder(CachedEmbedder(Other(), tmp_path), mode="incremental")
    with pytest.raises(ConfigError, match="embedder is 'test:other'"):
        MTRouter(str(checkpoints["mtrouter"]), encoder=other)
    with pytest.raises(ConfigError, match="cannot be rebuilt"):
        MTRouter(str(checkpoints["mtrouter"]))


# ---------------------------------------------------------------- learning


def best_model_share(router: Router, held_out: list[DecisionSample]) -> float:
    rng = np.random.default_rng(0)
    chosen = [router.route(state_of(s), rng).model for s in held_out]
    return float(np.mean([model == HELPER[s.task] for model, s in zip(chosen, held_out, strict=True)]))


@pytest.mark.parametrize("kind", KINDS)
def test_trained_router_picks_the_helpful_model_on_held_out_episodes(
    kind: str, checkpoints: dict[str, Path], encoder: HistoryEncoder, held_out: list[DecisionSample]
):
    router = router_class(kind)(str(checkpoints[kind]), lam=0.0, encoder=encoder)
    share = best_model_share(router, held_out)
    assert share >= 0.7, f"{kind} chose the helpful model in {share:.0%} of held-out decisions (random: 33%)"


def test_fit_report_is_written_and_measures_ranking(checkpoints: dict[str, Path]):
    report = json.loads((checkpoints["ridge"] / REPORT_FILE).read_text())
    assert report["train_episodes"] + report["val_episodes"] == 120
    assert report["val_decisions"] == 6 * report["val_episodes"]
    assert report["val_mse_cost"] < report["baseline_mse_cost"]  # model prices explain cost-to-go
    ranking = report["ranking"]
    assert 0 < ranking["coverage"] <= 1 and ranking["covered"] <= ranking["decisions"]
    assert ranking["accuracy"] >= 0.7 > report["chance"]


def test_mtrouter_trained_and_routing_with_real_minilm(
    workdir: Path, stage_a: Path, held_out: list[DecisionSample]
):
    cache = workdir / "minilm-cache"
    report = train_router(
        "mtrouter",
        [stage_a],
        workdir / "ckpt-minilm",
        TrainOptions(lam=0.0, cache_dir=str(cache), embedder="minilm"),
        pool=CARDS,
    )
    assert report.ranking is not None and report.ranking.accuracy is not None
    router = make_router(
        "mtrouter",
        {"checkpoint": str(workdir / "ckpt-minilm"), "lam": 0.0, "cache_dir": str(cache)},
        [c.name for c in CARDS],
    )
    share = best_model_share(router, held_out)
    assert share >= 0.7, f"MiniLM mtrouter chose the helpful model in {share:.0%} of held-out decisions"


# ---------------------------------------------------------------- Stage B


def test_beta_mix_propensities_match_its_choices(
    checkpoints: dict[str, Path], encoder: HistoryEncoder, held_out
):
    router = BetaMixRouter(str(checkpoints["ridge"]), beta=0.6, lam=0.0, encoder=encoder)
    state = state_of(held_out[0])
    greedy, _ = router.greedy_router.greedy(state)
    rng = np.random.default_rng(7)
    decisions = [router.route(state, rng) for _ in range(600)]
    for d in decisions:
        assert d.propensity == pytest.approx(0.6 + 0.4 / 3 if d.model == greedy else 0.4 / 3)
    share = np.mean([d.model == greedy for d in decisions])
    assert abs(share - (0.6 + 0.4 / 3)) < 0.06
    with pytest.raises(ConfigError, match="beta"):
        BetaMixRouter(str(checkpoints["ridge"]), beta=1.5, encoder=encoder)


@pytest.mark.parametrize("kind", ["mtrouter", "lgbm"])
def test_warm_start_keeps_normalisation_and_continues(
    kind: str, checkpoints, encoder, workdir: Path, stage_a: Path
):
    stage_b = workdir / "stage-b"
    if not stage_b.exists():
        write_synthetic_run(stage_b, CARDS, HELPER, episodes_per_task=10, seed=2)
    out = workdir / f"warm-{kind}"
    train_router(
        kind,
        [stage_a, stage_b],
        out,
        TrainOptions(init_from=str(checkpoints[kind])),
        pool=CARDS,
        encoder=encoder,
    )
    before, after = load_value_model(checkpoints[kind]), load_value_model(out)
    assert after.stats == before.stats
    if kind == "lgbm":
        assert after.boosters["cost"].num_trees() >= before.boosters["cost"].num_trees()
    with pytest.raises(ConfigError, match="warm-start"):
        train_router(
            "ridge",
            [stage_a],
            workdir / "bad",
            TrainOptions(init_from=str(checkpoints[kind])),
            pool=CARDS,
            encoder=encoder,
        )


def test_registry_lists_the_learned_routers():
    for name in (*KINDS, "beta-mix"):
        assert issubclass(router_class(name), Router)
