"""What a router would do at every logged state: its probability of each candidate, and its values.

Off-policy estimators need the target router's probability of the logged model at each
logged state, and the direct method and doubly robust need a value of each candidate
there. This module asks the router once for every logged state and keeps the answers in
a :class:`PolicyTable`, so that several estimators, the decision agreement and FQE read
the same numbers.

The probabilities are the router's own (:meth:`routers.base.Router.probability_table`,
which is :meth:`~routers.base.Router.probabilities` state by state unless the router
batches): a stochastic router states the distribution it draws from, a deterministic
one the indicator of its pick. A logged state carries the *logged* previous model
(:attr:`harness.types.TurnState.previous_model`): an importance weight is the ratio of
the two policies' probabilities of the logged sequence, so the target's probability at
turn *t* is conditioned on the logged turns before it.

Values (``values``): a learned router's own value model (:meth:`Router.value_table`),
converted back to raw units with its checkpoint's statistics
(:meth:`~routers.learned.value_model.ValueModel.raw_units`); the score shown before each
turn, which a "gain" target adds to, is read from the turn lines. The value model was
fitted to the logging policy's returns, not the target's: as a Q-function of the target it
is an approximation, which the doubly robust estimator corrects and the direct method does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.config import Limits
from harness.errors import ConfigError
from harness.replay.decisions import EpisodeStates, StateDefaults
from harness.replay.logged import LoggedEpisode
from harness.replay.ope import ActionValues, QFunction, TargetPolicy
from harness.types import ModelCard, TurnState
from routers.base import Router, probability_row, router_name

EpisodeKey = tuple[str, str]  # (source, episode id): episode ids repeat across run directories


def episode_key(episode: LoggedEpisode) -> EpisodeKey:
    return (episode.source, episode.episode)


@dataclass
class PolicyTable:
    """A router's probabilities (and values, if it has a value model) at every logged state, per episode."""

    pool: tuple[str, ...]
    kind: str  # "deterministic" (every row one model) or "stochastic"
    probabilities: dict[EpisodeKey, np.ndarray]  # (turns, models)
    values: dict[EpisodeKey, ActionValues] | None = None  # (turns, models) each, raw units
    router_scores: dict[EpisodeKey, np.ndarray] | None = field(default=None, repr=False)  # the router's own

    def target(self) -> TargetPolicy:
        def policy(episode: LoggedEpisode, turn: int) -> np.ndarray:
            return self.probabilities[episode_key(episode)][turn]

        # The whole table at once, episode by episode: the estimators then skip the per-state calls.
        policy.stacked = lambda episodes: np.concatenate(  # type: ignore[attr-defined]
            [self.probabilities[episode_key(e)] for e in episodes]
        )
        return policy

    def q(self) -> QFunction | None:
        if self.values is None:
            return None
        values = self.values

        def q(episode: LoggedEpisode, turn: int) -> ActionValues:
            table = values[episode_key(episode)]
            return ActionValues(score=table.score[turn], cost=table.cost[turn])

        q.stacked = lambda episodes: np.concatenate(  # type: ignore[attr-defined]
            [np.stack([values[episode_key(e)].score, values[episode_key(e)].cost], axis=-1) for e in episodes]
        )
        return q

    def logged_probability(self, episode: LoggedEpisode) -> np.ndarray:
        """(turns,): this policy's probability of the model the log chose at each turn."""
        index = {name: i for i, name in enumerate(self.pool)}
        rows = self.probabilities[episode_key(episode)]
        return rows[np.arange(len(episode.turns)), [index[t.model] for t in episode.turns]]


def _previous_score(episode: LoggedEpisode) -> np.ndarray:
    """The score shown before each turn: the previous turn's logged score, 0 before turn 0."""
    scores = [0.0]
    for turn in episode.turns[:-1]:
        score = turn.extra.get("score")
        if score is None:
            raise ConfigError(
                f"{episode.source}: episode {episode.episode!r} turn {turn.turn} has no logged score; "
                "a 'gain' value model needs the score so far"
            )
        scores.append(float(score))
    return np.array(scores)


