"""What a router would do at every logged state: its probability of each candidate, and its values.

Off-policy estimators need the target router's probability of the logged model at each
logged state, and the direct method and doubly robust need a value of each candidate
there. This module asks the router once per state and keeps the answers in a
:class:`PolicyTable`, so that several estimators, the decision agreement and FQE read
the same numbers.

How the probabilities are obtained:

* the built-in exploration routers say them exactly: ``random`` is uniform; ``sticky-random``
  keeps the previous model with probability ``1 - p + p/n`` and gives ``p/n`` to each other
  one, its previous model being the *logged* previous model (an importance weight is the
  ratio of the two policies' probabilities of the logged sequence, so the target's
  probability of turn *t* is conditioned on the logged turns before it); ``heuristic``
  puts its cheap turns uniformly on the cheap models; ``beta-mix`` is ``beta`` on the greedy
  pick plus ``(1 - beta) / n`` everywhere;
* a learned :class:`~routers.learned.value_router.ValueRouter` is deterministic (greedy);
  its history vectors are computed in one batch and its value model predicts every state
  at once, which is what :meth:`ValueRouter.route` would compute one state at a time;
* any other router is asked :meth:`~routers.base.Router.route` at each state; it must be
  deterministic (propensity 1), its probabilities then being the indicator of its pick. A
  stochastic router whose probabilities are not known here is refused, not guessed.

Values (``values``): a learned router's own value model, converted back to raw units with
its checkpoint's :class:`~routers.learned.dataset.TargetStats`: the "gain" score target is
the score still to be gained, so the final score is ``score_before + gain * span``; the
"final" target is ``score_low + value * span``; cost-to-go is ``cost * mean_episode_cost``.
``score_before`` is the score the environment reported after the previous turn (0 before
turn 0), read from the turn lines. The value model was fitted to the logging policy's
returns, not the target's: as a Q-function of the target it is an approximation, which the
doubly robust estimator corrects and the direct method does not.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.config import Limits
from harness.errors import ConfigError
from harness.replay.decisions import EpisodeStates, StateDefaults
from harness.replay.logged import LoggedEpisode
from harness.replay.ope import ActionValues, QFunction, TargetPolicy
from harness.types import ModelCard
from routers.base import Router
from routers.baselines import HeuristicRouter, RandomRouter, StickyRandomRouter
from routers.learned.beta_mix import BetaMixRouter
from routers.learned.value_router import ValueRouter

EpisodeKey = tuple[str, str]  # (source, episode id): episode ids repeat across run directories


def episode_key(episode: LoggedEpisode) -> EpisodeKey:
    return (episode.source, episode.episode)


@dataclass
class PolicyTable:
    """A router's probabilities (and values, if it has a value model) at every logged state, per episode."""

    pool: tuple[str, ...]
    kind: str  # how the probabilities were obtained: uniform | sticky | heuristic | greedy | beta-mix | asked
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


def _indicator(picks: Sequence[int], n: int) -> np.ndarray:
    table = np.zeros((len(picks), n))
    table[np.arange(len(picks)), list(picks)] = 1.0
    return table


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


def _value_router_table(
    router: ValueRouter,
    episodes: Sequence[LoggedEpisode],
    cards: Sequence[ModelCard],
    predictions: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, ActionValues, np.ndarray]:
    """Greedy picks, raw-unit values and Q of a learned router from its value model's predictions."""
    score, cost = predictions
    q = score - router.lam * cost
    picks = np.argmax(q, axis=1)  # ties to the first listed, as ValueRouter.greedy
    stats, options = router.model.stats, router.model.options
    assert stats is not None and options is not None
    span = stats.score_high - stats.score_low
    if options.score_target == "gain":
        before = np.concatenate([_previous_score(e) for e in episodes])
        raw_score = before[:, None] + score * span
    else:
        raw_score = stats.score_low + score * span
    return picks, ActionValues(score=raw_score, cost=cost * stats.mean_episode_cost), q


