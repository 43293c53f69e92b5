"""A value model made of k fitted members of one family: their mean, their spread, and when to defer.

Two seeds of the same router agree on about a quarter of held-out decisions, so
a single member's argmax is partly noise. An ensemble predicts the mean of its
members (each trained on a bootstrap resample of the training episodes, or on
all of them with another seed) and exposes the standard deviation across
members. With ``defer_threshold`` set, a router whose members disagree by more
than that on the value (score - lam * cost) of the model it would pick routes
instead to the *strongest* model: the candidate with the highest predicted
score averaged over the training histories, i.e. the best single model by the
ensemble's own estimate.

The same container carries the state baseline of ``advantage`` targets
(:mod:`routers.learned.state_baseline`), added back to every prediction so
that predictions are returns whatever the targets were.

A checkpoint holds every member as a complete checkpoint of its family under
``member-<i>/``, and ``checkpoint.json`` of the family's kind with the members
listed in its state, so ``<Family>.load`` reads it like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.types import ModelCard
from routers.learned.dataset import TrainingSet
from routers.learned.state_baseline import StateBaseline
from routers.learned.value_model import MEMBERS_STATE, ValueModel, save_array_file

ENSEMBLE_MODES = ("bootstrap", "seeds")
BASELINE_FILE = "state_baseline.npz"
FALLBACK_SAMPLE = 4096  # training histories the strongest model is judged on


def member_dir(directory: Path, index: int) -> Path:
    return directory / f"member-{index}"


class EnsembleModel(ValueModel):
    """Mean of members' predictions plus the optional state baseline; see the module docstring."""

    def __init__(
        self,
        members: list[ValueModel] | None = None,
        member_class: type[ValueModel] | None = None,
        baseline: StateBaseline | None = None,
        mode: str = "seeds",
        defer_threshold: float | None = None,
        mean_scores: dict[str, float] | None = None,
    ):
        super().__init__()
        if mode not in ENSEMBLE_MODES:
            raise ConfigError(f"ensemble_mode must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
        if defer_threshold is not None and defer_threshold < 0:
            raise ConfigError(f"defer_threshold must be >= 0, got {defer_threshold}")
        self.members = list(members or [])
        if member_class is None:
            if not self.members:
                raise ConfigError("an ensemble needs members or the class of the members it will load")
            member_class = type(self.members[0])
        self.member_class = member_class
        self.kind = member_class.kind  # type: ignore[misc]
        self.supports_new_models = member_class.supports_new_models  # type: ignore[misc]
        self.baseline = baseline
        self.mode = mode
        self.defer_threshold = defer_threshold
        self.mean_scores = dict(mean_scores or {})
        if self.members:
            first = self.members[0]
            self.cards, self.stats, self.options, self.encoder = (
                first.cards,
                first.stats,
                first.options,
                first.encoder,
            )

    def get_params(self) -> dict[str, Any]:
        """The members' family hyperparameters (member 0's seed): what the checkpoint's family was built with.

        So a checkpoint of an ensemble records the same hyperparameters as one of its kind; the
        ensemble's own structure (members, mode, threshold) is in its state.
        """
        return self.members[0].get_params()

    def set_params(self, **params: Any) -> EnsembleModel:
        raise ConfigError(
            "an ensemble's members take their parameters at training (harness train -p ...); set them there"
        )

    def fit(
        self, train: TrainingSet, val: TrainingSet | None = None, init_from: ValueModel | None = None
    ) -> EnsembleModel:
        raise ConfigError(
            "an ensemble is assembled from fitted members (routers.learned.fitting), not fitted"
        )

    def fit_details(self) -> dict[str, Any]:
        return {
            "members": len(self.members),
            "ensemble_mode": self.mode,
            "advantage_baseline": self.baseline is not None,
            "member_details": [m.fit_details() for m in self.members],
        }

    def predict_members(
        self, embeddings: np.ndarray, cards: list[ModelCard]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(members, n, len(cards))`` predicted score and cost-to-go of every member."""
        self.model_positions(cards)
        outputs = [member.predict(embeddings, cards) for member in self.members]
        score = np.stack([s for s, _ in outputs])
        cost = np.stack([c for _, c in outputs])
        if self.baseline is not None:
            base_score, base_cost = self.baseline.predict(embeddings)
            score, cost = score + base_score[None, :, None], cost + base_cost[None, :, None]
        return score, cost

    def predict(self, embeddings: np.ndarray, cards: list[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        score, cost = self.predict_members(embeddings, cards)
        return score.mean(axis=0), cost.mean(axis=0)

    def spread(self, embeddings: np.ndarray, cards: list[ModelCard], lam: float) -> np.ndarray:
        """``(n, len(cards))`` standard deviation across members of score - lam * cost (0 for one member)."""
        score, cost = self.predict_members(embeddings, cards)
        return (score - lam * cost).std(axis=0)

    def strongest(self, cards: list[ModelCard]) -> str:
        """The candidate with the highest mean predicted score over the training histories."""
        known = [card.name for card in cards if card.name in self.mean_scores]
        if not known:
            raise ConfigError("the ensemble has no mean predicted score for any of these candidates")
        return max(known, key=lambda name: self.mean_scores[name])

    def record_mean_scores(self, embeddings: np.ndarray, seed: int = 0) -> None:
        if len(embeddings) > FALLBACK_SAMPLE:
            rows = np.random.default_rng(seed).choice(len(embeddings), FALLBACK_SAMPLE, replace=False)
            embeddings = embeddings[np.sort(rows)]
        score, _ = self.predict(embeddings, self.cards)
        self.mean_scores = {
            card.name: float(v) for card, v in zip(self.cards, score.mean(axis=0), strict=True)
        }

    def _save_state(self, directory: Path) -> dict[str, Any]:
        for index, member in enumerate(self.members):
            member.save(member_dir(directory, index))
        if self.baseline is not None:
            save_array_file(
                directory / BASELINE_FILE, coef=self.baseline.coef, intercept=self.baseline.intercept
            )
        return {
            MEMBERS_STATE: len(self.members),
            "mode": self.mode,
            "defer_threshold": self.defer_threshold,
            "baseline": self.baseline is not None,
            "mean_scores": self.mean_scores,
        }

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        self.members = [
            self.member_class.load(member_dir(directory, i), allow_new_models=self.allow_new_models)
            for i in range(int(state[MEMBERS_STATE]))
        ]
        self.mode = state["mode"]
        self.defer_threshold = state["defer_threshold"]
        self.mean_scores = dict(state["mean_scores"])
        self.baseline = None
        if state["baseline"]:
            with np.load(directory / BASELINE_FILE) as arrays:
                self.baseline = StateBaseline(coef=arrays["coef"], intercept=arrays["intercept"])
