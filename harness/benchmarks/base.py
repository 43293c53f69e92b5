"""What a benchmark plug-in provides, so that the agent loop, training and the pipeline never name one.

A benchmark owns its environment, its split file, its prompt and reply format,
its score range, how a turn counts as an error, its default limits and
hypervolume reference, how an episode is scored, and the privileged oracle that
simulated models read. Everything else in the harness is written against the
three small interfaces below.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from harness.config import Limits
from harness.protocols import Environment, ModelBackend
from harness.records import TurnRecord
from harness.splits import Split, load_split
from harness.types import (
    Action,
    CallContext,
    Charge,
    Completion,
    Message,
    TaskInstance,
    ToolCall,
    ToolSpec,
)


class FormatError(ValueError):
    """A reply (or one tool call of it) that cannot be acted on; the message goes back to the model."""

    def __init__(self, message: str, call_id: str | None = None):
        super().__init__(message)
        self.call_id = call_id


def first_user_message(messages: Sequence[Message]) -> str:
    """The text of the first user message ("" if none): the task text where nothing wraps it."""
    return next((m.content for m in messages if m.role == "user"), "")


class AgentFormat(abc.ABC):
    """How a benchmark talks to the agent: opening messages, replies into actions, results back.

    A text benchmark reads one action per reply; a tool benchmark offers ``tools``
    and reads up to ``max_actions_per_turn`` tool calls per reply.
    """

    tools: tuple[ToolSpec, ...] = ()
    max_actions_per_turn: int = 1
    submit_observation: str = "Answer recorded."
    # Replies that do not parse, for simulated models' format errors.
    malformed_replies: tuple[str, ...] = ("I need to think about this more before acting.",)

    @abc.abstractmethod
    def initial_messages(self, task_description: str, observation: str) -> list[Message]: ...

    @abc.abstractmethod
    def parse(self, completion: Completion) -> list[Action | FormatError]:
        """The actions a reply asks for, in order; a part that cannot be acted on is a FormatError."""

    @abc.abstractmethod
    def observation_message(self, observation: str, score: float, call_id: str | None) -> Message:
        """What the model is shown after an action (or a format error) of its reply."""

    @abc.abstractmethod
    def render(self, action: Action, thought: str) -> tuple[str, tuple[ToolCall, ...]]:
        """A reply that asks for ``action``: what a simulated model writes."""

    def task_description(self, initial: Sequence[Message]) -> str:
        """The task text of opening messages, for a reader that has only the messages (a served
        conversation, a log that did not record the text): here the first user message whole; a format
        whose ``initial_messages`` wrap the text reads it back out."""
        return first_user_message(initial)

    def reply_schema(self, env: Environment) -> dict[str, Any] | None:
        """The JSON schema a reply is held to under constrained decoding,
        from the environment's current state; None: this format offers none."""
        return None

    def malformed(self, rng: np.random.Generator) -> tuple[str, tuple[ToolCall, ...]]:
        """A reply that does not parse."""
        return self.malformed_replies[int(rng.integers(len(self.malformed_replies)))], ()


class Oracle(Protocol):
    """Privileged knowledge of one episode, read by simulated models only (routers never see it)."""

    def topic(self) -> str:
        """The task's topic or category: what a simulated model's skill depends on."""
        ...

    def next_action(self) -> Action | None:
        """The next useful action, or None when nothing is left to do."""
        ...

    def submit_action(self, answers_correctly: Callable[[], bool]) -> Action:
        """What ending the episode now looks like: a declaration, or an answer (right if ``answers_correctly()``)."""
        ...

    def skill_multiplier(self) -> float:
        """How the history so far changes any model's chance at a critical step (1.0: it does not)."""
        ...

    def is_critical(self) -> bool:
        """Whether the next action is one whose mistake is irreversible."""
        ...

    def wrong_critical_actions(self, k: int) -> list[Action]:
        """Up to ``k`` plausible wrong choices at a critical moment."""
        ...

    def wasted_actions(self) -> list[Action]:
        """Valid actions that change nothing."""
        ...

    def invalid_action(self, gold: Action, rng: np.random.Generator) -> Action:
        """A garbled version of ``gold`` that parses but the environment rejects."""
        ...


