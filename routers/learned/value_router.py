"""The routing side of every learned router: encode the history, score each candidate, take the best.

Q(h, m) = predicted score - lam * predicted cost-to-go; ``lam`` is chosen per
run, not per training, because the two are predicted separately. An ensemble
checkpoint may defer to its strongest model when its members disagree
(``defer_threshold``, see :mod:`routers.learned.ensemble`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from harness.errors import ConfigError
from harness.types import Decision, ModelCard, TurnState
from routers.base import Router, ValueTable
from routers.learned.encoder_spec import build_encoder, check_encoder
from routers.learned.ensemble import EnsembleModel
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.value_model import ValueModel

KEPT_BATCHES = 4  # batches of predictions kept: a λ sweep alternates between a few sets of logged states


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
        defer_threshold: float | None = None,
    ):
        """``cache_dir`` holds the embedding cache shared with training (default: the user cache);
        ``encoder`` replaces the one rebuilt from the checkpoint (it must produce the same vectors);
        ``allow_new_models`` lets a metadata-based model score candidates it was not trained on;
        ``embedder`` names the embedder the checkpoint must have been trained with (a one-line error if not);
        ``defer_threshold`` overrides an ensemble checkpoint's own (None: the checkpoint's, if any).
        """
        if lam < 0:
            raise ConfigError(f"router {self.name!r}: lam must be >= 0, got {lam}")
        self.checkpoint = Path(checkpoint)
        self.lam = float(lam)
        self.model = self.model_class.load(self.checkpoint, allow_new_models=allow_new_models)
        if defer_threshold is not None:
            if not isinstance(self.model, EnsembleModel) or len(self.model.members) < 2:
                raise ConfigError(
                    f"router {self.name!r}: defer_threshold needs an ensemble checkpoint; {checkpoint} is not one"
                )
            if defer_threshold < 0:
                raise ConfigError(
                    f"router {self.name!r}: defer_threshold must be >= 0, got {defer_threshold}"
                )
        elif isinstance(self.model, EnsembleModel):
            defer_threshold = self.model.defer_threshold
        self.defer_threshold = defer_threshold
        assert self.model.encoder is not None
        if encoder is None:
            encoder = build_encoder(self.model.encoder, cache_dir, embedder=embedder)
        else:
            check_encoder(self.model.encoder, encoder)
        self.encoder = encoder
        self._checked_pools: set[tuple[ModelCard, ...]] = set()
        self._batches: dict[int, tuple[Sequence[TurnState], tuple[np.ndarray, np.ndarray]]] = {}

    def check_pool(self, pool: Sequence[ModelCard] | Sequence[str]) -> None:
        self.model.check_pool(list(pool))

    def vector(self, state: TurnState) -> np.ndarray:
        """The state's history vector, after checking its candidates against the checkpoint's pool once."""
        candidates = tuple(state.candidates)
        if candidates not in self._checked_pools:
            self.model.check_pool(list(candidates))
            self._checked_pools.add(candidates)
        return self.encoder.encode(state.task_description, state.history)

    def predict(self, vectors: np.ndarray, states: Sequence[TurnState]) -> tuple[np.ndarray, np.ndarray]:
        """The value model's (score, cost-to-go) at ``states`` (sharing one candidate list) from their history
        vectors, ``(states, candidates)`` each; a family that reads more of the state overrides it."""
        return self.model.predict(vectors, list(states[0].candidates))

    def values(self, state: TurnState) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (score, cost-to-go) of each candidate, in candidate order."""
        score, cost = self.predict(self.vector(state)[None, :], [state])
        return score[0], cost[0]

    def greedy(self, state: TurnState) -> tuple[str, dict[str, float]]:
        """The best candidate at this router's ``lam`` and every candidate's Q; ties go to the first listed.

        With a defer threshold, an ensemble whose members' Q of that candidate spread (std) more than
        the threshold routes to its strongest model instead.
        """
        names = [card.name for card in state.candidates]
        if self.defer_threshold is None:
            score, cost = self.values(state)
            q = score - self.lam * cost
            best = names[int(np.argmax(q))]
        else:
            assert isinstance(self.model, EnsembleModel)
            member_score, member_cost = self.model.predict_members(
                self.vector(state)[None, :], list(state.candidates)
            )
            member_q = (member_score - self.lam * member_cost)[:, 0, :]  # (members, candidates)
            q = member_q.mean(axis=0)
            chosen = int(np.argmax(q))
            best = names[chosen]
            if member_q[:, chosen].std() > self.defer_threshold:
                best = self.model.strongest(list(state.candidates))
        return best, {name: float(value) for name, value in zip(names, q, strict=True)}

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        model, q = self.greedy(state)
        return Decision(model=model, propensity=1.0, scores=q)

    def with_lam(self, lam: float) -> ValueRouter:
        """This router at another ``lam``, sharing its loaded model, encoder and batch predictions (the
        points of a λ sweep differ only there)."""
        if lam < 0:
            raise ConfigError(f"router {self.name!r}: lam must be >= 0, got {lam}")
        other = copy.copy(self)
        other.lam = float(lam)
        return other

    def value_table(self, states: Sequence[TurnState]) -> ValueTable:
        """Predicted score and cost-to-go of every candidate at every state, in one batch.

        The states share one candidate list, checked against the checkpoint's pool once. The
        predictions do not depend on ``lam``: they are kept (for the last few ``states`` objects,
        by identity), and the routers of one λ sweep (:meth:`with_lam`) share them.
        """
        kept = self._batches.get(id(states))
        if kept is None or kept[0] is not states:
            candidates = list(states[0].candidates) if states else []
            self.model.check_pool(candidates)
            vectors = self.encoder.encode_batch([(s.task_description, s.history) for s in states])
            kept = (states, self.predict(vectors, states))
            self._batches[id(states)] = kept
            while len(self._batches) > KEPT_BATCHES:
                self._batches.pop(next(iter(self._batches)))
        score, cost = kept[1]
        return ValueTable(score=score, cost=cost, q=score - self.lam * cost)

    def probability_table(self, states: Sequence[TurnState]) -> np.ndarray:
        """The indicator of :meth:`greedy`'s pick at every state, from one batch of predictions; a
        deferring ensemble decides state by state (its members' spread is not in the batch)."""
        if self.defer_threshold is not None or not states:
            return super().probability_table(states)
        q = self.value_table(states).q
        table = np.zeros_like(q)
        table[np.arange(len(q)), np.argmax(q, axis=1)] = 1.0  # ties to the first listed, as greedy
        return table
