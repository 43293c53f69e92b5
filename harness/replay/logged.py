"""Logged episodes in memory: what every importer produces and every off-policy estimator reads.

One form for all sources (our run directories of any format version, the MTRouter
reference's ``*.traj.json``, the generic JSONL schema) so that estimators and decision
replay never see where a log came from. Each turn carries the history the router saw
before it, rebuilt once at import, so replaying a router needs no engine.

The core's ``harness.types.Message`` is being widened to tool calls; until it is, the
log keeps its own :class:`LoggedMessage` (the core's ``Message`` fields, validated as they are
read) and :meth:`LoggedMessage.to_message` turns it into the core type.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import TrajectoryError
from harness.types import Message

MESSAGE_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class LoggedToolCall:
    """One tool call of an assistant message; ``arguments`` is the raw JSON string the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class LoggedMessage:
    role: str
    content: str
    tool_calls: tuple[LoggedToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The turn-line form: ``{role, content}`` plus the optional fields that are set."""
        record: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            record["tool_calls"] = [dataclasses.asdict(call) for call in self.tool_calls]
        if self.tool_call_id is not None:
            record["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            record["name"] = self.name
        return record

    @classmethod
    def from_record(cls, record: Any, where: str) -> LoggedMessage:
        if not isinstance(record, Mapping):
            raise TrajectoryError(f"{where}: a message is not an object")
        role, content = record.get("role"), record.get("content")
        if role not in MESSAGE_ROLES:
            raise TrajectoryError(f"{where}: message role {role!r} is not one of {', '.join(MESSAGE_ROLES)}")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TrajectoryError(f"{where}: message content is not a string")
        calls = record.get("tool_calls") or ()
        try:
            tool_calls = tuple(
                LoggedToolCall(id=str(c["id"]), name=str(c["name"]), arguments=str(c["arguments"]))
                for c in calls
            )
        except (KeyError, TypeError):
            raise TrajectoryError(f"{where}: a tool call lacks id, name or arguments") from None
        return cls(
            role=role,
            content=content,
            tool_calls=tool_calls,
            tool_call_id=record.get("tool_call_id"),
            name=record.get("name"),
        )

    def to_message(self) -> Message:
        """The core's message type (tool calls and tool-call ids included)."""
        return Message.from_dict(self.to_record())


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
    messages: tuple[LoggedMessage, ...]  # what this turn appended to the history
    history: tuple[LoggedMessage, ...] = field(default=(), repr=False)  # what the router saw before it
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
    initial_messages: tuple[LoggedMessage, ...] = field(default=(), repr=False)  # history before turn 0
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


def link_histories(initial: Sequence[LoggedMessage], turns: Sequence[LoggedTurn]) -> tuple[LoggedTurn, ...]:
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
    """The task text: logged on turn 0 (format 2), else read from the first user message (format 1 runs
    were all ScienceWorld, whose prompt module knows its own layout), else that whole message."""
    from harness.benchmarks.scienceworld.prompt import task_description_of

    logged = episode.turns[0].extra.get("task_description") if episode.turns else None
    if logged:
        return logged
    first_user = next((m.content for m in episode.initial_messages if m.role == "user"), "")
    return task_description_of(first_user) or first_user