class StateVectors:
    """The router inputs of logged states, rebuilt once and kept, and the routers asked about them.

    Every router evaluated on the same logs is asked about the same state objects, so a
    learned router's batch predictions (which do not depend on λ) are computed once for all
    the points of its λ sweep, which share one loaded model (:meth:`Router.with_lam`).
    """

    def __init__(self) -> None:
        self._states: dict[tuple, list[TurnState]] = {}
        self._routers: dict[str, Router] = {}

    def router(self, name: str, params: dict, candidates: Sequence[str]) -> Router:
        """The router of ``params``; the λ points of one learned checkpoint share one loaded model."""
        from routers import make_router, router_class

        if not router_class(name).trainable or "lam" not in params:
            return make_router(name, params, list(candidates))
        rest = {k: v for k, v in params.items() if k not in ("lam", "label")}
        key = repr((name, sorted(rest.items(), key=lambda kv: kv[0]), tuple(candidates)))
        if key not in self._routers:
            self._routers[key] = make_router(name, params, list(candidates))
        return self._routers[key].with_lam(float(params["lam"]))

    def states(
        self, episodes: Sequence[LoggedEpisode], cards: Sequence[ModelCard], limits: dict[str, Limits]
    ) -> list[TurnState]:
        """Every logged state of ``episodes``, episode by episode, turn by turn; the same list for the same logs."""
        key = (
            tuple(episode_key(e) for e in episodes),
            tuple(repr(c) for c in cards),
            tuple(sorted((k, repr(v)) for k, v in limits.items())),
        )
        if key not in self._states:
            states = []
            for episode in episodes:
                rebuilt = EpisodeStates(episode, StateDefaults(limits.get(episode.source)))
                states.extend(rebuilt.state(t, cards) for t in range(len(episode.turns)))
            self._states[key] = states
        return self._states[key]


def _split(rows: np.ndarray, episodes: Sequence[LoggedEpisode]) -> dict[EpisodeKey, np.ndarray]:
    out, start = {}, 0
    for episode in episodes:
        out[episode_key(episode)] = rows[start : start + len(episode.turns)]
        start += len(episode.turns)
    return out


def policy_table(
    router: Router,
    episodes: Sequence[LoggedEpisode],
    cards: Sequence[ModelCard],
    limits: dict[str, Limits] | None = None,
    vectors: StateVectors | None = None,
) -> PolicyTable:
    """``router``'s probabilities at every logged state of ``episodes`` (candidates: ``cards`` in order).

    ``limits`` maps an episode's source to the limits it ran under (default: the
    benchmark's); ``vectors`` shares the rebuilt states (and so a learned router's batch
    predictions) between the routers evaluated on the same logs.
    """
    keys = [episode_key(e) for e in episodes]
    if len(set(keys)) != len(keys):
        raise ConfigError("the same episode of the same source appears twice in the logs")
    pool = tuple(c.name for c in cards)
    states = (vectors or StateVectors()).states(episodes, cards, limits or {})
    probabilities = np.asarray(router.probability_table(states), dtype=np.float64)
    if probabilities.shape != (len(states), len(pool)):
        raise ConfigError(
            f"router {router_name(router)!r} gave a probability table of shape {probabilities.shape} for "
            f"{len(states)} states and {len(pool)} candidates"
        )
    ok = np.isfinite(probabilities).all(axis=1) & (probabilities >= 0).all(axis=1)
    ok &= np.abs(probabilities.sum(axis=1) - 1.0) <= 1e-9
    if not ok.all():
        bad = int(np.argmin(ok))
        probability_row(dict(zip(pool, probabilities[bad], strict=True)), cards, router_name(router))
    kind = "deterministic" if np.isin(probabilities, (0.0, 1.0)).all() else "stochastic"
    table = router.value_table(states)
    if table is None or router.model is None:
        return PolicyTable(pool, kind, _split(probabilities, episodes))
    before = (
        np.concatenate([_previous_score(e) for e in episodes])
        if router.model.options.score_target == "gain"
        else None
    )
    score, cost = router.model.raw_units(table.score, table.cost, before)
    score_rows, cost_rows = _split(score, episodes), _split(cost, episodes)
    return PolicyTable(
        pool,
        kind,
        _split(probabilities, episodes),
        {k: ActionValues(score=score_rows[k], cost=cost_rows[k]) for k in keys},
        _split(table.q, episodes),
    )
