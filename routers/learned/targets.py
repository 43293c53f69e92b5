"""Regression targets of a value model, computed from logged episodes only.

A logged episode gives, per turn, the model that answered, the logging policy's
propensity and the turn's (normalised) cost; the score is a single reward at the
end. The Monte-Carlo target of a decision is that final score and the cost from
the turn to the end: unbiased for the *logging* policy, but one episode's luck
after the decision lands in every earlier target of it, so the variance is large.
The alternatives trade that variance for bias from the model's own estimates:

* ``td``: TD(lambda) returns of the logged policy, bootstrapped from the model's
  estimate at the next logged (state, model) pair; ``td_lambda=1`` is Monte Carlo;
* ``fqi``: fitted-Q iteration, the one-step target from the lambda-greedy model
  at the next state (the value of the router, not of the logging policy);
* ``dr``: per-decision doubly robust for the lambda-greedy policy: the model's
  greedy next-state value plus the importance-weighted correction
  ``rho * (observed continuation - estimate)``, where ``rho`` is 1/propensity
  when the logged next model is the greedy one and 0 otherwise (clipped);
* ``advantage``: the Monte-Carlo target minus a state-value baseline; the
  baseline is the same for every model at a state, so the ranking is unchanged
  but the part of the outcome that the state alone explains is removed;
* ``paired``: for counterfactual branches (:mod:`harness.branching`), a branched
  decision's Monte-Carlo outcome minus the mean outcome of the branches played
  at the same state (itself included): the siblings share the state and one
  continuation policy under common random numbers, so the state's value and most
  of the continuation's luck cancel. Only branched decisions with at least one
  sibling carry it; every other decision is left out of the fit.

Everything here is a pure function of arrays, in "final" units: the score side is
the normalised final score, before any per-state offset (the ``gain`` target
subtracts the score so far, see :mod:`routers.learned.dataset`). Model estimates
are passed in; the caller fits and re-fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TARGET_KINDS = ("mc", "td", "fqi", "advantage", "dr", "paired")
BOOTSTRAPPED = ("td", "fqi", "dr")


@dataclass(frozen=True)
class EpisodeReturns:
    """One logged episode in target units."""

    final: float  # the terminal reward: normalised final score
    costs: np.ndarray  # (T,) normalised cost of each turn (error cost included)
    actions: np.ndarray  # (T,) index of the model that answered each turn
    propensities: np.ndarray  # (T,) the logging policy's probability of that model

    def __len__(self) -> int:
        return len(self.costs)


def monte_carlo(episode: EpisodeReturns) -> tuple[np.ndarray, np.ndarray]:
    """(score, cost-to-go) per turn: the final score, and the cost from the turn (inclusive) to the end."""
    costs = np.asarray(episode.costs, dtype=np.float64)
    return np.full(len(costs), float(episode.final)), np.cumsum(costs[::-1])[::-1]


def td_lambda(
    episode: EpisodeReturns, q_score: np.ndarray, q_cost: np.ndarray, lam_td: float
) -> tuple[np.ndarray, np.ndarray]:
    """TD(lambda) returns of the logged policy.

    ``q_score[t]``, ``q_cost[t]`` are the model's estimates at turn t for the model
    logged there. G_T-1 is the terminal outcome; before it
    G_t = c_t + (1 - lambda) * Q(s_t+1, a_t+1) + lambda * G_t+1 (no score reward before the end).
    """
    if not 0.0 <= lam_td <= 1.0:
        raise ValueError(f"td_lambda must be in [0, 1], got {lam_td}")
    costs = np.asarray(episode.costs, dtype=np.float64)
    n = len(costs)
    score, cost = np.empty(n), np.empty(n)
    score[-1], cost[-1] = float(episode.final), costs[-1]
    for t in range(n - 2, -1, -1):
        score[t] = (1.0 - lam_td) * q_score[t + 1] + lam_td * score[t + 1]
        cost[t] = costs[t] + (1.0 - lam_td) * q_cost[t + 1] + lam_td * cost[t + 1]
    return score, cost


def greedy_models(q_score: np.ndarray, q_cost: np.ndarray, lam: float) -> np.ndarray:
    """Per state, the model a router at ``lam`` picks (ties go to the first, as in routing)."""
    return np.argmax(np.asarray(q_score) - lam * np.asarray(q_cost), axis=1)


def fitted_q(
    episode: EpisodeReturns, q_score: np.ndarray, q_cost: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-step targets from the lambda-greedy next-state value; ``q_*`` are (T, models) estimates per state."""
    costs = np.asarray(episode.costs, dtype=np.float64)
    n = len(costs)
    greedy = greedy_models(q_score, q_cost, lam)
    score, cost = np.empty(n), np.empty(n)
    score[-1], cost[-1] = float(episode.final), costs[-1]
    for t in range(n - 1):
        score[t] = q_score[t + 1, greedy[t + 1]]
        cost[t] = costs[t] + q_cost[t + 1, greedy[t + 1]]
    return score, cost


def doubly_robust(
    episode: EpisodeReturns, q_score: np.ndarray, q_cost: np.ndarray, lam: float, clip: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-decision doubly robust estimates of the lambda-greedy policy's value after each logged decision.

    G_t = c_t + V(s_t+1) + rho_t+1 * (G_t+1 - Q(s_t+1, a_t+1)), V(s) = Q(s, greedy(s)),
    rho = [a = greedy(s)] / propensity, clipped at ``clip``; G_T-1 is the terminal outcome.
    """
    costs = np.asarray(episode.costs, dtype=np.float64)
    propensities = np.asarray(episode.propensities, dtype=np.float64)
    if np.any(propensities <= 0):
        raise ValueError("propensities must be positive")
    n = len(costs)
    greedy = greedy_models(q_score, q_cost, lam)
    actions = np.asarray(episode.actions, dtype=np.int64)
    rho = np.minimum((actions == greedy) / propensities, clip)
    score, cost = np.empty(n), np.empty(n)
    score[-1], cost[-1] = float(episode.final), costs[-1]
    for t in range(n - 2, -1, -1):
        nxt, logged, best = t + 1, actions[t + 1], greedy[t + 1]
        score[t] = q_score[nxt, best] + rho[nxt] * (score[nxt] - q_score[nxt, logged])
        cost[t] = costs[t] + q_cost[nxt, best] + rho[nxt] * (cost[nxt] - q_cost[nxt, logged])
    return score, cost


def advantage(values: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Targets minus the state-value baseline of the same states."""
    return np.asarray(values, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)


def paired(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each value minus the mean of the values of its group (the siblings of one branch point, itself
    included); a row without a group (None) gets NaN."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(len(values), np.nan)
    members: dict[object, list[int]] = {}
    for row, group in enumerate(groups):
        if group is not None:
            members.setdefault(group, []).append(row)
    for rows in members.values():
        out[rows] = values[rows] - values[rows].mean()
    return out
