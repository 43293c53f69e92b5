"""Plain data passed between the agent loop, environments, backends and routers.

Everything here is a frozen or plain dataclass so that it can be written to a
trajectory line with ``dataclasses.asdict`` and read back without custom code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class PriceCard:
    """Dollars per one million tokens; ``version`` is recorded with every charge."""

    input_per_mtok: float
    output_per_mtok: float
    version: str = "2026-01"

    def dollars(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True)
class ModelCard:
    """What a router may know about a candidate model: its price and public metadata."""

    name: str
    price: PriceCard
    context_window: int = 128_000
    max_output_tokens: int = 16_384
    knowledge_cutoff: str = "2024-06"  # YYYY-MM
    reasoning: bool = False
    provider_model: str = ""  # e.g. "openai/gpt-5" for the LiteLLM backend


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    dollars: float


@dataclass(frozen=True)
class StepResult:
    """What an environment returns after one action (Gymnasium-like, text world)."""

    observation: str
    score: float  # task score so far, in the benchmark's own range
    done: bool
    valid: bool = True  # False when the engine did not understand the action


@dataclass(frozen=True)
class TaskInstance:
    """One episode's task: which benchmark, task type, variation and split."""

    benchmark: str
    task: str
    variation: int
    split: str

    @property
    def key(self) -> str:
        return f"{self.benchmark}/{self.task}/{self.variation}"


@dataclass
class TurnState:
    """Everything a router sees when it picks the model for one turn.

    It deliberately carries no privileged information (no gold path, no oracle):
    a router must decide from the public history and the price cards alone.
    """

    benchmark: str
    task: str
    variation: int
    task_description: str
    history: list[Message]
    turn: int
    dollars_spent: float
    budget_dollars: float
    max_turns: int
    candidates: list[ModelCard]
    last_action_valid: bool = True
    consecutive_errors: int = 0

    def card(self, name: str) -> ModelCard:
        for card in self.candidates:
            if card.name == name:
                return card
        raise KeyError(f"unknown model {name!r} for this turn")


@dataclass
class Decision:
    """A router's choice for one turn, with the probability it had of choosing it.

    ``propensity`` is what off-policy training needs for inverse-propensity weights;
    ``scores`` are the router's per-model values, logged for analysis.
    """

    model: str
    propensity: float
    scores: dict[str, float] | None = None
    overhead: list[Charge] = field(default_factory=list)


@dataclass(frozen=True)
class Charge:
    """One billed call: a model turn or a router's own overhead (e.g. an embedding call)."""

    kind: Literal["model", "router"]
    model: str
    prompt_tokens: int
    completion_tokens: int
    dollars: float
    price_version: str


@dataclass(frozen=True)
class CallContext:
    """Per-call facts a backend may use.

    ``oracle`` is privileged task knowledge that only a simulated backend reads;
    real providers ignore it and routers never see it. ``scratch`` is per-episode
    memory shared by the pool's backends (a simulated model's error streak lives
    there, because the previous turn may have been answered by another model).
    """

    seed: int
    turn: int
    task: TaskInstance
    oracle: Any = None
    scratch: dict = field(default_factory=dict)