class StateVectors:
    """History vectors of logged states, computed once per encoder and kept: routers sharing an
    encoder (every family of one benchmark run) then pay for the encoding once. So are a
    checkpoint's value predictions, one batched forward pass over every logged state: they do
    not depend on λ, so the points of a λ sweep share them."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, tuple[EpisodeKey, ...]], np.ndarray] = {}
        self._predictions: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._routers: dict[str, Router] = {}

    def router(self, name: str, params: dict, candidates: Sequence[str]) -> Router:
        """The router of ``params``; the λ points of one learned checkpoint share one loaded model
        (a copy of the router with its own ``lam``)."""
        from routers import make_router, router_class

        if not issubclass(router_class(name), ValueRouter) or "lam" not in params:
            return make_router(name, params, list(candidates))
        rest = {k: v for k, v in params.items() if k not in ("lam", "label")}
        key = repr((name, sorted(rest.items(), key=lambda kv: kv[0]), tuple(candidates)))
        if key not in self._routers:
            self._routers[key] = make_router(name, params, list(candidates))
        shared = copy.copy(self._routers[key])
        lam = float(params["lam"])
        if lam < 0:
            raise ConfigError(f"router {name!r}: lam must be >= 0, got {lam}")
        shared.lam = lam  # type: ignore[attr-defined]
        return shared

    def predictions(
        self, router: ValueRouter, episodes: Sequence[LoggedEpisode], cards: Sequence[ModelCard]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(score, cost) predictions (states, candidates) of the router's value model, in its own units."""
        router.check_pool([c.name for c in cards])
        stamp = router.checkpoint / "checkpoint.json"
        key = (
            str(router.checkpoint.resolve()),
            stamp.stat().st_mtime_ns if stamp.exists() else None,
            repr(router.model.encoder.to_dict()) if router.model.encoder is not None else None,
            tuple(repr(c) for c in cards),
            tuple(episode_key(e) for e in episodes),
        )
        if key not in self._predictions:
            self._predictions[key] = router.model.predict(self.get(router, episodes), list(cards))
        return self._predictions[key]

    def get(self, router: ValueRouter, episodes: Sequence[LoggedEpisode]) -> np.ndarray:
        assert router.model.encoder is not None
        key = (repr(router.model.encoder.to_dict()), tuple(episode_key(e) for e in episodes))
        if key not in self._vectors:
            histories = []
            for episode in episodes:
                states = EpisodeStates(episode)
                histories.extend((states.description, states.history(t)) for t in range(len(episode.turns)))
            self._vectors[key] = router.encoder.encode_batch(histories) if histories else np.zeros((0, 1))
        return self._vectors[key]


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
    seed: int = 0,
) -> PolicyTable:
    """``router``'s probabilities at every logged state of ``episodes`` (candidates: ``cards`` in order).

    ``limits`` maps an episode's source to the limits it ran under (default: the
    benchmark's); ``vectors`` shares history vectors between learned routers.
    """
    keys = [episode_key(e) for e in episodes]
    if len(set(keys)) != len(keys):
        raise ConfigError("the same episode of the same source appears twice in the logs")
    pool = tuple(c.name for c in cards)
    n = len(pool)
    index = {name: i for i, name in enumerate(pool)}
    limits = limits or {}
    if isinstance(router, (ValueRouter, BetaMixRouter)):
        greedy = router.greedy_router if isinstance(router, BetaMixRouter) else router
        picks, values, q = _value_router_table(
            greedy, episodes, cards, (vectors or StateVectors()).predictions(greedy, episodes, cards)
        )
        probabilities = _indicator(picks, n)
        kind = "greedy"
        if isinstance(router, BetaMixRouter):
            probabilities = router.beta * probabilities + (1.0 - router.beta) / n
            kind = "beta-mix"
        score_rows, cost_rows = _split(values.score, episodes), _split(values.cost, episodes)
        return PolicyTable(
            pool,
            kind,
            _split(probabilities, episodes),
            {k: ActionValues(score=score_rows[k], cost=cost_rows[k]) for k in keys},
            _split(q, episodes),
        )
    if isinstance(router, RandomRouter):
        return PolicyTable(
            pool,
            "uniform",
            {k: np.full((len(e.turns), n), 1.0 / n) for k, e in zip(keys, episodes, strict=True)},
        )
    if isinstance(router, StickyRandomRouter):
        p = router.switch_prob
        tables = {}
        for key, episode in zip(keys, episodes, strict=True):
            table = np.full((len(episode.turns), n), p / n)
            table[0] = 1.0 / n
            for t in range(1, len(episode.turns)):
                previous = index.get(episode.turns[t - 1].model)
                if previous is None:
                    table[t] = 1.0 / n
                else:
                    table[t, previous] += 1.0 - p
            tables[key] = table
        return PolicyTable(pool, "sticky", tables)
    if isinstance(router, HeuristicRouter):
        strong, value, cheap = router.roles(list(cards))
        tables = {}
        for key, episode in zip(keys, episodes, strict=True):
            states = EpisodeStates(episode, StateDefaults(limits.get(episode.source)))
            table = np.zeros((len(episode.turns), n))
            for t in range(len(episode.turns)):
                if t == 0 or not states.last_action_valid(t):
                    table[t, index[strong]] = 1.0
                elif t >= router.late_fraction * states.limits.max_turns:
                    table[t, index[value]] = 1.0
                else:
                    table[t, [index[c] for c in cheap]] = 1.0 / len(cheap)
            tables[key] = table
        return PolicyTable(pool, "heuristic", tables)
    rng = np.random.default_rng(seed)
    tables, scores = {}, {}
    for key, episode in zip(keys, episodes, strict=True):
        states = EpisodeStates(episode, StateDefaults(limits.get(episode.source)))
        picks, rows = [], []
        for t in range(len(episode.turns)):
            decision = router.route(states.state(t, cards), rng)
            if decision.model not in index:
                raise ConfigError(f"router picked {decision.model!r}, not a candidate ({', '.join(pool)})")
            if decision.propensity < 1.0:
                raise ConfigError(
                    f"router {getattr(router, 'name', type(router).__name__)!r} is stochastic (propensity "
                    f"{decision.propensity:g}) and its probabilities over the pool are not known; offline "
                    "evaluation needs them"
                )
            picks.append(index[decision.model])
            rows.append([float((decision.scores or {}).get(name, np.nan)) for name in pool])
        tables[key] = _indicator(picks, n)
        scores[key] = np.array(rows)
    return PolicyTable(pool, "asked", tables, router_scores=scores)
