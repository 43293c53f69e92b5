"""Two classic value models that the Q-network must beat: per-model ridge and per-cluster means.

Both keep one set of parameters per model of the training pool, so unlike the
MTRouter they cannot score a model added later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from harness.errors import ConfigError
from harness.types import ModelCard
from routers.learned.dataset import TrainingSet
from routers.learned.value_model import ValueModel, save_array_file
from routers.learned.value_router import ValueRouter

ALPHA_GRID = (0.1, 1.0, 10.0, 100.0)
DEFAULT_ALPHA = 1.0
RIDGE_FILE = "ridge.npz"
CLUSTER_FILE = "clusters.npz"


def _targets(data: TrainingSet) -> np.ndarray:
    return np.stack([data.score, data.cost], axis=1).astype(np.float64)


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (weights[:, None] * values).sum(axis=0) / weights.sum()


def _weighted_mse(predicted: np.ndarray, actual: np.ndarray, weights: np.ndarray) -> float:
    return float((weights[:, None] * (predicted - actual) ** 2).sum() / weights.sum())


class RidgeModel(ValueModel):
    """Per model, a weighted ridge regression from the history vector to (score, cost-to-go)."""

    kind = "ridge"

    def __init__(self, alpha: float | None = None, min_samples: int = 2, seed: int = 0):
        super().__init__()
        self.alpha = alpha  # None: chosen from ALPHA_GRID on the validation set
        self.min_samples = min_samples
        self.seed = seed  # closed form; kept so every kind takes the same training arguments
        self.chosen_alpha = DEFAULT_ALPHA
        self.coef: np.ndarray | None = None  # (models, 2, dim)
        self.intercept: np.ndarray | None = None  # (models, 2)

    def fit_details(self) -> dict[str, Any]:
        return {"alpha": self.chosen_alpha}

    def _solve(self, data: TrainingSet, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        x, y, w = data.embeddings.astype(np.float64), _targets(data), data.weight.astype(np.float64)
        dim, n_models = x.shape[1], len(self.cards)
        fallback = _weighted_mean(y, w)
        coef = np.zeros((n_models, 2, dim))
        intercept = np.tile(fallback, (n_models, 1))
        for m in range(n_models):
            rows = data.model_index == m
            if rows.sum() < self.min_samples:
                continue
            xm, ym, wm = x[rows], y[rows], w[rows]
            x_mean, y_mean = _weighted_mean(xm, wm), _weighted_mean(ym, wm)
            xc, yc = xm - x_mean, ym - y_mean
            gram = xc.T @ (wm[:, None] * xc) + alpha * np.eye(dim)
            beta = np.linalg.solve(gram, xc.T @ (wm[:, None] * yc))  # (dim, 2)
            coef[m] = beta.T
            intercept[m] = y_mean - x_mean @ beta
        return coef, intercept

    def _predict_chosen(self, data: TrainingSet, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        x = data.embeddings.astype(np.float64)
        return np.einsum("nd,ntd->nt", x, coef[data.model_index]) + intercept[data.model_index]

    def fit(
        self, train: TrainingSet, val: TrainingSet | None = None, init_from: ValueModel | None = None
    ) -> RidgeModel:
        """Closed form, so a warm start has nothing to carry over: refitting on all the data is exact."""
        if init_from is not None and not isinstance(init_from, RidgeModel):
            raise ConfigError(f"cannot warm-start a ridge router from a {init_from.kind} checkpoint")
        self.adopt(train)
        if self.alpha is not None or val is None or not len(val):
            self.chosen_alpha = self.alpha if self.alpha is not None else DEFAULT_ALPHA
            self.coef, self.intercept = self._solve(train, self.chosen_alpha)
            return self
        best = None
        for alpha in ALPHA_GRID:
            coef, intercept = self._solve(train, alpha)
            loss = _weighted_mse(self._predict_chosen(val, coef, intercept), _targets(val), val.weight)
            if best is None or loss < best[0]:
                best = (loss, alpha, coef, intercept)
        assert best is not None
        _, self.chosen_alpha, self.coef, self.intercept = best
        return self

    def predict(self, embeddings: np.ndarray, cards: list[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        if self.coef is None or self.intercept is None:
            raise ConfigError("ridge model is not fitted")
        rows = np.array(self.model_positions(cards), dtype=np.int64)  # raises for an unseen model
        x = np.asarray(embeddings, dtype=np.float64)
        out = np.einsum("nd,mtd->nmt", x, self.coef[rows]) + self.intercept[rows][None]
        return out[..., 0], out[..., 1]

    def _save_state(self, directory: Path) -> dict[str, Any]:
        assert self.coef is not None and self.intercept is not None
        save_array_file(directory / RIDGE_FILE, coef=self.coef, intercept=self.intercept)
        return {"chosen_alpha": self.chosen_alpha}

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        self.chosen_alpha = float(state["chosen_alpha"])
        with np.load(directory / RIDGE_FILE) as arrays:
            self.coef, self.intercept = arrays["coef"], arrays["intercept"]


class ClusterModel(ValueModel):
    """KMeans over history vectors; per cluster and model, the mean outcome shrunk towards the model's mean.

    A cell with total weight n gets (n * cell mean + prior_strength * model mean)
    / (n + prior_strength), so a sparsely visited cell falls back to what the
    model does on average.
    """

    kind = "cluster"

    def __init__(self, k: int = 16, prior_strength: float = 5.0, seed: int = 0):
        super().__init__()
        if k < 1 or prior_strength < 0:
            raise ConfigError(
                f"cluster router needs k >= 1 and prior_strength >= 0, got k={k}, prior_strength={prior_strength}"
            )
        self.k = k
        self.prior_strength = prior_strength
        self.seed = seed
        self.centroids: np.ndarray | None = None  # (clusters, dim)
        self.tables: np.ndarray | None = None  # (clusters, models, 2)

    def fit_details(self) -> dict[str, Any]:
        return {"clusters": 0 if self.centroids is None else len(self.centroids)}

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        assert self.centroids is not None
        x = np.asarray(embeddings, dtype=np.float64)
        distances = (self.centroids**2).sum(axis=1)[None, :] - 2.0 * x @ self.centroids.T
        return distances.argmin(axis=1)

    def fit(
        self, train: TrainingSet, val: TrainingSet | None = None, init_from: ValueModel | None = None
    ) -> ClusterModel:
        self.adopt(train)
        x = train.embeddings.astype(np.float64)
        k = min(self.k, len(x))
        kmeans = KMeans(n_clusters=k, n_init=4, random_state=self.seed)
        if init_from is not None:
            if not isinstance(init_from, ClusterModel):
                raise ConfigError(f"cannot warm-start a cluster router from a {init_from.kind} checkpoint")
            if init_from.centroids is not None and init_from.centroids.shape == (k, x.shape[1]):
                # Starting from the old centroids keeps cluster identities stable across retraining.
                kmeans = KMeans(n_clusters=k, init=init_from.centroids, n_init=1, random_state=self.seed)
        self.centroids = kmeans.fit(x).cluster_centers_
        clusters = self.assign(x)
        y, w = _targets(train), train.weight.astype(np.float64)
        overall = _weighted_mean(y, w)
        self.tables = np.zeros((k, len(self.cards), 2))
        for m in range(len(self.cards)):
            of_model = train.model_index == m
            prior = _weighted_mean(y[of_model], w[of_model]) if of_model.any() else overall
            for c in range(k):
                rows = of_model & (clusters == c)
                mass = w[rows].sum()
                total = (w[rows][:, None] * y[rows]).sum(axis=0)
                denominator = mass + self.prior_strength
                self.tables[c, m] = (
                    (total + self.prior_strength * prior) / denominator if denominator > 0 else prior
                )
        return self

    def predict(self, embeddings: np.ndarray, cards: list[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        if self.tables is None:
            raise ConfigError("cluster model is not fitted")
        rows = np.array(self.model_positions(cards), dtype=np.int64)  # raises for an unseen model
        out = self.tables[self.assign(embeddings)][:, rows]
        return out[..., 0], out[..., 1]

    def _save_state(self, directory: Path) -> dict[str, Any]:
        assert self.centroids is not None and self.tables is not None
        save_array_file(directory / CLUSTER_FILE, centroids=self.centroids, tables=self.tables)
        return {}

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        with np.load(directory / CLUSTER_FILE) as arrays:
            self.centroids, self.tables = arrays["centroids"], arrays["tables"]


class RidgeRouter(ValueRouter):
    """Registry name ``ridge``."""

    name = "ridge"
    model_class = RidgeModel


class ClusterRouter(ValueRouter):
    """Registry name ``cluster``."""

    name = "cluster"
    model_class = ClusterModel
