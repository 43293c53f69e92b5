"""Simulated models: the embedded default when no provider keys exist.

A simulated model writes what a real agent writes (a reply in the benchmark's
format: a thought and one command, or tool calls) and is billed on real token
counts, but chooses its action from privileged knowledge of the task's solution
(the benchmark's oracle), which routers never see. Its profile decides how often
it gets a turn right, per topic; how much worse it is at critical steps, where a
wrong choice fails the task; what its mistakes look like (wasted valid actions,
invalid commands, malformed output); and whether it keeps repeating a mistake
(persistent) or recovers at once (transient). That mix is what gives a router
something to learn.

Every draw comes from a generator seeded by (episode seed, task, turn, model), so a
given model answers a given turn the same way whatever the router did before.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.pool import SimulatedProfile
from harness.seeding import derive_seed
from harness.tokens import count_messages
from harness.types import Action, CallContext, Completion, Message, ModelCard, ToolSpec

STREAK_KEY = "simulated_error_streak"
LAST_ERROR_KEY = "simulated_last_error"

THOUGHTS = {
    "gold": "This brings me closer to completing the task.",
    "finish": "All required steps are done.",
    "wasted": "Let me gather more information first.",
    "invalid": "I will try this command.",
    "wrong_focus": "This looks like the object the task is about.",
}


class SimulatedBackend:
    """One simulated model of a pool; stateless apart from the per-episode scratch."""

    def __init__(self, card: ModelCard, profile: SimulatedProfile):
        self.card = card
        self.profile = profile

    def complete(
        self, messages: list[Message], ctx: CallContext, tools: list[ToolSpec] | None = None
    ) -> Completion:
        if ctx.oracle is None or ctx.agent_format is None:
            raise ConfigError(
                f"simulated model {self.card.name!r} needs the benchmark's oracle, which task "
                f"{ctx.task.key} does not have"
            )
        rng = np.random.default_rng(derive_seed(ctx.seed, ctx.task.key, ctx.turn, self.card.name))
        kind, chosen = self._choose(ctx, rng)
        if kind == "malformed":
            text, tool_calls = chosen
        else:
            text, tool_calls = ctx.agent_format.render(chosen, THOUGHTS[kind])
        prompt_tokens = count_messages(messages, tools)
        mean = (
            self.profile.completion_tokens
            * self.profile.topic_verbosity.get(ctx.oracle.topic(), 1.0)
            * self.profile.task_verbosity.get(ctx.task.task, 1.0)
        )
        sigma = self.profile.completion_sigma
        completion_tokens = max(8, int(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma)))
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            dollars=self.card.price.dollars(prompt_tokens, completion_tokens),
            tool_calls=tool_calls,
        )

    def _choose(self, ctx: CallContext, rng: np.random.Generator) -> tuple[str, Any]:
        """(kind, action), or ('malformed', the reply): kind is 'gold', 'finish', 'wasted', 'invalid' or 'wrong_focus'.

        A persistent mistake repeats exactly, malformed text included.
        """
        oracle = ctx.oracle
        scratch = ctx.scratch
        gold = oracle.next_action()
        give_up = self.profile.task_premature_finish.get(ctx.task.task, self.profile.premature_finish)
        if gold is None or rng.random() < give_up:
            # Whether a submitted answer is right is drawn only if the benchmark asks (an answer, not a declaration).
            return "finish", oracle.submit_action(lambda: rng.random() < self._answer_skill(ctx))
        if scratch.get(STREAK_KEY, 0) > 0 and rng.random() < self.profile.persistence:
            kind, action = scratch[LAST_ERROR_KEY]
            scratch[STREAK_KEY] += 1
            return kind, action
        critical = oracle.is_critical()
        p = self._answer_skill(ctx) if critical else self.profile.skill_for(oracle.topic())
        if rng.random() < p:
            scratch[STREAK_KEY] = 0
            return "gold", gold
        kind, action = self._mistake(ctx, gold, critical, rng)
        scratch[STREAK_KEY] = scratch.get(STREAK_KEY, 0) + 1
        scratch[LAST_ERROR_KEY] = (kind, action)
        return kind, action

    def _answer_skill(self, ctx: CallContext) -> float:
        """The chance of getting a critical step right: the topic's skill, the critical discount, the
        evidence, moved in logit space by the task type's difficulty (an unfamiliar task type is
        harder exactly where it matters: choosing what to focus on)."""
        p = (
            self.profile.skill_for(ctx.oracle.topic())
            * self.profile.critical_skill
            * ctx.oracle.skill_multiplier()
        )
        offset = self.profile.task_difficulty.get(ctx.task.task, 0.0)
        if offset == 0.0 or p <= 0.0 or p >= 1.0:
            return p
        return 1.0 / (1.0 + math.exp(-(math.log(p / (1.0 - p)) + offset)))

    def _mistake(
        self, ctx: CallContext, gold: Action, critical: bool, rng: np.random.Generator
    ) -> tuple[str, Any]:
        oracle = ctx.oracle
        if critical and rng.random() < self.profile.wrong_focus_share:
            wrong = oracle.wrong_critical_actions(5)
            if wrong:
                return "wrong_focus", wrong[int(rng.integers(len(wrong)))]
        kinds = list(self.profile.error_mix)
        weights = np.array([self.profile.error_mix[k] for k in kinds], dtype=float)
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        if kind == "wasted":
            options = oracle.wasted_actions()
            if options:
                return kind, options[int(rng.integers(len(options)))]
            kind = "invalid"
        if kind == "invalid":
            return kind, oracle.invalid_action(gold, rng)
        return kind, ctx.agent_format.malformed(rng)
