"""Public metadata of a model as a numeric vector, so a router can place a model it never saw.

Scaling statistics are fitted on the training pool and stored with the
checkpoint; a model added later is scaled with the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError
from harness.types import ModelCard

FEATURE_NAMES = (
    "log_input_price",
    "log_output_price",
    "log_context_window",
    "knowledge_cutoff_months",
    "reasoning",
)
MIN_PRICE = 1e-3  # dollars per Mtok; keeps a free model's log finite


def cutoff_months(card: ModelCard) -> float:
    try:
        year, month = (int(part) for part in card.knowledge_cutoff.split("-")[:2])
    except ValueError:
        raise ConfigError(
            f"model {card.name!r}: knowledge_cutoff {card.knowledge_cutoff!r} is not YYYY-MM"
        ) from None
    return float(year * 12 + month - 1)


def raw_features(card: ModelCard) -> np.ndarray:
    return np.array(
        [
            math.log(max(card.price.input_per_mtok, MIN_PRICE)),
            math.log(max(card.price.output_per_mtok, MIN_PRICE)),
            math.log(max(card.context_window, 1)),
            cutoff_months(card),
            float(card.reasoning),
        ]
    )


@dataclass(frozen=True)
class FeatureScaler:
    """z-scores across a pool; a feature constant across the pool is only centred."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def fit(cls, cards: list[ModelCard]) -> FeatureScaler:
        matrix = np.stack([raw_features(card) for card in cards])
        std = matrix.std(axis=0)
        return cls(
            mean=tuple(matrix.mean(axis=0).tolist()), scale=tuple(np.where(std > 1e-8, std, 1.0).tolist())
        )

    def transform(self, cards: list[ModelCard]) -> np.ndarray:
        matrix = np.stack([raw_features(card) for card in cards])
        return ((matrix - np.array(self.mean)) / np.array(self.scale)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureScaler:
        return cls(mean=tuple(data["mean"]), scale=tuple(data["scale"]))
