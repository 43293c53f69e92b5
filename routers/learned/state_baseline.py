"""A state-value baseline for advantage targets: ridge regression from the history vector alone.

The baseline predicts (score, cost-to-go) from the state, whichever model
answers. Under sticky logging most of an episode is played by one model, so a
baseline fitted on an episode's own states learns that model's effect and
subtracting it would remove the very signal a router needs; the training
targets therefore use *cross-fitted* values, each episode's from a baseline
fitted on the other folds of episodes. The baseline fitted on all training
episodes is kept with the checkpoint and added back to every prediction, so
predictions stay on the return scale (the ranking of models does not depend on
it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHA = 10.0
DEFAULT_FOLDS = 5


def episode_folds(episode_index: np.ndarray, seed: int, folds: int = DEFAULT_FOLDS) -> np.ndarray:
    """Per row, the cross-fitting fold of its episode: whole episodes, dealt at random, so no fit sees the
    episode it is asked about."""
    episodes = np.unique(episode_index)
    fold_of = dict(
        zip(np.random.default_rng(seed).permutation(episodes), np.arange(len(episodes)) % folds, strict=True)
    )
    return np.array([fold_of[e] for e in episode_index])


@dataclass(frozen=True)
class StateBaseline:
    coef: np.ndarray  # (2, dim): score, cost
    intercept: np.ndarray  # (2,)

    @classmethod
    def fit(cls, embeddings: np.ndarray, score: np.ndarray, cost: np.ndarray, alpha: float = DEFAULT_ALPHA):
        x = np.asarray(embeddings, dtype=np.float64)
        y = np.stack([score, cost], axis=1).astype(np.float64)
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - x_mean, y - y_mean
        beta = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)  # (dim, 2)
        return cls(coef=beta.T, intercept=y_mean - x_mean @ beta)

    def predict(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.asarray(embeddings, dtype=np.float64) @ self.coef.T + self.intercept
        return out[:, 0], out[:, 1]


def cross_fitted(
    embeddings: np.ndarray,
    score: np.ndarray,
    cost: np.ndarray,
    episode_index: np.ndarray,
    seed: int = 0,
    folds: int = DEFAULT_FOLDS,
    alpha: float = DEFAULT_ALPHA,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's baseline from a fit on the other folds of episodes (all rows if there is one episode)."""
    if len(np.unique(episode_index)) < 2:
        return StateBaseline.fit(embeddings, score, cost, alpha).predict(embeddings)
    fold = episode_folds(episode_index, seed, folds)
    out_score, out_cost = np.empty(len(score)), np.empty(len(cost))
    for k in np.unique(fold):
        held, rest = fold == k, fold != k
        baseline = StateBaseline.fit(embeddings[rest], score[rest], cost[rest], alpha)
        out_score[held], out_cost[held] = baseline.predict(embeddings[held])
    return out_score, out_cost
