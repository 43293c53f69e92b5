"""The two small interfaces the agent loop is written against besides the benchmark plug-in.

Routers have their own base class in :mod:`routers.base` and benchmarks theirs in
:mod:`harness.benchmarks.base`; these two are structural so that any object with
the right methods plugs in.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from harness.types import (
    Action,
    CallContext,
    Completion,
    Message,
    ModelCard,
    StepResult,
    TaskInstance,
    ToolSpec,
)


@runtime_checkable
class Environment(Protocol):
    """A multi-turn task. ``reset`` starts an instance, ``step`` applies one action (a command or a tool call)."""

    def reset(self, task: TaskInstance) -> tuple[str, str]:
        """Start ``task``; return (task description, first observation)."""
        ...

    def step(self, action: Action) -> StepResult: ...

    @property
    def oracle(self) -> Any:
        """Privileged knowledge of the current instance for simulated models, or None."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ModelBackend(Protocol):
    """Something that answers a chat, with tools offered where the benchmark has them, and says what it cost."""

    card: ModelCard

    def complete(
        self, messages: list[Message], ctx: CallContext, tools: list[ToolSpec] | None = None
    ) -> Completion: ...
