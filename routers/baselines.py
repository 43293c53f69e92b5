"""Fixed routing policies: the baselines every learned router is compared with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from harness.errors import ConfigError, UnknownNameError
from harness.types import Decision, ModelCard, TurnState
from routers.base import Router, kept_model, pool_names


def _price(card: ModelCard) -> float:
    return card.price.input_per_mtok + card.price.output_per_mtok


def _require(names: list[str], model_names: list[str], router: str) -> None:
    for name in names:
        if name not in model_names:
            raise UnknownNameError(
                f"router {router!r} names model {name!r}, which is not in the pool ({', '.join(model_names)})"
            )


class SingleModelRouter(Router):
    """Every turn to one named model: the single-model baselines of the paper's table."""

    name = "single"

    def __init__(self, model: str):
        self.model = model

    def check_pool(self, pool: Sequence[ModelCard] | Sequence[str]) -> None:
        _require([self.model], pool_names(pool), self.name)

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        return Decision(model=self.model, propensity=1.0)


class RandomRouter(Router):
    """Uniform over the pool; the Stage A logging policy, so its propensity is exactly 1/n."""

    name = "random"

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        n = len(state.candidates)
        return Decision(model=state.candidates[int(rng.integers(n))].name, propensity=1.0 / n)

    def probabilities(self, state: TurnState) -> Mapping[str, float]:
        return {card.name: 1.0 / len(state.candidates) for card in state.candidates}


class RoundRobinRouter(Router):
    """Cycles through the pool in order by turn index."""

    name = "round-robin"

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        return Decision(model=state.candidates[state.turn % len(state.candidates)].name, propensity=1.0)


class HeuristicRouter(Router):
    """The reference's hand-written policy.

    The strong model opens the episode and answers right after an invalid action or
    format error (recovery matters most there); from ``late_fraction`` of the turn
    limit on, the value model finishes; otherwise a uniformly random cheap model.
    Unnamed roles are derived from price cards: the dearest model is strong, the
    cheaper half is cheap, and the cheapest of the rest is the value model.
    """

    name = "heuristic"

    def __init__(
        self,
        strong: str | None = None,
        value: str | None = None,
        cheap: list[str] | None = None,
        late_fraction: float = 2 / 3,
    ):
        self.strong = strong
        self.value = value
        self.cheap = cheap
        self.late_fraction = late_fraction

    def check_pool(self, pool: Sequence[ModelCard] | Sequence[str]) -> None:
        _require(
            [n for n in [self.strong, self.value, *(self.cheap or [])] if n], pool_names(pool), self.name
        )

    def roles(self, candidates: list[ModelCard]) -> tuple[str, str, list[str]]:
        by_price = sorted(candidates, key=_price)
        half = max(1, len(by_price) // 2)
        cheap = self.cheap or [c.name for c in by_price[:half]]
        strong = self.strong or by_price[-1].name
        rest = [c.name for c in by_price[half:] if c.name != strong]
        value = self.value or (rest[0] if rest else strong)
        return strong, value, cheap

    def fixed_pick(self, state: TurnState) -> str | None:
        """The model this turn goes to by rule (strong or value model), None on a cheap turn."""
        strong, value, _ = self.roles(state.candidates)
        if state.turn == 0 or not state.last_action_valid:
            return strong
        if state.turn >= self.late_fraction * state.max_turns:
            return value
        return None

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        fixed = self.fixed_pick(state)
        if fixed is not None:
            return Decision(model=fixed, propensity=1.0)
        cheap = self.roles(state.candidates)[2]
        return Decision(model=cheap[int(rng.integers(len(cheap)))], propensity=1.0 / len(cheap))

    def probabilities(self, state: TurnState) -> Mapping[str, float]:
        fixed = self.fixed_pick(state)
        if fixed is not None:
            return {fixed: 1.0}
        cheap = self.roles(state.candidates)[2]
        return {name: 1.0 / len(cheap) for name in cheap}


class StickyRandomRouter(Router):
    """Exploration that keeps a model for a while: a uniform draw at turn 0, then with
    probability ``switch_prob`` a fresh uniform draw each turn, else the previous model.

    Uniform per-turn exploration credits each decision with the outcome of a random
    continuation, so over a 35-turn episode one choice barely moves the return. Under
    sticky exploration a decision's return mostly reflects *continuing* with that model,
    which is the contrast a router needs. Propensities are exact: (1 - p) + p/n for
    keeping the previous model, p/n for each other one. The default 0.03 gives about
    one switch per 35-turn episode: enough switched states to learn from, few enough
    that most of a return is the chosen model's own doing. The previous model is the
    state's (:attr:`TurnState.previous_model`); a state without one, or whose previous
    model is not a candidate, gets a uniform draw.
    """

    name = "sticky-random"

    def __init__(self, switch_prob: float = 0.03):
        if not 0.0 < switch_prob <= 1.0:
            raise ConfigError(f"router 'sticky-random': switch_prob must be in (0, 1], got {switch_prob}")
        self.switch_prob = switch_prob

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        n = len(state.candidates)
        names = [c.name for c in state.candidates]
        previous = kept_model(state)
        if previous is None:
            return Decision(model=names[int(rng.integers(n))], propensity=1.0 / n)
        choice = names[int(rng.integers(n))] if rng.random() < self.switch_prob else previous
        return Decision(model=choice, propensity=self.probabilities(state)[choice])

    def probabilities(self, state: TurnState) -> Mapping[str, float]:
        n = len(state.candidates)
        previous = kept_model(state)
        if previous is None:
            return {card.name: 1.0 / n for card in state.candidates}
        return {
            card.name: self.switch_prob / n + (1.0 - self.switch_prob if card.name == previous else 0.0)
            for card in state.candidates
        }
