"""The routing side of every learned router: encode the history, score each candidate, take the best.

Q(h, m) = predicted score - lam * predicted cost-to-go; ``lam`` is chosen per
run, not per training, because the two are predicted separately.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from harness.errors import ConfigError
from harness.types import Decision, ModelCard, TurnState
from routers.base import Router
from routers.learned.encoder_spec import build_encoder, check_encoder
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.value_model import ValueModel


class ValueRouter(Router):
    """Greedy over a fitted value model; subclasses name the model class they load."""

    trainable = True
    warm_startable = True  # every built-in value model continues from (or keeps the targets of) a checkpoint
    model_class: ClassVar[type[ValueModel]]

    def __init__(
        self,
        checkpoint: str,
        lam: float = 0.5,
        cache_dir: str | None = None,
        allow_new_models: bool = False,
        encoder: HistoryEncoder | None = None,
        embedder: str | None = None,
    ):
        """``cache_dir`` holds the embedding cache shared with training (default: the user cache);
        ``encoder`` replaces the one rebuilt from the checkpoint (it must produce the same vectors);
        ``allow_new_models`` lets a metadata-based model score candidates it was not trained on;
        ``embedder`` names the embedder the checkpoint must have been trained with (a one-line error if not).
        """
        if lam < 0:
            raise ConfigError(f"router {self.name!r}: lam must be >= 0, got {lam}")
        self.checkpoint = Path(checkpoint)
        self.lam = float(lam)
        self.model = self.model_class.load(self.checkpoint, allow_new_models=allow_new_models)
        assert self.model.encoder is not None
        if encoder is None:
            encoder = build_encoder(self.model.encoder, cache_dir, embedder=embedder)
        else:
            check_encoder(self.model.encoder, encoder)
        self.encoder = encoder
        self._checked_pools: set[tuple[ModelCard, ...]] = set()

    def check_pool(self, model_names: list[str]) -> None:
        self.model.check_pool(model_names)

    def values(self, state: TurnState) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (score, cost-to-go) of each candidate, in candidate order."""
        candidates = tuple(state.candidates)
        if candidates not in self._checked_pools:
            self.model.check_pool(list(candidates))
            self._checked_pools.add(candidates)
        vector = self.encoder.encode(state.task_description, state.history)
        score, cost = self.model.predict(vector[None, :], list(candidates))
        return score[0], cost[0]

    def greedy(self, state: TurnState) -> tuple[str, dict[str, float]]:
        """The best candidate at this router's ``lam`` and every candidate's Q; ties go to the first listed."""
        score, cost = self.values(state)
        q = score - self.lam * cost
        names = [card.name for card in state.candidates]
        return names[int(np.argmax(q))], {name: float(value) for name, value in zip(names, q, strict=True)}

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        model, q = self.greedy(state)
        return Decision(model=model, propensity=1.0, scores=q)
