"""The LLM router: a policy model reads the last turns and the pool's price cards and names a model.

The paper's "LLM router" baseline. Every turn the policy model gets the task, the
last ``k`` turns of the shared history, the spend so far and each candidate's card
(price, context window, reasoning, knowledge cutoff), and answers with one
candidate's name. Its own call is billed as router overhead, so its cost counts
against the routed episode like any router's.

It needs a real policy backend: ``policy_model`` (a LiteLLM model id) with
``api_base``/``api_key_env`` and the policy's prices, or a backend object passed in.
The simulated pool has no model that can read a prompt and choose, so without a
configured policy the router refuses to start, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from harness.errors import ConfigError
from harness.protocols import ModelBackend
from harness.types import (
    CallContext,
    Charge,
    Decision,
    Message,
    ModelCard,
    PriceCard,
    TaskInstance,
    TurnState,
)
from routers.base import Router, pool_names

INSTRUCTIONS = (
    "You route the turns of an agent between language models. Pick the model that should write the"
    " agent's next reply: a strong model where the next step is hard or the agent is stuck, a cheap one"
    " where the step is routine, keeping the episode within its budget. Answer with the model's name only."
)
MESSAGE_CHARS = 1500  # each history message shown is cut to this many characters


def card_line(card: ModelCard) -> str:
    p = card.price
    return (
        f"- {card.name}: ${p.input_per_mtok:g} input / ${p.output_per_mtok:g} output per 1M tokens,"
        f" context {card.context_window} tokens, reasoning {'yes' if card.reasoning else 'no'},"
        f" knowledge cutoff {card.knowledge_cutoff}"
    )


def routing_prompt(state: TurnState, k: int) -> list[Message]:
    """The policy model's request: instructions and cards, then the task, the last ``k`` turns, the spend."""
    turns = [m for m in state.history if m.role != "system"][1:]  # after the opening task message
    recent = turns[-2 * k :] if k > 0 else []
    shown = "\n".join(f"[{m.role}] {m.content[:MESSAGE_CHARS]}" for m in recent) or "(no turns yet)"
    cards = "\n".join(card_line(c) for c in state.candidates)
    user = (
        f"Task: {state.task_description}\n\nLast {k} turns:\n{shown}\n\n"
        f"Turn {state.turn} of at most {state.max_turns}; spent ${state.dollars_spent:.4f} of"
        f" ${state.budget_dollars:g}. Last action valid: {state.last_action_valid}.\n\n"
        f"Candidates:\n{cards}\n\nWhich model writes the next reply?"
    )
    return [Message("system", INSTRUCTIONS), Message("user", user)]


def named_model(reply: str, names: list[str]) -> str | None:
    """The candidate named in the reply: the earliest mention, longer names first at the same place."""
    found = []
    for name in names:
        match = re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-]|\.\w)", reply, flags=re.IGNORECASE)
        if match:
            found.append((match.start(), -len(name), name))
    return min(found)[2] if found else None


class LLMRouter(Router):
    name = "llm-router"

    def __init__(
        self,
        policy_model: str | None = None,
        api_base: str | None = None,
        api_key_env: str | None = None,
        input_per_mtok: float = 0.0,
        output_per_mtok: float = 0.0,
        k: int = 3,
        fallback: str | None = None,
        timeout_s: float = 60.0,
        backend: ModelBackend | None = None,
    ):
        """``fallback`` answers a turn whose reply names no candidate (default: the cheapest card)."""
        if k < 0:
            raise ConfigError(f"router 'llm-router': k must be >= 0, got {k}")
        if backend is None:
            if not policy_model:
                raise ConfigError(
                    "router 'llm-router' needs a policy backend (policy_model=..., api_base=..., "
                    "api_key_env=...); the simulated pool has no model that can choose, so it does not run"
                )
            from harness.backends.litellm_backend import LiteLLMBackend

            card = ModelCard(
                name=f"policy:{policy_model}",
                price=PriceCard(input_per_mtok, output_per_mtok, version="router-policy"),
                provider_model=policy_model,
            )
            backend = LiteLLMBackend(card, api_base=api_base, api_key_env=api_key_env, timeout_s=timeout_s)
        self.backend = backend
        self.k = k
        self.fallback = fallback
        self.unparsed = 0  # replies that named no candidate, for the run's log

    def check_pool(self, pool: Sequence[ModelCard] | Sequence[str]) -> None:
        if self.fallback is not None and self.fallback not in pool_names(pool):
            raise ConfigError(f"router 'llm-router': fallback {self.fallback!r} is not in the pool")

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        names = [c.name for c in state.candidates]
        ctx = CallContext(
            seed=0, turn=state.turn, task=TaskInstance(state.benchmark, state.task, state.variation, "")
        )
        completion = self.backend.complete(routing_prompt(state, self.k), ctx)
        chosen = named_model(completion.text, names)
        if chosen is None:
            self.unparsed += 1
            cheapest = min(state.candidates, key=lambda c: c.price.input_per_mtok + c.price.output_per_mtok)
            chosen = self.fallback or cheapest.name
        overhead = Charge(
            kind="router",
            model=self.backend.card.name,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            dollars=completion.dollars,
            price_version=self.backend.card.price.version,
        )
        return Decision(model=chosen, propensity=1.0, overhead=[overhead])
