"""Variance-reduced targets and seed ensembles of the learned routers.

Every target is checked against values worked out by hand on tiny logged
episodes; the training loop is checked on logged runs written with the real
RunStore, and the ensemble through its checkpoint and a real router.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_learned_routers import CARDS, HELPER, HashingEmbedder, state_of

from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.errors import ConfigError
from routers.learned.classic import RidgeModel, RidgeRouter
from routers.learned.dataset import TargetOptions, TargetStats, build_training_set, load_samples
from routers.learned.embedding import CachedEmbedder
from routers.learned.encoder_spec import encoder_config
from routers.learned.ensemble import EnsembleModel, member_dir
from routers.learned.fitting import bootstrapped_targets, episode_returns
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.q_router import MTRouter, MTRouterModel
from routers.learned.state_baseline import StateBaseline, cross_fitted
from routers.learned.targets import (
    EpisodeReturns,
    advantage,
    doubly_robust,
    fitted_q,
    greedy_models,
    monte_carlo,
    td_lambda,
)
from routers.learned.train import TrainOptions, encode_histories, train_router
from routers.learned.value_model import load_value_model

# Episode A: three turns, two models; episode B: two turns.
EPISODE_A = EpisodeReturns(
    final=0.7,
    costs=np.array([0.1, 0.2, 0.3]),
    actions=np.array([0, 1, 0]),
    propensities=np.array([0.5, 0.9, 0.8]),
)
EPISODE_B = EpisodeReturns(
    final=0.2, costs=np.array([0.05, 0.15]), actions=np.array([1, 1]), propensities=np.array([0.5, 0.975])
)
# Estimates per state (rows) and model (columns) for episode A.
Q_SCORE = np.array([[0.4, 0.3], [0.5, 0.9], [0.6, 0.2]])
Q_COST = np.array([[1.0, 0.1], [0.8, 0.2], [0.4, 0.1]])


def close(actual, expected) -> None:
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)


def test_monte_carlo_is_the_final_score_and_the_cost_to_go():
    score, cost = monte_carlo(EPISODE_A)
    close(score, [0.7, 0.7, 0.7])
    close(cost, [0.6, 0.5, 0.3])
    score, cost = monte_carlo(EPISODE_B)
    close(score, [0.2, 0.2])
    close(cost, [0.2, 0.15])


def test_td_lambda_by_hand():
    logged_score, logged_cost = np.array([0.4, 0.5, 0.6]), np.array([1.0, 0.8, 0.4])
    score, cost = td_lambda(EPISODE_A, logged_score, logged_cost, 0.5)
    # t=1: 0.5 * 0.6 + 0.5 * 0.7;  0.2 + 0.5 * 0.4 + 0.5 * 0.3
    # t=0: 0.5 * 0.5 + 0.5 * 0.65; 0.1 + 0.5 * 0.8 + 0.5 * 0.55
    close(score, [0.575, 0.65, 0.7])
    close(cost, [0.775, 0.55, 0.3])
    score, cost = td_lambda(EPISODE_B, np.array([0.9, 0.3]), np.array([0.5, 0.4]), 0.0)
    close(score, [0.3, 0.2])  # lambda 0: one step, the estimate at the next logged pair
    close(cost, [0.05 + 0.4, 0.15])
    close(np.stack(td_lambda(EPISODE_A, logged_score, logged_cost, 1.0)), np.stack(monte_carlo(EPISODE_A)))


def test_fitted_q_bootstraps_from_the_lambda_greedy_next_model():
    close(greedy_models(Q_SCORE, Q_COST, 1.0), [1, 1, 0])  # Q - cost: [-0.6, 0.2], [-0.3, 0.7], [0.2, 0.1]
    score, cost = fitted_q(EPISODE_A, Q_SCORE, Q_COST, 1.0)
    close(score, [0.9, 0.6, 0.7])
    close(cost, [0.1 + 0.2, 0.2 + 0.4, 0.3])
    score, cost = fitted_q(EPISODE_A, Q_SCORE, Q_COST, 0.0)  # greedy on score alone: [0, 1, 0]
    close(score, [0.9, 0.6, 0.7])
    close(cost, [0.1 + 0.2, 0.2 + 0.4, 0.3])


def test_doubly_robust_by_hand():
    # greedy [1, 1, 0]; logged [0, 1, 0]: rho = [0, 1/0.9, 1/0.8]
    score, cost = doubly_robust(EPISODE_A, Q_SCORE, Q_COST, 1.0)
    s1 = 0.6 + 1.25 * (0.7 - 0.6)
    c1 = 0.2 + 0.4 + 1.25 * (0.3 - 0.4)
    close(score, [0.9 + (s1 - 0.9) / 0.9, s1, 0.7])
    close(cost, [0.1 + 0.2 + (c1 - 0.2) / 0.9, c1, 0.3])
    close(score[1], 0.725)
    close(cost[1], 0.475)
    clipped, _ = doubly_robust(EPISODE_A, Q_SCORE, Q_COST, 1.0, clip=1.1)
    close(clipped[1], 0.6 + 1.1 * 0.1)
    # Where the greedy model was never logged next, DR is fitted-Q's one-step target.
    off = EpisodeReturns(0.7, EPISODE_A.costs, np.array([0, 0, 1]), np.array([0.5, 0.9, 0.1]))
    close(np.stack(doubly_robust(off, Q_SCORE, Q_COST, 1.0)), np.stack(fitted_q(off, Q_SCORE, Q_COST, 1.0)))


def test_advantage_subtracts_the_baseline():
    close(advantage(np.array([0.7, 0.7, 0.7]), np.array([0.5, 0.6, 0.9])), [0.2, 0.1, -0.2])


def test_cross_fitted_baseline_never_sees_its_own_episode():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    score, cost = rng.standard_normal(5), rng.standard_normal(5)
    episode = np.array([0, 0, 0, 1, 1])
    got_score, got_cost = cross_fitted(x, score, cost, episode, folds=2)
    first = StateBaseline.fit(x[3:], score[3:], cost[3:]).predict(x[:3])
    second = StateBaseline.fit(x[:3], score[:3], cost[:3]).predict(x[3:])
    close(got_score, np.concatenate([first[0], second[0]]))
    close(got_cost, np.concatenate([first[1], second[1]]))


# ---------------------------------------------------------------- wiring into training


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_run(
        tmp_path_factory.mktemp("targets") / "run", CARDS, HELPER, episodes_per_task=12, turns=4, seed=3
    )


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> HistoryEncoder:
    return HistoryEncoder(CachedEmbedder(HashingEmbedder(), tmp_path_factory.mktemp("cache")), "incremental")


class FixedModel:
    """Estimates known in advance: the score depends on the model and the turn, the cost on the model."""

    def __init__(self, turns: np.ndarray):
        self.turns = turns

    def predict(self, embeddings, cards):
        n = len(embeddings)
        score = 0.1 * np.arange(len(cards))[None, :] + 0.01 * self.turns[:n, None]
        cost = np.tile(0.3 - 0.1 * np.arange(len(cards)), (n, 1))
        return score, cost


@pytest.mark.parametrize("target", ["td", "fqi", "dr"])
@pytest.mark.parametrize("score_target", ["gain", "final"])
def test_bootstrapped_targets_of_a_training_set_are_the_pure_functions(logged, encoder, target, score_target):
    samples = load_samples([logged])
    stats = TargetStats.fit(samples)
    options = TargetOptions(score_target=score_target, target=target, td_lambda=0.3, policy_lam=0.5)
    data = build_training_set(samples, encode_histories(samples, encoder), CARDS, stats, options)
    model = FixedModel(data.turn)
    out = bootstrapped_targets(data, model)
    q_score, q_cost = model.predict(data.embeddings, CARDS)
    span = stats.score_high - stats.score_low
    for rows in data.episode_rows()[:5]:
        first = samples[rows[0]]
        episode = EpisodeReturns(
            final=float(stats.normalise_score(first.score)),
            costs=np.diff(np.append(-stats.normalise_cost([samples[r].cost_to_go for r in rows]), 0.0)),
            actions=data.model_index[rows],
            propensities=np.array([samples[r].propensity for r in rows]),
        )
        offset = (
            np.array([(samples[r].score_before - stats.score_low) / span for r in rows])
            if score_target == "gain"
            else np.zeros(len(rows))
        )
        q_final = q_score[rows] + offset[:, None]
        if target == "td":
            logged_model = data.model_index[rows]
            expected = td_lambda(
                episode, q_final[np.arange(len(rows)), logged_model], q_cost[rows, logged_model], 0.3
            )
        elif target == "fqi":
            expected = fitted_q(episode, q_final, q_cost[rows], 0.5)
        else:
            expected = doubly_robust(episode, q_final, q_cost[rows], 0.5, options.weight_clip)
        np.testing.assert_allclose(out.score[rows], expected[0] - offset, atol=1e-5)  # float32 storage
        np.testing.assert_allclose(out.cost[rows], expected[1], atol=1e-5)
        assert episode_returns(data, rows).final == pytest.approx(episode.final, abs=1e-6)


@pytest.mark.parametrize("target", ["td", "fqi", "advantage", "dr"])
def test_training_with_each_target_saves_a_checkpoint_a_router_uses(logged, encoder, tmp_path, target):
    report = train_router(
        "ridge",
        [logged],
        tmp_path / target,
        TrainOptions(target=target, fqi_iterations=2),
        pool=CARDS,
        encoder=encoder,
    )
    model = load_value_model(tmp_path / target)
    assert model.options.target == target
    assert isinstance(model, EnsembleModel) == (target == "advantage")  # the baseline is kept with it
    assert report.val_mse_score is not None
    router = RidgeRouter(str(tmp_path / target), lam=0.0, encoder=encoder)
    assert router.route(state_of(load_samples([logged])[0]), np.random.default_rng(0)).model in {
        c.name for c in CARDS
    }


def test_target_parameters_are_checked_before_any_work():
    options = TrainOptions.from_params("mtrouter", {"target": "dr", "td_lambda": 0.5, "ensemble": 3})
    assert (options.target, options.td_lambda, options.ensemble, options.hyperparams) == ("dr", 0.5, 3, {})
    with pytest.raises(ConfigError, match="target must be one of"):
        TargetOptions(target="sarsa")
    with pytest.raises(ConfigError, match="td_lambda"):
        TargetOptions(target="td", td_lambda=1.5)
    with pytest.raises(ConfigError, match="no training option or hyperparameter 'td_lamda'"):
        TrainOptions.from_params("ridge", {"td_lamda": 0.5})


# ---------------------------------------------------------------- ensembles


@pytest.mark.parametrize("mode", ["seeds", "bootstrap"])
def test_ensemble_prediction_is_the_mean_of_its_members(logged, encoder, tmp_path, mode):
    out = tmp_path / mode
    train_router(
        "ridge",
        [logged],
        out,
        TrainOptions(ensemble=3, ensemble_mode=mode, hyperparams={"alpha": 1.0}),
        pool=CARDS,
        encoder=encoder,
    )
    ensemble = load_value_model(out)
    assert isinstance(ensemble, EnsembleModel) and len(ensemble.members) == 3
    members = [RidgeModel.load(member_dir(out, i)) for i in range(3)]
    x = encode_histories(load_samples([logged])[:40], encoder)
    score, cost = ensemble.predict(x, CARDS)
    member_scores = [m.predict(x, CARDS)[0] for m in members]
    np.testing.assert_allclose(score, np.mean(member_scores, axis=0), atol=1e-12)
    np.testing.assert_allclose(cost, np.mean([m.predict(x, CARDS)[1] for m in members], axis=0), atol=1e-12)
    spread = ensemble.spread(x, CARDS, lam=0.0)
    np.testing.assert_allclose(spread, np.std(member_scores, axis=0), atol=1e-12)
    if mode == "seeds":  # ridge is closed form: same data, same members
        assert spread.max() < 1e-9
    else:
        assert spread.max() > 1e-4  # resampled episodes give different fits


def test_an_mtrouter_ensemble_of_seeds_disagrees_and_defers_when_forced(logged, encoder, tmp_path):
    out = tmp_path / "mt"
    train_router(
        "mtrouter",
        [logged],
        out,
        TrainOptions(ensemble=2, defer_threshold=1e9, hyperparams={"max_epochs": 3}),
        pool=CARDS,
        encoder=encoder,
    )
    ensemble = load_value_model(out)
    assert isinstance(ensemble, EnsembleModel) and isinstance(ensemble.members[0], MTRouterModel)
    assert ensemble.members[0].seed != ensemble.members[1].seed
    strongest = ensemble.strongest(CARDS)
    assert strongest == max(ensemble.mean_scores, key=ensemble.mean_scores.get)
    states = [state_of(s) for s in load_samples([logged])[:30]]

    def choices(**params) -> list[str]:
        router = MTRouter(str(out), lam=0.0, encoder=encoder, **params)
        return [router.route(s, np.random.default_rng(0)).model for s in states]

    never = choices()  # the checkpoint's threshold, 1e9: the members never disagree that much
    mean_q = ensemble.predict(encode_histories(load_samples([logged])[:30], encoder), CARDS)[0]
    assert never == [CARDS[i].name for i in mean_q.argmax(axis=1)]  # the members' mean, undeferred
    assert any(choice != strongest for choice in never)  # so that deferring is visible
    assert choices(defer_threshold=0.0) == [strongest] * len(states)  # any disagreement defers
    train_router("ridge", [logged], tmp_path / "plain", pool=CARDS, encoder=encoder)
    with pytest.raises(ConfigError, match="defer_threshold needs an ensemble"):
        RidgeRouter(str(tmp_path / "plain"), encoder=encoder, defer_threshold=0.1)


def test_ensemble_options_are_refused_when_wrong(logged, encoder, tmp_path):
    with pytest.raises(ConfigError, match="ensemble must be >= 1"):
        train_router("ridge", [logged], tmp_path / "a", TrainOptions(ensemble=0), pool=CARDS, encoder=encoder)
    with pytest.raises(ConfigError, match="ensemble_mode"):
        train_router(
            "ridge",
            [logged],
            tmp_path / "b",
            TrainOptions(ensemble=2, ensemble_mode="x"),
            pool=CARDS,
            encoder=encoder,
        )
    with pytest.raises(ConfigError, match="at least 2 members"):
        train_router(
            "ridge", [logged], tmp_path / "c", TrainOptions(defer_threshold=0.1), pool=CARDS, encoder=encoder
        )


def test_encoder_config_of_an_ensemble_is_its_members(logged, encoder, tmp_path):
    train_router("ridge", [logged], tmp_path / "e", TrainOptions(ensemble=2), pool=CARDS, encoder=encoder)
    assert load_value_model(tmp_path / "e").encoder == encoder_config(encoder)
