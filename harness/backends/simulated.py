"""Simulated models: the embedded default when no provider keys exist.

A simulated model writes what a real agent writes (a thought and one action in the
prompt's format) and is billed on real token counts, but chooses its action from
privileged knowledge of the task's solution path (the environment's oracle), which
routers never see. Its profile decides how often it gets a turn right, per topic;
how much worse it is at critical steps, where a wrong ``focus on`` fails the task;
what its mistakes look like (wasted valid actions, invalid commands, malformed
output); and whether it keeps repeating a mistake (persistent) or recovers at once
(transient). That mix is what gives a router something to learn.

Every draw comes from a generator seeded by (episode seed, task, turn, model), so a
given model answers a given turn the same way whatever the router did before.
"""

from __future__ import annotations

import numpy as np

from harness.pool import SimulatedProfile
from harness.seeding import derive_seed
from harness.tokens import count_messages
from harness.types import CallContext, Completion, Message, ModelCard

STREAK_KEY = "simulated_error_streak"
LAST_ERROR_KEY = "simulated_last_error"

MALFORMED_REPLIES = (
    "I need to think about what the task requires before acting further.",
    "Let me reconsider the situation. The next step should move us toward the goal.",
    "Thought: the previous observation suggests I should proceed carefully.",
)


def task_topic(task: str) -> str:
    from harness.environments.splits import TOPICS

    return TOPICS.get(task, "default")


class SimulatedBackend:
    """One simulated model of a pool; stateless apart from the per-episode scratch."""

    def __init__(self, card: ModelCard, profile: SimulatedProfile):
        self.card = card
        self.profile = profile

    def complete(self, messages: list[Message], ctx: CallContext) -> Completion:
        rng = np.random.default_rng(derive_seed(ctx.seed, ctx.task.key, ctx.turn, self.card.name))
        kind, action = self._choose(ctx, rng)
        text = self._render(kind, action, rng)
        prompt_tokens = count_messages(messages)
        mean = self.profile.completion_tokens
        sigma = self.profile.completion_sigma
        completion_tokens = max(8, int(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma)))
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            dollars=self.card.price.dollars(prompt_tokens, completion_tokens),
        )

    def _choose(self, ctx: CallContext, rng: np.random.Generator) -> tuple[str, str]:
        """Return (kind, action): kind is 'gold', 'finish', 'wasted', 'invalid', 'malformed' or 'wrong_focus'."""
        oracle = ctx.oracle
        scratch = ctx.scratch
        if oracle is None:
            return "wasted", "look around"
        gold = oracle.next_action()
        if gold is None or rng.random() < self.profile.premature_finish:
            return "finish", "task completed"
        if scratch.get(STREAK_KEY, 0) > 0 and rng.random() < self.profile.persistence:
            kind, action = scratch[LAST_ERROR_KEY]
            scratch[STREAK_KEY] += 1
            return kind, action
        p = self.profile.skill_for(task_topic(ctx.task.task))
        critical = oracle.is_critical()
        if critical:
            p *= self.profile.critical_skill
        if rng.random() < p:
            scratch[STREAK_KEY] = 0
            return "gold", gold
        kind, action = self._mistake(oracle, gold, critical, rng)
        scratch[STREAK_KEY] = scratch.get(STREAK_KEY, 0) + 1
        scratch[LAST_ERROR_KEY] = (kind, action)
        return kind, action

    def _mistake(self, oracle, gold: str, critical: bool, rng: np.random.Generator) -> tuple[str, str]:
        if critical and rng.random() < self.profile.wrong_focus_share:
            wrong = oracle.wrong_focus_actions(5)
            if wrong:
                return "wrong_focus", wrong[int(rng.integers(len(wrong)))]
        kinds = list(self.profile.error_mix)
        weights = np.array([self.profile.error_mix[k] for k in kinds], dtype=float)
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        if kind == "wasted":
            options = oracle.wasted_actions() or ["look around"]
            return kind, options[int(rng.integers(len(options)))]
        if kind == "invalid":
            return kind, _garble(gold, rng)
        return kind, MALFORMED_REPLIES[int(rng.integers(len(MALFORMED_REPLIES)))]

    def _render(self, kind: str, action: str, rng: np.random.Generator) -> str:
        if kind == "malformed":
            return action
        thought = {
            "gold": "This brings me closer to completing the task.",
            "finish": "All required steps are done.",
            "wasted": "Let me gather more information first.",
            "invalid": "I will try this command.",
            "wrong_focus": "This looks like the object the task is about.",
        }[kind]
        return f"Thought: {thought}\nAction: {action}"


def _garble(action: str, rng: np.random.Generator) -> str:
    """A command the parser accepts but the engine does not: a typo in the last word."""
    words = action.split()
    last = words[-1]
    if len(last) > 2:
        i = int(rng.integers(1, len(last)))
        last = last[:i] + last[i + 1 :] + "x"
    else:
        last = last + "zq"
    return " ".join(words[:-1] + [last])
