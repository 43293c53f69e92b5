"""Episode-level routers: one decision at turn 0 from the task text, kept for the whole episode.

These are the paper's single-turn baselines (RouterDC, EmbedLLM, AvengersPro pick one
model per query): they see the task description and the opening observation, choose
the candidate with the best predicted score minus ``lam`` times its predicted cost,
and that model answers every turn. Three predictors, each trained by ``harness train``
from the same logged runs as the per-turn routers:

- ``episode-knn``: per model, the mean outcome of the ``k`` training episodes that opened
  with that model whose opening vectors are nearest to the query (cosine), shrunk towards
  the model's mean; ``k`` is chosen on the validation episodes unless given.
- ``episode-task``: per task and model, the mean outcome of the training episodes of that task
  that opened with that model, shrunk towards the model's mean by a prior weight chosen on the
  validation episodes; a query is matched to the task whose mean opening vector is nearest (a
  task never trained on borrows the most similar one's table).
- ``episode-classifier``: per model, a logistic classifier of "this decision's episode
  ended above the median score", turned into an expected score with the model's mean
  score above and below the median; the cost is the model's mean episode cost.

All three learn from each logged episode's first decision only (its model, its opening vector,
the episode's score and cost): that is the decision an episode-level router makes, and
neighbours counted in episodes are independent samples. Neighbours counted in decisions
were not: the 25 nearest decisions of a model were mostly consecutive turns of one or two
episodes, so the estimate rested on a couple of noisy returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from harness.errors import ConfigError
from harness.types import Decision, ModelCard, TurnState
from routers.base import kept_model
from routers.learned.dataset import TrainingSet
from routers.learned.task_table import DEFAULT_WEIGHT, TaskTable, unit_rows
from routers.learned.value_model import ValueModel, save_array_file
from routers.learned.value_router import ValueRouter

KNN_FILE = "episode_knn.npz"
K_GRID = (5, 10, 25, 50)
DEFAULT_K = 25
CLASSIFIER_FILE = "episode_classifier.npz"
TASK_FILE = "episode_task.npz"


def first_decisions(data: TrainingSet) -> TrainingSet:
    """One row per logged episode: its turn-0 decision."""
    if data.turn is None:
        raise ConfigError("episode-level models need each decision's turn; this training set records none")
    return data.rows(np.flatnonzero(data.turn == 0))


class EpisodeKNNModel(ValueModel):
    kind = "episode-knn"

    def __init__(self, k: int | None = None, prior_strength: float = 2.0, seed: int = 0):
        super().__init__()
        if (k is not None and k < 1) or prior_strength < 0:
            raise ConfigError(f"episode-knn needs k >= 1 and prior_strength >= 0, got k={k}")
        self.k, self.prior_strength, self.seed = k, prior_strength, seed  # k None: chosen from K_GRID on val
        self.chosen_k = k if k is not None else DEFAULT_K
        self.vectors: np.ndarray | None = None  # (n, dim) unit vectors
        self.model_index: np.ndarray | None = None
        self.targets: np.ndarray | None = None  # (n, 2): score, cost
        self.priors: np.ndarray | None = None  # (models, 2)

    def fit_details(self) -> dict[str, Any]:
        return {"k": self.chosen_k, "episodes": 0 if self.vectors is None else len(self.vectors)}

    def fit(
        self, train: TrainingSet, val: TrainingSet | None = None, init_from: ValueModel | None = None
    ) -> EpisodeKNNModel:
        """A lazy learner: the training episodes are the model; val only chooses ``k``."""
        self.adopt(train)
        train = first_decisions(train)
        self.vectors = unit_rows(train.embeddings)
        self.model_index = train.model_index.astype(np.int64)
        self.targets = np.stack([train.score, train.cost], axis=1).astype(np.float64)
        overall = self.targets.mean(axis=0)
        self.priors = np.array(
            [
                self.targets[self.model_index == m].mean(axis=0) if (self.model_index == m).any() else overall
                for m in range(len(self.cards))
            ]
        )
        held_out = first_decisions(val) if val is not None else None
        if self.k is not None or held_out is None or not len(held_out):
            return self
        errors = {}
        for k in K_GRID:
            self.chosen_k = k
            score, _ = self.predict(held_out.embeddings, self.cards)
            predicted = score[np.arange(len(held_out)), held_out.model_index]
            errors[k] = float(np.average((predicted - held_out.score) ** 2, weights=held_out.weight))
        self.chosen_k = min(errors, key=errors.get)
        return self

    def predict(self, embeddings: np.ndarray, cards: list[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        if self.vectors is None or self.model_index is None or self.targets is None or self.priors is None:
            raise ConfigError("episode-knn model is not fitted")
        rows = self.model_positions(cards)
        similarity = unit_rows(embeddings) @ self.vectors.T  # (queries, n)
        out = np.zeros((len(similarity), len(rows), 2))
        for j, m in enumerate(rows):
            mine = np.flatnonzero(self.model_index == m)
            if not len(mine):
                out[:, j] = self.priors[m]
                continue
            k = min(self.chosen_k, len(mine))
            nearest = mine[np.argpartition(-similarity[:, mine], k - 1, axis=1)[:, :k]]
            total = self.targets[nearest].sum(axis=1) + self.prior_strength * self.priors[m]
            out[:, j] = total / (k + self.prior_strength)
        return out[..., 0], out[..., 1]

    def _save_state(self, directory: Path) -> dict[str, Any]:
        assert self.vectors is not None
        save_array_file(
            directory / KNN_FILE,
            vectors=self.vectors,
            model_index=self.model_index,
            targets=self.targets,
            priors=self.priors,
        )
        return {"chosen_k": self.chosen_k}

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        self.chosen_k = int(state["chosen_k"])
        with np.load(directory / KNN_FILE) as a:
            self.vectors, self.model_index = a["vectors"], a["model_index"]
            self.targets, self.priors = a["targets"], a["priors"]


class EpisodeTaskModel(ValueModel):
    """Why a table: a pool's skill varies by task, and a logged opening's nearest neighbours
    (episode-knn) mix tasks, so with a few episodes per task and model their mean blurs exactly the
    differences a router needs (:mod:`routers.learned.task_table`)."""

    kind = "episode-task"

    def __init__(self, prior_strength: float | None = None, seed: int = 0):
        super().__init__()
        if prior_strength is not None and prior_strength < 0:
            raise ConfigError(f"episode-task needs prior_strength >= 0, got {prior_strength}")
        self.prior_strength, self.seed = prior_strength, seed  # prior_strength None: chosen on val
        self.table: TaskTable | None = None
        self.centroids: np.ndarray | None = None  # (tasks, dim) unit mean opening vectors

    @property
    def chosen_prior(self) -> float:
        return self.table.weight if self.table is not None else (self.prior_strength or DEFAULT_WEIGHT)

    @property
    def tasks(self) -> list[str]:
        return self.table.tasks if self.table is not None else []

    def fit_details(self) -> dict[str, Any]:
        episodes = 0 if self.table is None else int(round(float(self.table.counts.sum())))
        return {"prior_strength": self.chosen_prior, "tasks": len(self.tasks), "episodes": episodes}

    def fit(
        self, train: TrainingSet, val: TrainingSet | None = None, init_from: ValueModel | None = None
    ) -> EpisodeTaskModel:
        """Counts and sums per (task, model); val only chooses the prior weight."""
        self.adopt(train)
        train = first_decisions(train)
        if train.task is None:
            raise ConfigError("episode-task needs each decision's task; this training set records none")
        outcomes = np.stack([train.score, train.cost], axis=1)
        weight = DEFAULT_WEIGHT if self.prior_strength is None else self.prior_strength
        self.table = TaskTable.fit(train.task, train.model_index, outcomes, len(self.cards), weight)
        rows = self.table.rows_of(train.task)
        vectors = unit_rows(train.embeddings)
        self.centroids = unit_rows(
            np.stack([vectors[rows == i].mean(axis=0) for i in range(len(self.tasks))])
        )
        held_out = first_decisions(val) if val is not None else None
        if self.prior_strength is None and held_out is not None and len(held_out):
            self.table.choose_weight(
                self.nearest_task(held_out.embeddings), held_out.model_index, held_out.score, held_out.weight
            )
        return self

    def nearest_task(self, embeddings: np.ndarray) -> np.ndarray:
        """Per query, the index of the task whose mean opening vector is nearest (cosine)."""
        if self.centroids is None:
            raise ConfigError("episode-task model is not fitted")
        return np.argmax(unit_rows(embeddings) @ self.centroids.T, axis=1)

    def predict(self, embeddings: np.ndarray, cards: list[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        if self.table is None:
            raise ConfigError("episode-task model is not fitted")
        out = self.table.lookup(self.nearest_task(embeddings), self.model_positions(cards))
        return out[..., 0], out[..., 1]

    def _save_state(self, directory: Path) -> dict[str, Any]:
        assert self.table is not None and self.centroids is not None
        table = self.table
        save_array_file(
            directory / TASK_FILE,
            centroids=self.centroids,
            sums=table.sums,
            counts=table.counts,
            priors=table.means,
        )
        return {"chosen_prior": table.weight, "tasks": table.tasks}

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        with np.load(directory / TASK_FILE) as a:
            self.centroids = a["centroids"]
            self.table = TaskTable(
                list(state["tasks"]), a["sums"], a["counts"], a["priors"], float(state["chosen_prior"])
            )


class EpisodeClassifierModel(ValueModel):
    kind = "episode-classifier"

    def __init__(self, c: float = 1.0, seed: int = 0):
        super().__init__()
        self.c, self.seed = c, seed
        self.coef: np.ndarray | None = None  # (models, dim)
        self.intercept: np.ndarray | None = None  # (models,)
        self.outcomes: np.ndarray | None = None  # (models, 3): score above, score below the median, cost

    def fit(
        self, train: TrainingSet, val: TrainingSet | None = None, init_from: ValueModel | None = None
    ) -> EpisodeClassifierModel:
        self.adopt(train)
        train = first_decisions(train)
        x = unit_rows(train.embeddings).astype(np.float64)
        median = float(np.median(train.score))
        label = train.score > median
        n_models, dim = len(self.cards), x.shape[1]
        self.coef, self.intercept = np.zeros((n_models, dim)), np.zeros(n_models)
        self.outcomes = np.zeros((n_models, 3))
        for m in range(n_models):
            rows = train.model_index == m
            y, s = label[rows], train.score[rows]
            base = float(y.mean()) if rows.any() else 0.5
            self.outcomes[m] = (
                s[y].mean() if y.any() else median,
                s[~y].mean() if (~y).any() else median,
                train.cost[rows].mean() if rows.any() else train.cost.mean(),
            )
            if rows.any() and 0 < y.sum() < len(y):
                clf = LogisticRegression(C=self.c, max_iter=500, random_state=self.seed)
                clf.fit(x[rows], y, sample_weight=train.weight[rows])
                self.coef[m], self.intercept[m] = clf.coef_[0], clf.intercept_[0]
            else:  # one class only: a constant classifier at the observed rate
                self.intercept[m] = np.log(max(base, 1e-6) / max(1 - base, 1e-6))
        return self

    def predict(self, embeddings: np.ndarray, cards: list[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        if self.coef is None or self.intercept is None or self.outcomes is None:
            raise ConfigError("episode-classifier model is not fitted")
        rows = np.array(self.model_positions(cards), dtype=np.int64)
        logits = unit_rows(embeddings).astype(np.float64) @ self.coef[rows].T + self.intercept[rows]
        p = 1.0 / (1.0 + np.exp(-logits))
        above, below, cost = self.outcomes[rows].T
        return p * above + (1 - p) * below, np.broadcast_to(cost, p.shape).copy()

    def _save_state(self, directory: Path) -> dict[str, Any]:
        assert self.coef is not None
        save_array_file(
            directory / CLASSIFIER_FILE, coef=self.coef, intercept=self.intercept, outcomes=self.outcomes
        )
        return {}

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        with np.load(directory / CLASSIFIER_FILE) as a:
            self.coef, self.intercept, self.outcomes = a["coef"], a["intercept"], a["outcomes"]


class EpisodeLevelRouter(ValueRouter):
    """Greedy at turn 0 over the task text and opening observation; that model answers every turn.

    After turn 0 the state's previous model is kept (a state without one, or whose previous
    model is not a candidate, is decided afresh), so the policy is a function of the state.
    """

    warm_startable = False

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        kept = kept_model(state)
        if kept is None:
            model, q = self.greedy(state)
            return Decision(model=model, propensity=1.0, scores=q)
        return Decision(model=kept, propensity=1.0)

    def probability_table(self, states: Sequence[TurnState]) -> np.ndarray:
        """Turn-0 states decided in one batch, the others keep their previous model."""
        kept = [kept_model(s) for s in states]
        table = np.zeros((len(states), len(states[0].candidates) if states else 0))
        fresh = [i for i, k in enumerate(kept) if k is None]
        if fresh:
            table[fresh] = super().probability_table([states[i] for i in fresh])
        for i, k in enumerate(kept):
            if k is not None:
                table[i, [c.name for c in states[i].candidates].index(k)] = 1.0
        return table


class EpisodeKNNRouter(EpisodeLevelRouter):
    """Registry name ``episode-knn``."""

    name = "episode-knn"
    model_class = EpisodeKNNModel


class EpisodeTaskRouter(EpisodeLevelRouter):
    """Registry name ``episode-task``."""

    name = "episode-task"
    model_class = EpisodeTaskModel


class EpisodeClassifierRouter(EpisodeLevelRouter):
    """Registry name ``episode-classifier``."""

    name = "episode-classifier"
    model_class = EpisodeClassifierModel
