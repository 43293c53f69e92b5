"""Decision-level replay: what a router would pick at each logged state, beside what was logged.

This asks less than off-policy evaluation: not what score the router would reach (its
picks change the states that follow, which the log does not have), but how it behaves on
the states the log does have. Agreement with the logged choice says how far the router is
from the logging policy (and so how usable the log's importance weights are); the
predicted advantage, the router's own score of its pick minus its score of the logged
model, says how much the router believes it improves on the log, in its own units.

The router's input is a :class:`harness.types.TurnState` rebuilt from the log. Fields the
logs do not hold get documented defaults (:class:`StateDefaults`): the budget and turn limit
are the harness defaults unless given; the dollars spent are the logged model calls' dollars
before this turn; a turn whose validity was not logged counts as valid; the task description
is recovered from our first user message (``Task: ...``) or else is that whole message.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.config import Limits, resolved_limits
from harness.errors import ConfigError
from harness.replay.logged import LoggedEpisode, task_description
from harness.types import Message, ModelCard, TurnState
from routers.base import Router


@dataclass(frozen=True)
class RouterPick:
    model: str
    scores: Mapping[str, float] | None = None  # the router's value of each candidate, higher is better


RouterFunction = Callable[[TurnState], RouterPick]


@dataclass(frozen=True)
class StateDefaults:
    """Values for TurnState fields that a log does not record."""

    limits: Limits | None = None  # None: the benchmark plug-in's default limits


def router_function(router: Router, seed: int = 0) -> RouterFunction:
    """A :class:`Router` as a replay function; a stochastic router draws from one seeded generator.

    A policy that keeps a model (sticky-random, an episode-level router) keeps the
    *logged* previous model, which each state carries.
    """
    rng = np.random.default_rng(seed)

    def pick(state: TurnState) -> RouterPick:
        decision = router.route(state, rng)
        return RouterPick(decision.model, decision.scores)

    return pick


class EpisodeStates:
    """The router inputs of one logged episode, its messages laid out once in one list.

    Each turn's history is a prefix of one message list, so rebuilding every state of a
    T-turn episode costs T list slices, not T copies of the whole history.
    """

    def __init__(self, episode: LoggedEpisode, defaults: StateDefaults = StateDefaults()):
        self.episode = episode
        self.limits = resolved_limits(defaults.limits, episode.benchmark)
        self.description = task_description(episode)
        messages = list(episode.initial_messages)
        for turn in episode.turns:
            messages.extend(turn.messages)
        self._messages = messages
        self._lengths = [len(t.history) for t in episode.turns]
        self._spent = np.concatenate([[0.0], np.cumsum([t.dollars for t in episode.turns])])

    def history(self, turn: int) -> list[Message]:
        return self._messages[: self._lengths[turn]]

    def last_action_valid(self, turn: int) -> bool:
        return turn == 0 or self.episode.turns[turn - 1].valid is not False

    def consecutive_errors(self, turn: int) -> int:
        count = 0
        for previous in reversed(self.episode.turns[:turn]):
            if previous.valid is not False:
                break
            count += 1
        return count

    def state(self, turn: int, candidates: Sequence[ModelCard]) -> TurnState:
        assert self.limits.budget_dollars is not None and self.limits.max_turns is not None
        return TurnState(
            benchmark=self.episode.benchmark,
            task=self.episode.task,
            variation=self.episode.variation,
            task_description=self.description,
            history=self.history(turn),
            turn=turn,
            dollars_spent=float(self._spent[turn]),
            budget_dollars=self.limits.budget_dollars,
            max_turns=self.limits.max_turns,
            candidates=list(candidates),
            last_action_valid=self.last_action_valid(turn),
            consecutive_errors=self.consecutive_errors(turn),
            previous_model=self.episode.turns[turn - 1].model if turn else None,
        )


def turn_state(
    episode: LoggedEpisode,
    turn: int,
    candidates: Sequence[ModelCard],
    defaults: StateDefaults = StateDefaults(),
) -> TurnState:
    """What the router saw, or would have seen, before logged turn ``turn`` of ``episode``."""
    return EpisodeStates(episode, defaults).state(turn, candidates)


@dataclass(frozen=True)
class ReplayedDecision:
    episode: str
    task: str
    turn: int
    logged_model: str
    picked_model: str
    advantage: float | None  # router's score of its pick minus its score of the logged model

    @property
    def agrees(self) -> bool:
        return self.picked_model == self.logged_model


@dataclass(frozen=True)
class DecisionReplay:
    decisions: tuple[ReplayedDecision, ...] = field(repr=False)
    agreement: float  # share of logged states where the router picks the logged model
    agreement_by_task: dict[str, float]
    picks: dict[str, int]  # how often the router picks each model
    logged: dict[str, int]  # how often the log chose each model
    mean_advantage: float | None  # over the states where the router scored both models
    advantage_states: int


def replay_decisions(
    episodes: Sequence[LoggedEpisode],
    router: RouterFunction,
    candidates: Sequence[ModelCard],
    defaults: StateDefaults = StateDefaults(),
) -> DecisionReplay:
    """The router's pick at every logged state, and how it compares with the logged choice."""
    names = {card.name for card in candidates}
    decisions = []
    for episode in episodes:
        states = EpisodeStates(episode, defaults)
        for t, logged in enumerate(episode.turns):
            pick = router(states.state(t, candidates))
            if pick.model not in names:
                raise ConfigError(
                    f"router picked {pick.model!r}, not a candidate ({', '.join(sorted(names))})"
                )
            scores = pick.scores or {}
            advantage = (
                float(scores[pick.model]) - float(scores[logged.model])
                if pick.model in scores and logged.model in scores
                else None
            )
            decisions.append(
                ReplayedDecision(episode.episode, episode.task, t, logged.model, pick.model, advantage)
            )
    if not decisions:
        raise ConfigError("decision replay needs at least one logged turn")
    by_task: dict[str, list[bool]] = defaultdict(list)
    for d in decisions:
        by_task[d.task].append(d.agrees)
    advantages = [d.advantage for d in decisions if d.advantage is not None]
    return DecisionReplay(
        decisions=tuple(decisions),
        agreement=float(np.mean([d.agrees for d in decisions])),
        agreement_by_task={task: float(np.mean(flags)) for task, flags in sorted(by_task.items())},
        picks=dict(Counter(d.picked_model for d in decisions)),
        logged=dict(Counter(d.logged_model for d in decisions)),
        mean_advantage=float(np.mean(advantages)) if advantages else None,
        advantage_states=len(advantages),
    )
