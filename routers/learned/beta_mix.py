"""The Stage B logging policy: a trained router's greedy choice mixed with uniform exploration.

Stage B data is collected near the learned policy (so its states are the ones
that policy visits) while every model keeps a known, non-zero probability, which
is what inverse-propensity weighting needs. With probability ``beta`` the
greedy model is taken, otherwise a uniform draw over the candidates, so

    P(greedy) = beta + (1 - beta) / n,   P(other) = (1 - beta) / n.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from harness.errors import ConfigError
from harness.types import Decision, ModelCard, TurnState
from routers.base import Router, ValueTable
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.value_model import ValueModel, read_meta
from routers.learned.value_router import ValueRouter


class BetaMixRouter(Router):
    name = "beta-mix"

    def __init__(
        self,
        checkpoint: str,
        beta: float = 0.5,
        lam: float = 0.5,
        cache_dir: str | None = None,
        allow_new_models: bool = False,
        encoder: HistoryEncoder | None = None,
    ):
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"router 'beta-mix': beta must be in [0, 1], got {beta}")
        from routers import router_class

        kind = read_meta(checkpoint)["kind"]
        inner = router_class(kind)
        if not issubclass(inner, ValueRouter):
            raise ConfigError(
                f"router 'beta-mix': checkpoint {checkpoint} holds {kind!r}, not a learned router"
            )
        self.beta = float(beta)
        self.greedy_router = inner(
            checkpoint, lam=lam, cache_dir=cache_dir, allow_new_models=allow_new_models, encoder=encoder
        )

    @property
    def model(self) -> ValueModel:  # type: ignore[override]
        return self.greedy_router.model

    def check_pool(self, pool: Sequence[ModelCard] | Sequence[str]) -> None:
        self.greedy_router.check_pool(pool)

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        greedy, q = self.greedy_router.greedy(state)
        n = len(state.candidates)
        # Both draws happen every turn so the generator advances the same way whichever branch is taken.
        exploit = rng.random() < self.beta
        uniform = state.candidates[int(rng.integers(n))].name
        model = greedy if exploit else uniform
        propensity = (1.0 - self.beta) / n + (self.beta if model == greedy else 0.0)
        return Decision(model=model, propensity=propensity, scores=q)

    def probabilities(self, state: TurnState) -> Mapping[str, float]:
        greedy, _ = self.greedy_router.greedy(state)
        n = len(state.candidates)
        return {
            c.name: (1.0 - self.beta) / n + (self.beta if c.name == greedy else 0.0) for c in state.candidates
        }

    def probability_table(self, states: Sequence[TurnState]) -> np.ndarray:
        greedy = self.greedy_router.probability_table(states)
        return self.beta * greedy + (1.0 - self.beta) / greedy.shape[1] if len(states) else greedy

    def value_table(self, states: Sequence[TurnState]) -> ValueTable:
        return self.greedy_router.value_table(states)
