"""Fitting a value model with the chosen targets, alone or as an ensemble.

The target functions (:mod:`routers.learned.targets`) are pure; this module
runs the loop around them. A bootstrapped target (``td``, ``fqi``, ``dr``)
starts from a fit on Monte-Carlo targets and refits ``fqi_iterations`` times,
each time on targets recomputed from the original logged outcomes and the
previous fit's estimates (validation targets likewise, so early stopping
measures the same thing). ``advantage`` subtracts a cross-fitted state baseline
and keeps the full-data baseline to add back. ``paired`` keeps the branched
decisions that have siblings and centres their targets per branch point. An ensemble repeats a member's
whole fit per seed, on a bootstrap resample of the training episodes in
``bootstrap`` mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError
from routers.learned.dataset import TrainingSet
from routers.learned.ensemble import ENSEMBLE_MODES, EnsembleModel
from routers.learned.state_baseline import StateBaseline, cross_fitted
from routers.learned.targets import (
    BOOTSTRAPPED,
    EpisodeReturns,
    advantage,
    doubly_robust,
    fitted_q,
    paired,
    td_lambda,
)
from routers.learned.value_model import ValueModel

ModelFactory = Callable[[int], ValueModel]  # seed -> an unfitted model of the family


@dataclass(frozen=True)
class EnsembleOptions:
    members: int = 1
    mode: str = "seeds"  # "seeds": every member on all episodes; "bootstrap": on a resample of them
    defer_threshold: float | None = None  # routing: defer to the strongest model above this spread

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ConfigError(f"ensemble must be >= 1, got {self.members}")
        if self.mode not in ENSEMBLE_MODES:
            raise ConfigError(f"ensemble_mode must be one of {', '.join(ENSEMBLE_MODES)}, got {self.mode!r}")
        if self.defer_threshold is not None and self.members < 2:
            raise ConfigError("defer_threshold needs an ensemble of at least 2 members")
        if self.defer_threshold is not None and self.defer_threshold < 0:
            raise ConfigError(f"defer_threshold must be >= 0, got {self.defer_threshold}")


def per_turn_costs(cost_to_go: np.ndarray) -> np.ndarray:
    cost_to_go = np.asarray(cost_to_go, dtype=np.float64)
    return cost_to_go - np.append(cost_to_go[1:], 0.0)


def episode_returns(data: TrainingSet, rows: np.ndarray) -> EpisodeReturns:
    """The logged episode of ``rows`` (in turn order) from Monte-Carlo targets in ``data``."""
    assert data.score_offset is not None and data.propensity is not None
    return EpisodeReturns(
        final=float(data.score[rows[-1]]) + float(data.score_offset[rows[-1]]),
        costs=per_turn_costs(data.cost[rows]),
        actions=data.model_index[rows],
        propensities=data.propensity[rows],
    )


def bootstrapped_targets(data: TrainingSet, model: ValueModel) -> TrainingSet:
    """``data`` (holding Monte-Carlo targets) with the targets of its options recomputed from ``model``."""
    options = data.options
    if options.target not in BOOTSTRAPPED:
        raise ValueError(f"target {options.target!r} is not bootstrapped")
    assert data.score_offset is not None
    q_score, q_cost = model.predict(data.embeddings, data.cards)
    q_final = q_score + data.score_offset[:, None]  # estimates of the final score, as the targets are
    score, cost = np.empty(len(data)), np.empty(len(data))
    for rows in data.episode_rows():
        episode = episode_returns(data, rows)
        if options.target == "td":
            logged = data.model_index[rows]
            s, c = td_lambda(episode, q_final[rows, logged], q_cost[rows, logged], options.td_lambda)
        elif options.target == "fqi":
            s, c = fitted_q(episode, q_final[rows], q_cost[rows], options.policy_lam)
        else:
            s, c = doubly_robust(
                episode, q_final[rows], q_cost[rows], options.policy_lam, options.weight_clip
            )
        score[rows], cost[rows] = s - data.score_offset[rows], c
    return data.with_targets(score, cost)


def advantage_sets(
    train: TrainingSet, val: TrainingSet | None, seed: int
) -> tuple[TrainingSet, TrainingSet | None, StateBaseline]:
    assert train.episode_index is not None
    base_score, base_cost = cross_fitted(train.embeddings, train.score, train.cost, train.episode_index, seed)
    baseline = StateBaseline.fit(train.embeddings, train.score, train.cost)
    train = train.with_targets(advantage(train.score, base_score), advantage(train.cost, base_cost))
    if val is not None and len(val):
        val_score, val_cost = baseline.predict(val.embeddings)
        val = val.with_targets(advantage(val.score, val_score), advantage(val.cost, val_cost))
    return train, val, baseline


def paired_rows(data: TrainingSet) -> TrainingSet:
    """The branched decisions of ``data`` that have a sibling, with targets centred per branch point."""
    groups = data.paired_group if data.paired_group is not None else np.full(len(data), None, dtype=object)
    sizes: dict[object, int] = {}
    for group in groups:
        if group is not None:
            sizes[group] = sizes.get(group, 0) + 1
    keep = np.array([g is not None and sizes[g] > 1 for g in groups], dtype=bool)
    kept = data.rows(np.flatnonzero(keep))
    assert kept.paired_group is not None
    return kept.with_targets(paired(kept.score, kept.paired_group), paired(kept.cost, kept.paired_group))


def paired_sets(train: TrainingSet, val: TrainingSet | None) -> tuple[TrainingSet, TrainingSet | None]:
    train = paired_rows(train)
    if not len(train):
        raise ConfigError(
            "target 'paired' trains on branch points with at least two branches, and the runs hold none "
            "(collect counterfactual branches: harness.branching)"
        )
    return train, paired_rows(val) if val is not None and len(val) else val


def bootstrap_rows(data: TrainingSet, rng: np.random.Generator) -> np.ndarray:
    """Rows of a resample of whole episodes, drawn with replacement."""
    episodes = data.episode_rows()
    drawn = rng.integers(len(episodes), size=len(episodes))
    return np.concatenate([episodes[i] for i in drawn])


def fit_member(
    make_model: ModelFactory,
    train: TrainingSet,
    val: TrainingSet | None,
    seed: int,
    rows: np.ndarray | None,
    init_from: ValueModel | None,
) -> ValueModel:
    """One model, refitted on bootstrapped targets if the options ask; ``rows`` is its resample of ``train``."""

    def fit(data: TrainingSet, held: TrainingSet | None) -> ValueModel:
        model = make_model(seed)
        model.fit(data if rows is None else data.rows(rows), held, init_from=init_from)
        return model

    model = fit(train, val)
    if train.options.target in BOOTSTRAPPED:
        for _ in range(train.options.fqi_iterations):
            held = bootstrapped_targets(val, model) if val is not None and len(val) else None
            model = fit(bootstrapped_targets(train, model), held)
    return model


def fit_value_model(
    make_model: ModelFactory,
    train: TrainingSet,
    val: TrainingSet | None,
    seed: int,
    ensemble: EnsembleOptions = EnsembleOptions(),
    init_from: ValueModel | None = None,
) -> ValueModel:
    """The fitted model: a plain one for one member and non-advantage targets, else an EnsembleModel."""
    if isinstance(init_from, EnsembleModel):
        raise ConfigError("cannot warm-start from an ensemble checkpoint; retrain from the runs")
    baseline = None
    if train.options.target == "advantage":
        train, val, baseline = advantage_sets(train, val, seed)
    elif train.options.target == "paired":
        train, val = paired_sets(train, val)
    members = []
    for k in range(ensemble.members):
        rows = None
        if ensemble.mode == "bootstrap" and ensemble.members > 1:
            rows = bootstrap_rows(train, np.random.default_rng([seed, k]))
        members.append(fit_member(make_model, train, val, seed + k, rows, init_from))
    if ensemble.members == 1 and baseline is None:
        return members[0]
    model = EnsembleModel(
        members, baseline=baseline, mode=ensemble.mode, defer_threshold=ensemble.defer_threshold
    )
    model.record_mean_scores(train.embeddings, seed)
    return model
