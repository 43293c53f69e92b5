"""Plain data passed between the agent loop, environments, backends and routers.

Everything here is a frozen or plain dataclass so that it can be written to a
trajectory line with ``dataclasses.asdict`` and read back without custom code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ChargeKind = Literal["model", "router", "judge"]


@dataclass(frozen=True)
class ToolCall:
    """One call a model asked for; ``arguments`` is the raw JSON text, parsed by the benchmark's format."""

    id: str
    name: str
    arguments: str = "{}"

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model, in the OpenAI tools format's terms (JSON schema parameters)."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class Message:
    """A chat message; tool calls ride on assistant messages, a tool result names its call."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data with the optional fields only when set, so text-only messages stay {role, content}."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        return cls(
            role=data["role"],
            content=data.get("content") or "",
            tool_calls=tuple(ToolCall(**call) for call in data.get("tool_calls") or ()),
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
        )


@dataclass(frozen=True)
class CacheRule:
    """When a provider's prompt cache serves a turn's prefix.

    A prefix shorter than ``min_prefix_tokens`` is never cached. Caches are kept per
    model: with ``survives_switch`` False (the default, and what a router should
    assume) a turn answered by another model in between drops it, because the
    provider's cache entry expires or the next call goes elsewhere; True keeps each
    model's cache across other models' turns.
    """

    min_prefix_tokens: int = 1024
    survives_switch: bool = False


@dataclass(frozen=True)
class PriceCard:
    """Dollars per one million tokens; ``version`` (required: which price list the numbers come from)
    is recorded with every charge.

    ``cached_input_per_mtok`` set turns on cache-aware billing for the model: the
    prompt prefix it already processed on its previous turn is billed at that price
    (see :class:`CacheRule` and :meth:`harness.ledger.CostLedger.bill_model`).
    """

    input_per_mtok: float
    output_per_mtok: float
    version: str
    cached_input_per_mtok: float | None = None
    cache: CacheRule = field(default_factory=CacheRule)

    def __post_init__(self) -> None:
        if isinstance(self.cache, dict):  # a card read back from JSON (a checkpoint's pool)
            object.__setattr__(self, "cache", CacheRule(**self.cache))

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
    tool_calls: tuple[ToolCall, ...] = ()
    latency_s: float | None = None  # wall time of the call that answered, where a real server answered

    def message(self) -> Message:
        return Message("assistant", self.text, tool_calls=self.tool_calls)


@dataclass(frozen=True)
class Action:
    """One thing the agent asked the environment to do: a text command, or one tool call.

    ``submit`` marks the action that ends the episode with an answer (ScienceWorld's
    "task completed", a tool benchmark's answer tool); the environment is not
    stepped for it and the scorer reads it from the transcript.
    """

    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None
    submit: bool = False

    def describe(self) -> str:
        if self.tool is None:
            return self.text
        return f"{self.tool}({json.dumps(self.arguments, sort_keys=True)})"


@dataclass(frozen=True)
class StepResult:
    """What an environment returns after one action (Gymnasium-like, text world)."""

    observation: str
    score: float  # task score so far, in the benchmark's own range
    done: bool
    valid: bool = True  # False when the engine did not understand the action or the tool failed


@dataclass(frozen=True)
class TaskInstance:
    """One episode's task: which benchmark, task type, variation and split.

    ``repeat`` numbers the plays of one variation when a run plays each several times: the
    repeat is part of the key, so each play has its own episode seed and its own record, and
    repeat 0 keeps the key (and the seed) a run without repeats gives the variation.
    """

    benchmark: str
    task: str
    variation: int
    split: str
    repeat: int = 0

    @property
    def key(self) -> str:
        base = f"{self.benchmark}/{self.task}/{self.variation}"
        return f"{base}/r{self.repeat}" if self.repeat else base


@dataclass
class TurnState:
    """Everything a router sees when it picks the model for one turn.

    It deliberately carries no privileged information (no gold path, no oracle):
    a router must decide from the public history and the price cards alone.
    ``previous_model`` is the candidate that answered the previous turn (None at turn 0):
    a policy that keeps a model (sticky exploration, an episode-level router) states
    its probabilities from the state alone with it, as off-policy evaluation needs.
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
    previous_model: str | None = None

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
    """One billed call: a model turn, a router's own overhead (e.g. an embedding call) or a judge's verdict."""

    kind: ChargeKind
    model: str
    prompt_tokens: int
    completion_tokens: int
    dollars: float
    price_version: str


@dataclass(frozen=True)
class CallContext:
    """Per-call facts a backend may use.

    ``oracle`` is privileged task knowledge that only a simulated backend reads;
    real providers ignore it and routers never see it. ``agent_format`` is the
    benchmark's public reply format, which a simulated backend needs to write a
    reply. ``scratch`` is per-episode memory shared by the pool's backends (a
    simulated model's error streak lives there, because the previous turn may
    have been answered by another model).
    """

    seed: int
    turn: int
    task: TaskInstance
    oracle: Any = None
    agent_format: Any = None
    scratch: dict = field(default_factory=dict)
    # Constrained decoding for this turn: the JSON schema the reply must satisfy, or None.
    reply_schema: dict | None = None
