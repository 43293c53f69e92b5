"""Logged episodes in memory: what every importer produces and every off-policy estimator reads.

One form for all sources (our run directories of any format version, the MTRouter
reference's ``*.traj.json``, the generic JSONL schema) so that estimators and decision
replay never see where a log came from. Each turn carries the history the router saw
before it, rebuilt once at import, so replaying a router needs no engine.

Messages are the core's :class:`harness.types.Message` (tool calls and tool-call ids
included), checked as they are read by :func:`harness.records.parse_message`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import TrajectoryError, UnknownNameError
from harness.types import Message


@dataclass(frozen=True)
class LoggedTurn:
    """One routing decision as logged.

    ``propensity`` is the logging policy's probability of ``model`` at this state, or
    None when the log does not hold it (never defaulted: importance weights need the
    real value). ``dollars`` is the model call's cost only: the logging router's own
    overhead is not a consequence of which model was picked, so estimators leave it out;
    it stays in ``extra["charges"]`` for a run directory that had it.
    ``extra`` carries fields of the source record this form does not model (action,
    observation, score so far, charges, ...) unchanged into the written turn line.
    """

    turn: int
    model: str
    propensity: float | None
    prompt_tokens: int
    completion_tokens: int
    dollars: float
    messages: tuple[Message, ...]  # what this turn appended to the history
    history: tuple[Message, ...] = field(default=(), repr=False)  # what the router saw before it
    valid: bool | None = None  # whether the environment accepted the turn's action; None: not logged
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class LoggedEpisode:
    """A finished episode: its final score (the terminal reward) and its turns, in order."""

    episode: str  # the episode id, unique within its source run
    benchmark: str
    task: str
    variation: int
    split: str
    score: float
    status: str
    turns: tuple[LoggedTurn, ...]
    initial_messages: tuple[Message, ...] = field(default=(), repr=False)  # history before turn 0
    source: str = ""  # the file or run directory it was read from
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        where = f"{self.source or '?'}: episode {self.episode!r}"
        if [t.turn for t in self.turns] != list(range(len(self.turns))):
            raise TrajectoryError(f"{where}: turn indices are not 0..{len(self.turns) - 1}")
        if not math.isfinite(self.score):
            raise TrajectoryError(f"{where}: final score {self.score} is not a finite number")
        for t in self.turns:
            if t.propensity is not None and not 0.0 < t.propensity <= 1.0:
                raise TrajectoryError(f"{where}: turn {t.turn} has propensity {t.propensity}, outside (0, 1]")
            if not t.dollars >= 0.0:
                raise TrajectoryError(f"{where}: turn {t.turn} has negative or missing dollars {t.dollars}")

    @property
    def cost(self) -> float:
        return sum(t.dollars for t in self.turns)

    @property
    def models(self) -> list[str]:
        return [t.model for t in self.turns]

    @property
    def missing_propensities(self) -> int:
        return sum(t.propensity is None for t in self.turns)


def link_histories(initial: Sequence[Message], turns: Sequence[LoggedTurn]) -> tuple[LoggedTurn, ...]:
    """Give each turn the history before it: the initial messages, then every earlier turn's messages.

    The histories share their message objects, so memory grows with the number of
    turns squared only in pointers, not in text.
    """
    history = list(initial)
    linked = []
    for turn in turns:
        linked.append(dataclasses.replace(turn, history=tuple(history)))
        history.extend(turn.messages)
    return tuple(linked)


def task_description(episode: LoggedEpisode) -> str:
    """The task text: logged on turn 0 (format 2 on), else read back from the opening messages by the
    episode's benchmark's format (format 1 runs, all ScienceWorld), else the first user message whole
    (a log of a benchmark this process cannot play: unregistered, or a plug-in that only imports)."""
    from harness.benchmarks import get_benchmark
    from harness.benchmarks.base import first_user_message

    logged = episode.turns[0].extra.get("task_description") if episode.turns else None
    if logged:
        return logged
    try:
        agent_format = getattr(get_benchmark(episode.benchmark), "agent_format", None)
    except UnknownNameError:
        agent_format = None
    if agent_format is None:
        return first_user_message(episode.initial_messages)
    return agent_format.task_description(episode.initial_messages)
