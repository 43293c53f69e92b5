"""Off-policy estimators against hand-computed values, and what logging policies do to the weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.replay.logged import LoggedEpisode, LoggedTurn, link_histories
from harness.replay.ope import (
    ActionValues,
    FQEConfig,
    FQEProblem,
    OPEConfig,
    deterministic,
    evaluate_policy,
    fit_fqe,
    kish_ess,
)
from harness.types import Message

POOL = ["A", "B"]


def episode(key: str, score: float, turns: list[tuple[str, float | None, float]]) -> LoggedEpisode:
    """An episode from (model, propensity, dollars) per turn."""
    initial = (Message("user", f"Task: {key}\n\nObservation: start"),)
    drafts = [
        LoggedTurn(t, model, propensity, 0, 0, dollars, (Message("assistant", f"turn {t}"),))
        for t, (model, propensity, dollars) in enumerate(turns)
    ]
    return LoggedEpisode(
        key, "toy", "t", 0, "test", score, "done", link_histories(initial, drafts), initial, source="test"
    )


# Three episodes of lengths 2, 1 and 3.
TINY = [
    episode("e1", 10.0, [("A", 0.5, 1.0), ("B", 0.5, 2.0)]),
    episode("e2", 4.0, [("B", 0.25, 3.0)]),
    episode("e3", 6.0, [("A", 0.5, 1.0), ("A", 0.6, 0.5), ("B", 0.9, 2.0)]),
]


def target(ep: LoggedEpisode, t: int) -> np.ndarray:
    """P(A) = 0.8 on even turns, 0.3 on odd turns."""
    return np.array([0.8, 0.2]) if t % 2 == 0 else np.array([0.3, 0.7])


def q_table(ep: LoggedEpisode, t: int) -> ActionValues:
    return ActionValues(
        score=np.array([6.0, 2.0]) if t % 2 == 0 else np.array([9.0, 1.0]),
        cost=np.array([2.0, 4.0]),
    )


# Cumulative weights, by hand: rho = pi(a_t) / mu_t.
W1 = [0.8 / 0.5, (0.8 / 0.5) * (0.7 / 0.5)]
W2 = [0.2 / 0.25]
W3 = [0.8 / 0.5, (0.8 / 0.5) * (0.3 / 0.6), (0.8 / 0.5) * (0.3 / 0.6) * (0.2 / 0.9)]
FAST = OPEConfig(n_bootstrap=200, min_ess=0.0)


def run(estimators, config=FAST, **kwargs):
    return evaluate_policy(TINY, POOL, target, estimators=estimators, config=config, **kwargs)


def test_trajectory_and_per_decision_is_match_hand_computation():
    result = run(["tis", "pdis", "wtis"])
    tis_score = (W1[-1] * 10 + W2[-1] * 4 + W3[-1] * 6) / 3
    tis_cost = (W1[-1] * 3.0 + W2[-1] * 3.0 + W3[-1] * 3.5) / 3
    pdis_cost = (W1[0] * 1 + W1[1] * 2 + W2[0] * 3 + W3[0] * 1 + W3[1] * 0.5 + W3[2] * 2) / 3
    wtis_score = (W1[-1] * 10 + W2[-1] * 4 + W3[-1] * 6) / (W1[-1] + W2[-1] + W3[-1])
    assert result["tis"].score.value == pytest.approx(tis_score, abs=1e-9)
    assert result["tis"].cost.value == pytest.approx(tis_cost, abs=1e-9)
    # The score is a terminal reward: per-decision IS of it is trajectory IS.
    assert result["pdis"].score.value == pytest.approx(tis_score, abs=1e-9)
    assert result["pdis"].cost.value == pytest.approx(pdis_cost, abs=1e-9)
    assert result["wtis"].score.value == pytest.approx(wtis_score, abs=1e-9)


def test_weighted_pdis_matches_hand_computation_with_frozen_weights_after_the_end():
    result = run(["wpdis"])
    # Per turn: weighted rewards over the sum of weights; e2 ended at turn 0 and keeps W2[0].
    score = (
        (W2[0] * 4) / (W1[0] + W2[0] + W3[0])
        + (W1[1] * 10) / (W1[1] + W2[0] + W3[1])
        + (W3[2] * 6) / (W1[1] + W2[0] + W3[2])
    )
    cost = (
        (W1[0] * 1 + W2[0] * 3 + W3[0] * 1) / (W1[0] + W2[0] + W3[0])
        + (W1[1] * 2 + W3[1] * 0.5) / (W1[1] + W2[0] + W3[1])
        + (W3[2] * 2) / (W1[1] + W2[0] + W3[2])
    )
    assert result["wpdis"].score.value == pytest.approx(score, abs=1e-9)
    assert result["wpdis"].cost.value == pytest.approx(cost, abs=1e-9)


def test_doubly_robust_and_direct_method_match_hand_computation():
    result = run(["dr", "dm"], q=q_table)
    v_even, v_odd = 0.8 * 6 + 0.2 * 2, 0.3 * 9 + 0.7 * 1
    c_even, c_odd = 0.8 * 2 + 0.2 * 4, 0.3 * 2 + 0.7 * 4
    # sum_t  w_t (r_t - Q(h_t, a_t)) + w_{t-1} V(h_t)
    score = (
        (W1[0] * (0 - 6) + v_even + W1[1] * (10 - 1) + W1[0] * v_odd)
        + (W2[0] * (4 - 2) + v_even)
        + (W3[0] * (0 - 6) + v_even + W3[1] * (0 - 9) + W3[0] * v_odd + W3[2] * (6 - 2) + W3[1] * v_even)
    ) / 3
    cost = (
        (W1[0] * (1 - 2) + c_even + W1[1] * (2 - 4) + W1[0] * c_odd)
        + (W2[0] * (3 - 4) + c_even)
        + (W3[0] * (1 - 2) + c_even + W3[1] * (0.5 - 2) + W3[0] * c_odd + W3[2] * (2 - 4) + W3[1] * c_even)
    ) / 3
    assert result["dr"].score.value == pytest.approx(score, abs=1e-9)
    assert result["dr"].cost.value == pytest.approx(cost, abs=1e-9)
    assert result["dm"].score.value == pytest.approx(v_even, abs=1e-9)
    assert result["dm"].cost.value == pytest.approx(c_even, abs=1e-9)


def test_clipping_caps_cumulative_weights_and_is_reported():
    result = run(["tis", "pdis"], config=OPEConfig(clip=1.5, n_bootstrap=200, min_ess=0.0))
    clipped = [min(w, 1.5) for w in (W1[-1], W2[-1], W3[-1])]
    assert result["tis"].score.value == pytest.approx(
        (clipped[0] * 10 + clipped[1] * 4 + clipped[2] * 6) / 3, abs=1e-9
    )
    pdis_cost = (1.5 * 1 + 1.5 * 2 + W2[0] * 3 + 1.5 * 1 + W3[1] * 0.5 + W3[2] * 2) / 3
    assert result["pdis"].cost.value == pytest.approx(pdis_cost, abs=1e-9)
    # Cut: e1 turns 0 and 1, e3 turn 0; three of six logged turns.
    assert result["tis"].score.clip == 1.5 and result["tis"].score.clipped_fraction == pytest.approx(0.5)


def test_effective_sample_size():
    assert kish_ess(np.ones(4)) == pytest.approx(4.0)
    assert kish_ess(np.array([1.0, 0, 0, 0])) == pytest.approx(1.0)
    assert kish_ess(np.array([2.0, 1.0])) == pytest.approx(9 / 5)
    assert kish_ess(np.zeros(3)) == 0.0
    result = run(["pdis", "dm"], q=q_table)
    terminal = np.array([W1[-1], W2[-1], W3[-1]])
    assert result["pdis"].score.ess == pytest.approx(terminal.sum() ** 2 / (terminal**2).sum(), abs=1e-9)
    per_turn = [
        np.array([W1[0], W2[0], W3[0]]),
        np.array([W1[1], W2[0], W3[1]]),
        np.array([W1[1], W2[0], W3[2]]),
    ]
    assert result["pdis"].cost.ess == pytest.approx(min(kish_ess(w) for w in per_turn), abs=1e-9)
    assert result["dm"].score.ess == 3.0


def test_on_policy_log_gives_the_sample_mean_with_a_trusted_seeded_interval():
    rng = np.random.default_rng(3)
    models = ["A" if rng.random() < 0.8 else "B" for _ in range(200)]
    log = [
        episode(f"e{i}", float(rng.normal(10, 3)), [(m, 0.8 if m == "A" else 0.2, 0.1)])
        for i, m in enumerate(models)
    ]
    config = OPEConfig(n_bootstrap=500, seed=11)
    first = evaluate_policy(log, POOL, lambda e, t: np.array([0.8, 0.2]), ["tis", "wpdis"], config=config)
    again = evaluate_policy(log, POOL, lambda e, t: np.array([0.8, 0.2]), ["tis", "wpdis"], config=config)
    mean = np.mean([e.score for e in log])
    estimate = first["tis"].score
    assert estimate.value == pytest.approx(mean, abs=1e-9) and estimate.ess == pytest.approx(200)
    assert estimate.trusted and estimate.warning is None
    assert estimate.low < mean < estimate.high and (estimate.low, estimate.high) == (
        again["tis"].score.low,
        again["tis"].score.high,
    )
    half_width = 1.96 * np.std([e.score for e in log]) / np.sqrt(200)
    assert estimate.high - estimate.low == pytest.approx(2 * half_width, rel=0.2)


def simulate(n: int, turns: int, models: int, switch_prob: float | None, seed: int) -> list[LoggedEpisode]:
    """Logs of uniform (switch_prob None) or sticky logging, with exact propensities."""
    rng = np.random.default_rng(seed)
    names = [f"m{k}" for k in range(models)]
    log = []
    for i in range(n):
        steps, previous = [], None
        for t in range(turns):
            if switch_prob is None:
                choice, propensity = int(rng.integers(models)), 1 / models
            elif t == 0:
                choice, propensity = int(rng.integers(models)), 1 / models
            else:
                choice = int(rng.integers(models)) if rng.random() < switch_prob else previous
                propensity = switch_prob / models + (1 - switch_prob if choice == previous else 0.0)
            steps.append((names[choice], propensity, 0.01))
            previous = choice
        log.append(episode(f"e{i}", float(rng.uniform(0, 100)), steps))
    return log


def test_uniform_logging_over_35_turns_flags_low_ess_and_shows_it_in_the_interval(caplog):
    names = [f"m{k}" for k in range(6)]
    log = simulate(300, 35, 6, None, seed=0)
    always_m0 = deterministic(lambda e, t: "m0", names)
    with caplog.at_level(logging.WARNING):
        result = evaluate_policy(log, names, always_m0, ["tis", "pdis"], config=OPEConfig(n_bootstrap=200))
    score = result["tis"].score
    # No logged episode follows the target for 35 turns (probability 6^-35): every weight is 0.
    assert (
        score.ess == 0.0 and score.value == 0.0 and (score.bootstrap_low, score.bootstrap_high) == (0.0, 0.0)
    )
    assert not score.trusted and "effective sample size 0" in score.warning
    low, high = min(e.score for e in log), max(e.score for e in log)
    assert (score.low, score.high) == (pytest.approx(min(0.0, low)), pytest.approx(high))
    assert any("not to be trusted" in r.message for r in caplog.records)
    # Per-decision cost: turn t keeps about n / 6^(t+1) effective episodes, none by turn 4.
    assert result["pdis"].cost.ess < 1 and not result["pdis"].cost.trusted


def test_sticky_logging_keeps_about_seven_percent_of_episodes_for_a_one_model_target():
    n, turns, p, models = 3000, 35, 0.03, 6
    stay = 1 - p + p / models
    assert stay == pytest.approx(0.975)
    match_probability = (1 / models) * stay ** (turns - 1)
    match_weight = models / stay ** (turns - 1)
    assert match_probability == pytest.approx(0.0705, abs=5e-4) and match_weight == pytest.approx(
        14.19, abs=0.01
    )
    assert models**turns == pytest.approx(1.72e27, rel=0.01) and models**-turns == pytest.approx(
        5.8e-28, rel=0.01
    )
    one_switch = (1 / models) * stay ** (turns - 2) * (p / models)
    assert one_switch == pytest.approx(3.6e-4, rel=0.01)
    assert models * (models / p) / stay ** (turns - 2) == pytest.approx(2767, rel=0.001)

    names = [f"m{k}" for k in range(models)]
    log = simulate(n, turns, models, p, seed=1)
    result = evaluate_policy(
        log, names, deterministic(lambda e, t: "m0", names), ["tis"], config=OPEConfig(n_bootstrap=100)
    )
    matches = [e for e in log if set(e.models) == {"m0"}]
    estimate = result["tis"].score
    assert estimate.ess == pytest.approx(len(matches))  # equal weights on the matches, 0 elsewhere
    assert len(matches) / n == pytest.approx(match_probability, abs=4 * np.sqrt(match_probability / n))
    assert estimate.value == pytest.approx(match_weight * sum(e.score for e in matches) / n, rel=1e-9)
    assert estimate.trusted  # about 210 effective episodes out of 3000


def test_missing_propensity_is_refused_by_weighted_estimators_but_not_by_dm():
    log = [*TINY, episode("e4", 1.0, [("A", None, 1.0)])]
    with pytest.raises(ConfigError, match=r"1 turn\(s\) have none \(first: 'e4' turn 0"):
        evaluate_policy(log, POOL, target, ["pdis"], config=FAST)
    assert evaluate_policy(log, POOL, target, ["dm"], q=q_table, config=FAST)[
        "dm"
    ].score.value == pytest.approx(5.2)
    with pytest.raises(ConfigError, match="need a value model q"):
        evaluate_policy(TINY, POOL, target, ["dr"], config=FAST)
    with pytest.raises(ConfigError, match="not a probability vector"):
        evaluate_policy(TINY, POOL, lambda e, t: np.array([0.5, 0.6]), ["tis"], config=FAST)


def test_self_normalised_estimate_with_no_weight_is_undefined_not_zero():
    never = deterministic(lambda e, t: "B", POOL)
    log = [TINY[0], TINY[2]]  # both start with A: no weight anywhere
    result = evaluate_policy(log, POOL, never, ["wtis"], config=FAST)
    assert np.isnan(result["wtis"].score.value) and not result["wtis"].score.trusted
    assert "undefined" in result["wtis"].score.warning


def test_fitted_q_recovers_the_values_of_a_small_decision_process():
    # Two turns; the score is 1 when the last turn uses B; A costs 1 and B costs 3 per turn.
    log = []
    for a0 in POOL:
        for a1 in POOL:
            for _ in range(5):
                cost = {"A": 1.0, "B": 3.0}
                log.append(
                    episode(
                        f"{a0}{a1}{len(log)}", float(a1 == "B"), [(a0, 0.5, cost[a0]), (a1, 0.5, cost[a1])]
                    )
                )
    always_b = deterministic(lambda e, t: "B", POOL)

    def turn_features(e: LoggedEpisode, t: int) -> np.ndarray:
        return np.array([t == 0, t == 1], dtype=float)

    q = fit_fqe(log, POOL, always_b, turn_features, FQEConfig(ridge=1e-8))
    first, last = q(log[0], 0), q(log[0], 1)
    np.testing.assert_allclose(last.score, [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(last.cost, [1.0, 3.0], atol=1e-6)
    np.testing.assert_allclose(first.score, [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(first.cost, [4.0, 6.0], atol=1e-6)
    result = evaluate_policy(
        log, POOL, always_b, ["dm", "dr", "pdis"], q=q, config=OPEConfig(n_bootstrap=100, min_ess=0)
    )
    for name in ("dm", "dr", "pdis"):
        assert result[name].score.value == pytest.approx(1.0, abs=1e-5)
        assert result[name].cost.value == pytest.approx(6.0, abs=1e-5)
    # DR with an exact Q has no variance left: every bootstrap resample gives the same value.
    assert result["dr"].score.high - result["dr"].score.low == pytest.approx(0.0, abs=1e-5)
    assert result["pdis"].score.high - result["pdis"].score.low > 0.1


def test_fqe_intervals_refit_the_model_on_every_resample_and_are_seeded():
    """Scores unrelated to the states: a model fitted once gives every episode the same start value, so
    the fixed-model DM interval is a point; refitting it on each resample shows the sampling error."""
    names = ["m0", "m1"]
    log = simulate(30, 5, 2, 0.3, seed=3)
    always_m0 = deterministic(lambda e, t: "m0", names)

    def features(e: LoggedEpisode, t: int) -> np.ndarray:
        previous = e.turns[t - 1].model if t else None
        return np.array([t / 5, t == 0, previous == "m0", previous == "m1"], dtype=float)

    problem = FQEProblem(log, names, always_m0, features)
    q = problem.fit()
    np.testing.assert_allclose(q.coefficients, fit_fqe(log, names, always_m0, features).coefficients)

    def estimate(seed: int, refit: bool):
        config = OPEConfig(n_bootstrap=200, min_ess=0.0, seed=seed, refit_resamples=50)
        return evaluate_policy(
            log, names, always_m0, ["dm", "dr"], q=q, config=config, refit=problem.refit() if refit else None
        )

    fixed, refit = estimate(0, refit=False), estimate(0, refit=True)
    for name in ("dm", "dr"):
        assert refit[name].score.value == fixed[name].score.value  # the point estimate is the same fit
        assert refit[name].score.interval.endswith("refit on each of 50 resamples")
        assert fixed[name].score.interval == "episode bootstrap"
    fixed_width = fixed["dm"].score.high - fixed["dm"].score.low
    refit_width = refit["dm"].score.high - refit["dm"].score.low
    assert fixed_width < 1e-6 and refit_width > 10.0
    again, other = estimate(0, refit=True), estimate(1, refit=True)
    assert (again["dm"].score.low, again["dm"].score.high) == (refit["dm"].score.low, refit["dm"].score.high)
    assert (other["dm"].score.low, other["dm"].score.high) != (refit["dm"].score.low, refit["dm"].score.high)
    with pytest.raises(ConfigError, match="refit_resamples must be 0 or at least 10"):
        OPEConfig(refit_resamples=3)
