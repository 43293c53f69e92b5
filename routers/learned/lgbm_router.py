"""Gradient-boosted trees over [history vector (PCA-reduced), model metadata], one booster per target.

Trees need few dimensions to split on, so the history vector is reduced with a
PCA fitted on the training histories. The model enters only through its
metadata features, so a model added to the pool later is scored too
(with ``allow_new_models``), as with the MTRouter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.decomposition import PCA

from harness.errors import ConfigError
from harness.types import ModelCard
from routers.learned.dataset import TrainingSet
from routers.learned.model_features import FeatureScaler
from routers.learned.value_model import ValueModel, save_array_file
from routers.learned.value_router import ValueRouter

TARGETS = ("score", "cost")
PCA_FILE = "pca.npz"


class LightGBMModel(ValueModel):
    kind = "lgbm"
    supports_new_models = True

    def __init__(
        self,
        pca_dims: int | None = 16,
        n_estimators: int = 400,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 50,
        feature_fraction: float = 0.9,
        l2_regularisation: float = 1.0,
        interactions: bool = True,
        early_stopping_rounds: int = 30,
        seed: int = 0,
        n_jobs: int = 1,
    ):
        super().__init__()
        self.pca_dims = pca_dims
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.l2_regularisation = l2_regularisation
        self.interactions = interactions
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.n_jobs = n_jobs
        self.boosters: dict[str, lgb.Booster] = {}
        self.scaler: FeatureScaler | None = None
        self.pca_mean: np.ndarray | None = None
        self.pca_components: np.ndarray | None = None  # (k, dim); None means no reduction

    def fit_details(self) -> dict[str, Any]:
        return {f"{t}_trees": b.num_trees() for t, b in self.boosters.items()}

    def _params(self, threads: int) -> dict[str, Any]:
        return {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.l2_regularisation,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": threads,
            "verbose": -1,
        }

    def _reduce(self, embeddings: np.ndarray) -> np.ndarray:
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if self.pca_components is None:
            return embeddings
        return (embeddings - self.pca_mean) @ self.pca_components.T

    def _columns(self, reduced: np.ndarray, model_features: np.ndarray) -> np.ndarray:
        """[history, model, history x model]: the products let one split express a history-model interaction."""
        columns = [reduced, model_features]
        if self.interactions:
            products = reduced[:, :, None] * model_features[:, None, :]
            columns.append(products.reshape(len(reduced), -1))
        return np.hstack(columns)

    def _rows(self, embeddings: np.ndarray, model_features: np.ndarray) -> np.ndarray:
        """One row per (history, model) pair, histories major."""
        reduced = self._reduce(embeddings)
        n, m = len(reduced), len(model_features)
        return self._columns(np.repeat(reduced, m, axis=0), np.tile(model_features, (n, 1)))

    def _training_rows(self, data: TrainingSet) -> np.ndarray:
        assert self.scaler is not None
        features = self.scaler.transform(self.cards)
        return self._columns(self._reduce(data.embeddings), features[data.model_index])

    def fit(
        self, train: TrainingSet, val: TrainingSet | None = None, init_from: ValueModel | None = None
    ) -> LightGBMModel:
        self.adopt(train)
        previous = None
        if init_from is not None:
            if not isinstance(init_from, LightGBMModel):
                raise ConfigError(f"cannot warm-start an lgbm router from a {init_from.kind} checkpoint")
            # Continued boosting needs the same input columns, so the old reduction and scaling are kept.
            previous = init_from
            self.scaler, self.pca_mean, self.pca_components = (
                previous.scaler,
                previous.pca_mean,
                previous.pca_components,
            )
        else:
            self.scaler = FeatureScaler.fit(self.cards)
            dim = train.embeddings.shape[1]
            if self.pca_dims and self.pca_dims < min(dim, len(train)):
                pca = PCA(n_components=self.pca_dims, random_state=self.seed).fit(train.embeddings)
                self.pca_mean, self.pca_components = pca.mean_, pca.components_
            else:
                self.pca_mean = self.pca_components = None
        rows = self._training_rows(train)
        val_rows = self._training_rows(val) if val is not None and len(val) else None
        for target in TARGETS:
            dataset = lgb.Dataset(rows, getattr(train, target), weight=train.weight, free_raw_data=True)
            valid_sets, callbacks = [], []
            if val_rows is not None:
                assert val is not None
                valid_sets = [
                    lgb.Dataset(val_rows, getattr(val, target), weight=val.weight, reference=dataset)
                ]
                callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
            booster = lgb.train(
                self._params(self.n_jobs),
                dataset,
                num_boost_round=self.n_estimators,
                valid_sets=valid_sets,
                callbacks=callbacks,
                init_model=previous.boosters[target] if previous else None,
            )
            # Round-trip through text so that the fitted model predicts exactly as a loaded one.
            best = booster.best_iteration if booster.best_iteration > 0 else None
            self.boosters[target] = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        return self

    def predict(self, embeddings: np.ndarray, cards: list[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        if not self.boosters or self.scaler is None:
            raise ConfigError("lgbm model is not fitted")
        self.model_positions(cards)  # raises for an unseen model unless allowed
        rows = self._rows(embeddings, self.scaler.transform(cards))
        n, m = len(embeddings), len(cards)
        score, cost = (self.boosters[t].predict(rows, num_threads=1).reshape(n, m) for t in TARGETS)
        return score, cost

    def _save_state(self, directory: Path) -> dict[str, Any]:
        assert self.scaler is not None
        for target, booster in self.boosters.items():
            path = directory / f"{target}.lgbm.txt"
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(booster.model_to_string())
            os.replace(tmp, path)
        if self.pca_components is not None:
            save_array_file(directory / PCA_FILE, mean=self.pca_mean, components=self.pca_components)
        return {"scaler": self.scaler.to_dict(), "pca": self.pca_components is not None}

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        self.scaler = FeatureScaler.from_dict(state["scaler"])
        self.boosters = {t: lgb.Booster(model_str=(directory / f"{t}.lgbm.txt").read_text()) for t in TARGETS}
        if state["pca"]:
            with np.load(directory / PCA_FILE) as arrays:
                self.pca_mean, self.pca_components = arrays["mean"], arrays["components"]


class LightGBMRouter(ValueRouter):
    """Registry name ``lgbm``."""

    name = "lgbm"
    model_class = LightGBMModel
