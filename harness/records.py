"""The two records of a run directory: one line of ``episodes.jsonl``, one line of a turn file.

Everything that writes a run directory (the agent loop, the batch runner's failure
records, the importers, the synthetic-log generator) builds an :class:`EpisodeRecord`
or a :class:`TurnRecord`, and everything that reads one (training data, reports,
tracking, replay, summaries) gets them back through the same class, so a field is
added, renamed or defaulted here and nowhere else. The records live in a module of
their own rather than in :mod:`harness.trajectory` because that module is about
*files* (atomic appends, torn lines, the writer lock) and knows nothing of what a line
means; importers and readers need the records without the store.

Each record has one serialiser, :meth:`to_line`, and one parser, :meth:`from_line`.
A line holds every field of its record (null where it does not apply) plus the
record's ``extra``: fields of another source that the record does not model (an
imported log's ``exit_status``, ...) travel through unchanged.

Format versions (``config.json``'s ``format_version``):

* 3 (written now): every field on every line.
* 2: the same fields, but a line holds only those its writer knew: an episode line of
  a failure has no switch counts or duration, a finished one no ``failure``; turn lines
  of imports have no cached-token split. Read with the defaults below.
* 1: turn lines without ``messages``; refused here, rewritten by ``harness import run``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from harness.errors import TrajectoryError
from harness.ledger import CostLedger
from harness.types import Message, TaskInstance, ToolCall

FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)
MESSAGE_ROLES = ("system", "user", "assistant", "tool")

# An episode record's ``failure`` when its status is "failed": the episode's own failure is a
# result; the infrastructure's (worker died, provider unavailable, engine crashed) is not.
EPISODE_FAILURE = "episode"
INFRASTRUCTURE_FAILURE = "infrastructure"
FAILED = "failed"


def count_switches(models: Sequence[str]) -> int:
    """How often consecutive turns were answered by different models."""
    return sum(a != b for a, b in zip(models, models[1:], strict=False))


def switch_rate(models: Sequence[str]) -> float:
    """Switches per chance to switch (turns - 1); 0 for an episode of at most one turn."""
    return count_switches(models) / max(1, len(models) - 1)


def parse_message(data: Any, where: str) -> Message:
    """A message of a line, checked: a known role, text content (null reads as ""), complete tool calls."""
    if not isinstance(data, Mapping):
        raise TrajectoryError(f"{where}: a message is not an object")
    role, content = data.get("role"), data.get("content")
    if role not in MESSAGE_ROLES:
        raise TrajectoryError(f"{where}: message role {role!r} is not one of {', '.join(MESSAGE_ROLES)}")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise TrajectoryError(f"{where}: message content is not a string")
    try:
        calls = tuple(
            ToolCall(id=str(c["id"]), name=str(c["name"]), arguments=str(c["arguments"]))
            for c in data.get("tool_calls") or ()
        )
    except (KeyError, TypeError):
        raise TrajectoryError(f"{where}: a tool call lacks id, name or arguments") from None
    return Message(role, content, calls, data.get("tool_call_id"), data.get("name"))


def parse_messages(data: Any, where: str) -> list[Message]:
    if not isinstance(data, list):
        raise TrajectoryError(f"{where}: messages is not a list")
    return [parse_message(m, where) for m in data]


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")


@functools.cache
def _field_set(cls: type) -> frozenset[str]:
    return frozenset(_field_names(cls))


class _Line:
    """What both records share: the flat line form, with unmodelled fields carried in ``extra``."""

    REQUIRED: ClassVar[tuple[str, ...]]  # fields without which a line of any version is refused
    extra: dict[str, Any]

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The modelled field names, in declaration order (``extra`` is not one)."""
        return _field_names(cls)

    @classmethod
    def unmodelled(cls, line: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``line`` that are not fields of this record: what goes to ``extra``."""
        names = _field_set(cls)
        return {k: v for k, v in line.items() if k not in names}

    @classmethod
    def _values(cls, line: Any, version: int, where: str) -> dict[str, Any]:
        if not isinstance(line, Mapping):
            raise TrajectoryError(f"{where}: a line is not a JSON object")
        if version not in READABLE_VERSIONS:
            raise TrajectoryError(
                f"{where}: format version {version!r} is not one this harness reads "
                f"({', '.join(map(str, READABLE_VERSIONS))}); convert it with harness import run"
            )
        wanted = cls.fields() if version >= 3 else cls.REQUIRED
        missing = [name for name in wanted if name not in line]
        if missing:
            raise TrajectoryError(f"{where}: the line has no {missing[0]!r}")
        values = {name: line[name] for name in cls.fields() if name in line}
        values["extra"] = cls.unmodelled(line)
        return values

    def overlaid(self, carried: Mapping[str, Any], where: str = "imported line") -> Self:
        """This record with the fields another source's line carried taking the place of its own.

        An importer builds what its log implies, then lays the source line's own fields over
        it; entries that are not fields go to ``extra``. The result is parsed like any line.
        """
        return type(self).from_line({**self.to_line(), **carried}, FORMAT_VERSION, where)  # type: ignore[attr-defined]

    def to_line(self) -> dict[str, Any]:
        """The line as written: ``extra`` first, so a modelled field always wins."""
        line = dict(self.extra)
        for name in self.fields():
            line[name] = self._plain(name, getattr(self, name))
        return line

    def _plain(self, name: str, value: Any) -> Any:
        return value


@dataclass
class EpisodeRecord(_Line):
    """One line of ``episodes.jsonl``: how an episode ended and what it cost.

    ``score`` is None for a failed episode (``status`` "failed", with ``failure`` saying
    whose failure it was and ``error`` what happened). ``cost`` is the routed cost: model
    calls plus router overhead; the judge's verdict is billed apart in ``judge_cost``.
    ``unrecorded_charges`` are the charges no turn
    line holds (the turn a failure interrupted); those of earlier attempts are marked
    ``abandoned``. ``attempts`` counts the times the episode was begun and ``abandoned_cost``
    is what the earlier attempts spent, however they ended (both settled by
    :meth:`harness.trajectory.RunStore.with_earlier_attempts`). The switch counts and the
    duration are None where they are not known (failures, imports).
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ("episode", "benchmark", "task", "variation", "status")

    episode: str  # the task instance's key, unique within a run
    benchmark: str
    task: str
    variation: int
    split: str = "unknown"
    seed: int | None = None
    router: str | None = None
    score: float | None = None
    status: str = "done"  # done | submitted | max_turns | budget | failed (imports: the source's)
    cost: float = 0.0
    model_cost: float = 0.0
    router_cost: float = 0.0
    judge_cost: float = 0.0
    cost_by_model: dict[str, float] = field(default_factory=dict)
    turns: int = 0
    switches: int | None = None
    switch_rate: float | None = None
    error: str | None = None
    failure: str | None = None  # EPISODE_FAILURE | INFRASTRUCTURE_FAILURE when status is "failed"
    unrecorded_charges: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 1
    retries: int = 0  # provider retries within the attempts
    abandoned_cost: float = 0.0
    duration_s: float | None = None
    repeat: int = 0  # which play of the variation (TaskInstance.repeat)
    score_details: dict[str, Any] = field(default_factory=dict)  # what the scorer said beyond the number
    # a counterfactual branch (harness.branching): the parent episode and turn it branched from, its
    # sibling group and the continuation policy; and the dollars this collection really spent on it
    branch_of: dict[str, Any] | None = None
    billed_cost: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        task: TaskInstance,
        seed: int,
        router: str,
        ledger: CostLedger,
        models: Sequence[str] | None = None,
        **fields: Any,
    ) -> EpisodeRecord:
        """The record of ``task`` as played: its identity from the task, its costs from the ledger.

        ``models`` (the model of each turn) gives the switch counts; ``fields`` the rest.
        """
        if models is not None:
            fields |= {"switches": count_switches(models), "switch_rate": switch_rate(models)}
        return cls(
            episode=task.key,
            benchmark=task.benchmark,
            task=task.task,
            variation=task.variation,
            split=task.split,
            repeat=task.repeat,
            seed=seed,
            router=router,
            cost=ledger.episode_total,
            model_cost=ledger.model_total,
            router_cost=ledger.router_total,
            judge_cost=ledger.judge_total,
            cost_by_model=ledger.by_model(),
            **fields,
        )

    @classmethod
    def from_line(
        cls, line: Any, version: int = FORMAT_VERSION, where: str = "episode line"
    ) -> EpisodeRecord:
        """Parse one line of ``episodes.jsonl`` written in format ``version``."""
        values = cls._values(line, version, where)
        if values.get("variation") is not None:
            values["variation"] = int(values["variation"])
        for name in ("cost_by_model", "score_details", "extra"):
            values[name] = dict(values.get(name) or {})
        values["unrecorded_charges"] = list(values.get("unrecorded_charges") or [])
        for name, default in (("attempts", 1), ("retries", 0), ("abandoned_cost", 0.0), ("repeat", 0)):
            if values.get(name) is None:
                values[name] = default
        return cls(**values)

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def infrastructure_failure(self) -> bool:
        """A failure of the infrastructure, not of the episode: not a result, played again on resume."""
        return self.failed and self.failure == INFRASTRUCTURE_FAILURE


