"""A third-party stochastic router, registered only through a test-only distribution's entry point.

It keeps the previous model with probability ``stay`` and otherwise draws a model with
probability proportional to the inverse of its price (input + output dollars per Mtok),
so its probabilities depend on the state (turn 0 has no previous model) and on the cards.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from harness.types import Decision, TurnState
from routers.base import Router


class FrugalStickyRouter(Router):
    name = "frugal-sticky"

    def __init__(self, stay: float = 0.5):
        self.stay = stay

    def probabilities(self, state: TurnState) -> Mapping[str, float]:
        inverse = {c.name: 1.0 / (c.price.input_per_mtok + c.price.output_per_mtok) for c in state.candidates}
        total = sum(inverse.values())
        keep = self.stay if state.previous_model in inverse else 0.0
        return {
            name: (1.0 - keep) * w / total + (keep if name == state.previous_model else 0.0)
            for name, w in inverse.items()
        }

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        stated = self.probabilities(state)
        names = list(stated)
        model = names[int(rng.choice(len(names), p=list(stated.values())))]
        return Decision(model=model, propensity=stated[model])
