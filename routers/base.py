"""The router contract: everything the harness asks of a router, declared in one class.

A router sees a :class:`~harness.types.TurnState` (public history, spend so far, the
candidates' price cards, the model that answered the previous turn) and

* :meth:`Router.route` draws one candidate from its policy, with the generator the
  episode passes in (seeded per episode, so a stochastic router is reproducible);
* :meth:`Router.probabilities` states that policy: the probability of every candidate
  at the state. Off-policy evaluation weighs logged turns with it, so a router that
  draws random numbers must say what it draws from; a router that draws none is
  deterministic and inherits the indicator of its pick;
* :meth:`Router.probability_table` is the same for a batch of states (a learned router
  decides them in one forward pass);
* :meth:`Router.check_pool` refuses, before any episode, a pool it cannot route over.

A learned family also says, on the class, that ``harness train`` fits it (``trainable``),
what it fits (``model_class``, a :class:`~routers.learned.value_model.ValueModel`
subclass) and whether it can continue from an earlier checkpoint (``warm_startable``).
An instance that decides with a fitted value model exposes it as ``model``, its
predictions at a batch of states as :meth:`Router.value_table` (the off-policy direct
method's value model) and, if it has a price-quality knob, a copy at another ``lam``
sharing the fitted model as :meth:`Router.with_lam` (the points of a λ sweep).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from harness.errors import ConfigError
from harness.types import Decision, ModelCard, TurnState

if TYPE_CHECKING:
    from routers.learned.value_model import ValueModel


@dataclass(frozen=True)
class ValueTable:
    """A learned router's own predictions at a batch of states, ``(states, candidates)`` each.

    ``score`` and ``cost`` are its value model's predicted score target and cost-to-go in
    the model's normalised units (:meth:`ValueModel.raw_units` converts them); ``q`` is the
    router's value of each candidate, the quantity its choice maximises.
    """

    score: np.ndarray
    cost: np.ndarray
    q: np.ndarray


class _Draw(Exception):
    """Raised by :class:`_NoRandomness` when a router's ``route`` reaches for a random number."""


class _NoRandomness:
    """Stands in for the generator when a deterministic router's probabilities are asked: any draw is refused.

    So the default :meth:`Router.probabilities` consumes no randomness (the caller's stream is
    untouched) and cannot mistake a stochastic router for a deterministic one.
    """

    def __getattr__(self, name: str) -> Any:
        raise _Draw(name)


class Router(abc.ABC):
    """Base class for routers; subclasses set ``name`` and implement :meth:`route`.

    A stochastic router (one whose ``route`` uses the generator) also implements
    :meth:`probabilities`. A learned family sets ``trainable``, ``model_class`` and, if
    it can continue from a checkpoint (Stage B), ``warm_startable``.
    """

    name: ClassVar[str]
    trainable: ClassVar[bool] = False  # ``harness train`` fits it
    warm_startable: ClassVar[bool] = False  # training may start from an earlier checkpoint of its kind
    model_class: ClassVar[type[ValueModel] | None] = None  # what training fits, for a trainable family
    model: ValueModel | None = None  # the fitted value model this router decides with, if any

    @abc.abstractmethod
    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        """One decision, drawn from :meth:`probabilities` at ``state`` with ``rng``."""

    def probabilities(self, state: TurnState) -> Mapping[str, float]:
        """The probability of each candidate at ``state`` (names absent from the mapping have 0).

        The default is for a deterministic router: the indicator of what :meth:`route` picks.
        It calls ``route`` with a generator that refuses every draw, so it consumes no
        randomness; a router that draws is told to state its probabilities itself.
        """
        try:
            decision = self.route(state, _NoRandomness())  # type: ignore[arg-type]
        except _Draw:
            raise ConfigError(
                f"router {router_name(self)!r} draws random numbers in route() but does not state its "
                "probabilities; implement Router.probabilities for it"
            ) from None
        return {decision.model: 1.0}

    def probability_table(self, states: Sequence[TurnState]) -> np.ndarray:
        """``(len(states), candidates)``: :meth:`probabilities` at each state, candidates in each state's order.

        Learned routers override it to decide every state in one batch.
        """
        rows = np.zeros((len(states), len(states[0].candidates) if states else 0))
        for i, state in enumerate(states):
            rows[i] = probability_row(self.probabilities(state), state.candidates, router_name(self))
        return rows

    def value_table(self, states: Sequence[TurnState]) -> ValueTable | None:
        """A learned router's predictions at ``states`` (the off-policy direct method's value model);
        None for a router without a value model."""
        return None

    def with_lam(self, lam: float) -> Router:
        """A learned router at another price-quality trade-off ``lam``, sharing its fitted model."""
        raise ConfigError(f"router {router_name(self)!r} has no lam")

    def check_pool(self, pool: Sequence[ModelCard] | Sequence[str]) -> None:
        """Refuse, with a one-line :class:`ConfigError`, a pool this router cannot route over.

        ``pool`` is the pool's cards where they are known (a router holding a checkpoint then
        also compares prices), else its model names. The default accepts any pool.
        """
        return None


def router_name(router: Router) -> str:
    """The registry name of a router, for messages (a class that set none: its class name)."""
    return getattr(router, "name", type(router).__name__)


def pool_names(pool: Sequence[ModelCard] | Sequence[str]) -> list[str]:
    return [m if isinstance(m, str) else m.name for m in pool]


def probability_row(
    probabilities: Mapping[str, float], candidates: Sequence[ModelCard], router: str
) -> np.ndarray:
    """A probability mapping as a vector over ``candidates``, checked to be a distribution over them."""
    index = {card.name: i for i, card in enumerate(candidates)}
    row = np.zeros(len(candidates))
    for name, p in probabilities.items():
        if name not in index:
            raise ConfigError(
                f"router {router!r} gives probability to {name!r}, not a candidate ({', '.join(index)})"
            )
        row[index[name]] = float(p)
    if not (np.isfinite(row).all() and (row >= 0).all() and abs(row.sum() - 1.0) <= 1e-9):
        raise ConfigError(
            f"router {router!r} stated probabilities that are not a distribution: {dict(probabilities)}"
        )
    return row


def kept_model(state: TurnState) -> str | None:
    """The previous turn's model if a sticky policy may keep it (a later turn, still a candidate), else None."""
    if state.turn == 0 or state.previous_model is None:
        return None
    return state.previous_model if any(c.name == state.previous_model for c in state.candidates) else None