@dataclass
class Transcript:
    """An episode as the scorer sees it: the messages, the last environment score, the answer if any."""

    task: TaskInstance
    task_description: str
    messages: list[Message]
    last_score: float
    status: str
    submitted: Action | None = None
    forced: bool = False  # the answer was taken by the final-answer hook at a limit


@dataclass
class Score:
    value: float
    charges: list[Charge] = field(default_factory=list)  # kind "judge"
    details: dict[str, Any] = field(default_factory=dict)


class Scorer(Protocol):
    def score(self, transcript: Transcript, ctx: CallContext) -> Score: ...


class EnvironmentScore:
    """The environment's own score after the last step: for benchmarks whose engine scores itself."""

    def score(self, transcript: Transcript, ctx: CallContext) -> Score:
        return Score(transcript.last_score)


class Benchmark(abc.ABC):
    """A benchmark plug-in; register a subclass by name (see :mod:`harness.benchmarks`)."""

    name: ClassVar[str]
    score_range: ClassVar[tuple[float, float]]
    limits: ClassVar[Limits]
    split_file: ClassVar[Path]
    # Cost of the hypervolume reference point in dollars per episode; its score is the range's bottom.
    reference_cost: ClassVar[float] = 0.5
    # Seconds one simulated episode takes on one worker of a 2-core machine (the quick benchmark's mean):
    # a benchmark's time estimate before it has recorded any episode of its own. None: no estimate.
    reference_episode_seconds: ClassVar[float | None] = None

    agent_format: AgentFormat

    @abc.abstractmethod
    def make_environment(self) -> Environment: ...

    def load_split(self, path: str | Path | None = None) -> Split:
        return load_split(Path(path) if path is not None else self.split_file, self.name)

    def oracle_fingerprint(self) -> dict[str, Any]:
        """What identifies the privileged oracle simulated models read (none by default): caches of
        engine states that record it are kept apart per oracle."""
        return {}

    def check_simulated(self, tasks: list[TaskInstance]) -> None:
        """Refuse, before any episode, tasks a simulated model cannot play here (ConfigError, one line);
        by default every task can be."""
        return

    def fingerprint(self) -> dict[str, Any]:
        """What a result must record to be reproducible (engine versions, flags)."""
        return {}

    def reference_item(self, info: Mapping[str, Any]) -> tuple[str, int] | None:
        """The (task, variation) a trajectory of the MTRouter reference harness is about, read from its
        ``info`` block, so importers need not know how each benchmark names its items. None: the record
        is not one of this benchmark's; :class:`~harness.errors.UnknownItem`: it is, but names an item
        this plug-in lacks."""
        return None

    def scorer(self, judge: ModelBackend | None) -> Scorer:
        """The episode scorer; ``judge`` is the backend a judge-based scorer calls (None: none configured)."""
        return EnvironmentScore()

    def final_answer(self, transcript: Transcript) -> Action | None:
        """The answer to take when a limit ends the episode before the agent submitted one."""
        return None

    def is_error_turn(self, turn: TurnRecord) -> bool:
        """Whether a logged turn's action failed (drives the annealed error cost in training)."""
        return turn.error is not None

    def topic(self, task: str) -> str:
        """The topic of a task type as the split file gives it ("unknown" if it gives none), for breakdowns."""
        split = self.load_split()
        by_engine_name = {engine: task_type for task_type, engine in split.engine_names.items()}
        return split.topics.get(by_engine_name.get(task, task), "unknown")

    def critical_turns(self, task: TaskInstance, turns: list[TurnRecord]) -> frozenset[int] | None:
        """Turns of a logged episode at which the next useful action was critical (a mistake there is
        irreversible), or None when the benchmark cannot say (the default).

        This reads privileged knowledge of the task (what simulated models know): it labels
        diagnostics after the fact and must never feed training or routing.
        """
        return None

    def report_section(self, episodes, points: list[str], single: str | None) -> list[str]:
        """Markdown lines of the benchmark's own report table for these operating points (none by default)."""
        return []

    @property
    def default_margin(self) -> float:
        """What "as good as" means when a definition states no verdict margin: 5 points on a score whose
        top is 100 (ScienceWorld), 0.05 on an accuracy (HLE)."""
        return 0.05 * self.score_range[1]

    @property
    def reference_point(self) -> dict[str, float]:
        return {"score": float(self.score_range[0]), "cost": self.reference_cost}
