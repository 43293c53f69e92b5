"""The three small interfaces the agent loop is written against.

Routers have their own base class in :mod:`routers.base`; these two are
structural so that any object with the right methods plugs in.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from harness.types import CallContext, Completion, Message, ModelCard, StepResult, TaskInstance


@runtime_checkable
class Environment(Protocol):
    """A multi-turn text task. ``reset`` starts an instance, ``step`` applies one action."""

    benchmark: str

    def reset(self, task: TaskInstance) -> tuple[str, str]:
        """Start ``task``; return (task description, first observation)."""
        ...

    def step(self, action: str) -> StepResult: ...

    @property
    def oracle(self) -> Any:
        """Privileged knowledge of the current instance for simulated models, or None."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ModelBackend(Protocol):
    """Something that answers a chat and says what it cost."""

    card: ModelCard

    def complete(self, messages: list[Message], ctx: CallContext) -> Completion: ...