@dataclass
class TurnRecord(_Line):
    """One line of a turn file: one routing decision, the call it made and what the turn did.

    ``messages`` are the messages the turn appended to the history (the reply, then the
    observation or tool results), so the history any turn saw is turn 0's
    ``initial_messages`` followed by every earlier turn's ``messages``; ``history_len`` is
    its length, kept to check a rebuild. ``dollars`` is the model call's cost; ``charges``
    every charge of the turn (model, router overhead) as :class:`~harness.types.Charge`
    fields. ``propensity`` is the router's probability of ``model`` (None: not known).
    ``score`` is the environment's score after the turn.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ("episode", "turn", "model", "dollars", "messages")

    episode: str
    turn: int
    model: str
    dollars: float
    messages: list[Message]
    history_len: int | None = None
    initial_messages: list[Message] | None = None  # the history before turn 0; only on turn 0
    task_description: str | None = None  # only on turn 0
    propensity: float | None = None
    router_scores: dict[str, float] | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int | None = None  # None: not known (imports)
    uncached_prompt_tokens: int | None = None
    completion_tokens: int = 0
    charges: list[dict[str, Any]] = field(default_factory=list)
    output: str | None = None  # the reply's text
    action: str | None = None  # the actions applied, described; None when the reply had none
    observation: str | None = None
    valid: bool | None = None  # whether every action was accepted; None: not known (imports)
    error: str | None = None  # "format" | "invalid_action"
    score: float | None = None
    done: bool = False
    # wall-clock [start, end] in epoch seconds of the routing decision, the model call and each engine
    # step or tool call: the spans of the episode's trace (None in older lines)
    times: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def router_dollars(self) -> float:
        """What the router's own calls billed on this turn (its overhead charges), apart from ``dollars``."""
        return sum(float(c["dollars"]) for c in self.charges if c.get("kind") == "router")

    @classmethod
    def from_line(cls, line: Any, version: int = FORMAT_VERSION, where: str = "turn line") -> TurnRecord:
        """Parse one line of a turn file written in format ``version``."""
        values = cls._values(line, version, where)
        at = f"{where} (turn {values.get('turn')})"
        values["turn"] = int(values["turn"])
        values["messages"] = parse_messages(values["messages"], at)
        if values.get("initial_messages") is not None:
            values["initial_messages"] = parse_messages(values["initial_messages"], at)
        values["charges"] = list(values.get("charges") or [])
        for name, default in (("prompt_tokens", 0), ("completion_tokens", 0), ("done", False)):
            if values.get(name) is None:
                values[name] = default
        return cls(**values)

    def _plain(self, name: str, value: Any) -> Any:
        if name in ("messages", "initial_messages") and value is not None:
            return [m.to_dict() for m in value]
        return value
