"""The router plugin interface: one required method.

A router sees a :class:`~harness.types.TurnState` (public history, spend so far,
the candidates' price cards) and returns a :class:`~harness.types.Decision`
naming one candidate and the probability it had of choosing it. The generator
passed in is seeded per episode, so a stochastic router is reproducible.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from harness.types import Decision, TurnState


class Router(abc.ABC):
    """Base class for routers; subclasses set ``name`` and implement :meth:`route`.

    A learned family says so on the class: ``trainable`` routers load a checkpoint
    that ``harness train`` fits (they name its ``model_class``), and
    ``warm_startable`` ones can continue from an earlier checkpoint (Stage B).
    """

    name: ClassVar[str]
    trainable: ClassVar[bool] = False
    warm_startable: ClassVar[bool] = False

    @abc.abstractmethod
    def route(self, state: TurnState, rng: np.random.Generator) -> Decision: ...
