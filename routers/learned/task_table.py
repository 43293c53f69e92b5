"""Per (task, model) outcomes pooled over every logged episode of a task, shrunk towards the model's mean.

One episode's return is mostly luck: the diagnostics found a per-decision score head explaining
about 3% of held-out variance. Yet the pools specialise by task (on paper6's train split a cheap
model scores 85 on one task type where the strongest scores 48), and the mean over all of a task's
episodes that a model opened is the least noisy estimate of that the logs allow. Each episode
counts once, through its opening decision, so a long episode weighs no more than a short one.
``weight`` is the prior, in episodes, of the model's mean over all tasks: a cell with few episodes
leans on it. ``episode-task`` routes on the table; ``mtrouter-task`` fits its Q-network on what
the table leaves unexplained.

A task is the public label a benchmark gives an episode's task (what the agent is told it is
doing); a task the table never saw reads each model's mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHT_GRID = (0.5, 2.0, 8.0, 32.0)  # prior weights, in episodes, chosen from on val
DEFAULT_WEIGHT = 2.0


@dataclass
class TaskTable:
    tasks: list[str]
    sums: np.ndarray  # (tasks, models, 2): summed (score, cost) of the episodes a model opened
    counts: np.ndarray  # (tasks, models): how many
    means: np.ndarray  # (models, 2): each model's mean over all tasks (the overall mean where it opened none)
    weight: float = DEFAULT_WEIGHT

    @classmethod
    def fit(
        cls,
        task: np.ndarray,
        model_index: np.ndarray,
        outcomes: np.ndarray,
        n_models: int,
        weight: float = DEFAULT_WEIGHT,
    ) -> TaskTable:
        """``task``, ``model_index`` and ``outcomes`` (n, 2) of one opening decision per episode."""
        tasks = sorted({str(t) for t in task})
        rows = np.array([tasks.index(str(t)) for t in task], dtype=np.int64)
        outcomes = np.asarray(outcomes, dtype=np.float64)
        sums = np.zeros((len(tasks), n_models, 2))
        counts = np.zeros((len(tasks), n_models))
        np.add.at(sums, (rows, model_index), outcomes)
        np.add.at(counts, (rows, model_index), 1.0)
        per_model = counts.sum(axis=0)
        overall = outcomes.mean(axis=0) if len(outcomes) else np.zeros(2)
        means = np.where(
            per_model[:, None] > 0, sums.sum(axis=0) / np.maximum(per_model, 1)[:, None], overall
        )
        return cls(tasks, sums, counts, means, weight)

    def rows_of(self, labels: np.ndarray) -> np.ndarray:
        """Each label's row in the table, -1 for a task it never saw."""
        position = {t: i for i, t in enumerate(self.tasks)}
        return np.array([position.get(str(t), -1) for t in labels], dtype=np.int64)

    def lookup(self, rows: np.ndarray, models: list[int]) -> np.ndarray:
        """``(len(rows), len(models), 2)`` shrunk means; a row of -1 (unseen task) reads the model means."""
        rows = np.asarray(rows, dtype=np.int64)
        seen = rows >= 0
        safe = np.where(seen, rows, 0)
        out = np.empty((len(rows), len(models), 2))
        for j, m in enumerate(models):
            count = np.where(seen, self.counts[safe, m], 0.0)[:, None]
            total = np.where(seen[:, None], self.sums[safe, m], 0.0) + self.weight * self.means[m]
            # A cell no episode reached, with no prior weight: the model's mean, not 0 / 0.
            out[:, j] = np.where(
                count + self.weight > 0, total / np.maximum(count + self.weight, 1e-12), self.means[m]
            )
        return out

    def logged(self, rows: np.ndarray, model_index: np.ndarray) -> np.ndarray:
        """``(n, 2)``: the shrunk mean of each decision's own (task, model) cell."""
        out = np.empty((len(rows), 2))
        for m in np.unique(model_index):
            mine = model_index == m
            out[mine] = self.lookup(rows[mine], [int(m)])[:, 0]
        return out

    def choose_weight(
        self, rows: np.ndarray, model_index: np.ndarray, score: np.ndarray, sample_weight: np.ndarray
    ) -> float:
        """Set ``weight`` to the grid value whose predicted score of held-out openings has the least squared error."""
        errors = {}
        for weight in WEIGHT_GRID:
            self.weight = weight
            predicted = self.logged(rows, model_index)[:, 0]
            errors[weight] = float(np.average((predicted - score) ** 2, weights=sample_weight))
        self.weight = min(errors, key=errors.get)
        return self.weight

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}sums": self.sums, f"{prefix}counts": self.counts, f"{prefix}means": self.means}

    @classmethod
    def from_arrays(cls, tasks: list[str], weight: float, arrays, prefix: str = "") -> TaskTable:
        return cls(
            list(tasks),
            arrays[f"{prefix}sums"],
            arrays[f"{prefix}counts"],
            arrays[f"{prefix}means"],
            float(weight),
        )


def cross_fitted_table_scores(
    task: np.ndarray,
    model_index: np.ndarray,
    final_score: np.ndarray,
    opening: np.ndarray,
    folds: np.ndarray,
    n_models: int,
    weight: float,
) -> np.ndarray:
    """Each decision's table score from a table fitted on the openings of the *other* folds' episodes, so an
    episode's own luck is not subtracted from its own targets."""
    out = np.empty(len(task))
    for k in np.unique(folds):
        rest = opening & (folds != k)
        held = folds == k
        table = TaskTable.fit(
            task[rest], model_index[rest], np.stack([final_score[rest]] * 2, axis=1), n_models, weight
        )
        out[held] = table.logged(table.rows_of(task[held]), model_index[held])[:, 0]
    return out


@dataclass
class NearestTasks:
    """The table row of a history vector by the vote of its ``k`` nearest training decisions (cosine).

    Why neighbours and not the task's mean opening vector: a history drifts from its opening as
    observations pile up. On paper6's Stage A logs (13 tasks, a fifth of the episodes held out) the
    nearest mean opening names the right task for 91% of openings but 77-83% of later decisions; the
    vote of the 5 nearest training decisions for 93-96% at every turn."""

    vectors: np.ndarray  # (n, dim) unit vectors of training decisions
    rows: np.ndarray  # (n,) their table rows
    k: int = 5

    @classmethod
    def sample(
        cls, embeddings: np.ndarray, rows: np.ndarray, seed: int, limit: int = 8192, k: int = 5
    ) -> NearestTasks:
        """At most ``limit`` decisions, drawn without replacement, so a checkpoint and a lookup stay small."""
        keep = np.arange(len(rows))
        if len(keep) > limit:
            keep = np.sort(np.random.default_rng(seed).choice(len(keep), limit, replace=False))
        return cls(unit_rows(embeddings[keep]), np.asarray(rows)[keep].astype(np.int64), k)

    def find(self, embeddings: np.ndarray) -> np.ndarray:
        similarity = unit_rows(embeddings) @ self.vectors.T
        k = min(self.k, similarity.shape[1])
        nearest = np.argsort(-similarity, axis=1)[:, :k]  # nearest first
        votes = self.rows[nearest]
        out = np.empty(len(votes), dtype=np.int64)
        for i, row in enumerate(votes):
            labels, counts = np.unique(row, return_counts=True)
            top = labels[counts == counts.max()]
            out[i] = next(v for v in row if v in top)  # a tie goes to the nearer neighbour's task
        return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
