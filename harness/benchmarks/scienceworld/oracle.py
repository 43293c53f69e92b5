"""The gold-path oracle: what simulated ScienceWorld models know and routers never see."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.benchmarks.scienceworld.prompt import FINISH
from harness.types import Action, TaskInstance

# Actions the engine runs as "free" (ActionLookAround/ActionInventory/ActionTaskDesc
# in ActionHandler, or answered by the Python server before the engine sees
# them): zero ticks, world untouched. "look at X" is NOT free: it costs a tick,
# and ticks move time-dependent processes (heating, growing, animals).
ZERO_TICK_ACTIONS: tuple[str, ...] = ("look around", "inventory", "task")


def normalize(action: str) -> str:
    return " ".join(action.strip().lower().split())


def garble(action: str, rng: np.random.Generator) -> str:
    """A command the parser accepts but the engine does not: a typo in the last word."""
    words = action.split()
    last = words[-1]
    if len(last) > 2:
        i = int(rng.integers(1, len(last)))
        last = last[:i] + last[i + 1 :] + "x"
    else:
        last = last + "zq"
    return " ".join(words[:-1] + [last])


class GoldOracle:
    """Privileged knowledge of one episode, read only by SIMULATED models.

    Progress advances when the environment executes exactly the next gold action
    (compared after strip/lower/whitespace collapsing), so a simulated model
    that deviates and comes back resumes where it left off.
    """

    def __init__(self, actions: list[str], visible_objects: Callable[[], list[str]], topic: str):
        self._actions = list(actions)
        self._normalized = [normalize(action) for action in actions]
        self._visible_objects = visible_objects
        self._topic = topic
        self._progress = 0

    def topic(self) -> str:
        return self._topic

    def next_action(self) -> Action | None:
        return Action(self._actions[self._progress]) if self._progress < len(self._actions) else None

    def submit_action(self, answers_correctly: Callable[[], bool]) -> Action:
        """Declaring the task done; the engine's score says whether it was."""
        return Action(FINISH, submit=True)

    def skill_multiplier(self) -> float:
        return 1.0

    def progress(self) -> int:
        return self._progress

    def length(self) -> int:
        return len(self._actions)

    def is_critical(self) -> bool:
        """A focus action is irreversible: focusing on the wrong object fails the task."""
        upcoming = self.next_action()
        return upcoming is not None and normalize(upcoming.text).startswith("focus on ")

    def wrong_critical_actions(self, k: int) -> list[Action]:
        """Up to ``k`` ``focus on X`` actions for visible objects other than the gold targets.

        Built from the visible objects rather than the valid-action list: in
        mendelian-genetics states that list reaches ~30 000 actions and does not
        fit the lean 256 MiB heap.

        Ranked by how many words X shares with the next gold focus target (a
        plausible confusion: "red paint" for "green paint"), then alphabetically.
        """
        targets = [a[len("focus on ") :] for a in self._normalized if a.startswith("focus on ")]
        upcoming = next(
            (a[len("focus on ") :] for a in self._normalized[self._progress :] if a.startswith("focus on ")),
            targets[-1] if targets else "",
        )
        upcoming_words = set(upcoming.split())
        candidates = []
        for thing in self._visible_objects():
            if any(thing in target or target in thing for target in targets):
                continue
            candidates.append((-len(upcoming_words & set(thing.split())), f"focus on {thing}"))
        return [Action(action) for _, action in sorted(candidates)[:k]]

    def wasted_actions(self) -> list[Action]:
        """Valid actions that cost zero ticks and change nothing (verified against the engine)."""
        return [Action(action) for action in ZERO_TICK_ACTIONS]

    def invalid_action(self, gold: Action, rng: np.random.Generator) -> Action:
        return Action(garble(gold.text, rng))

    def observe(self, action: str) -> None:
        if self._progress < len(self._normalized) and normalize(action) == self._normalized[self._progress]:
            self._progress += 1


class GoldReplica:
    """The gold-path oracle rebuilt and advanced outside the engine, exactly as :class:`ScienceWorldEnv`
    does, so the replay prefix cache can serve simulated models without a live engine."""

    def __init__(self, gold: dict[tuple[str, int], list[str]], topics: dict[str, str]):
        self.gold, self.topics = gold, topics

    def start(self, task: TaskInstance, visible_objects: Callable[[], list[str]]) -> GoldOracle | None:
        actions = self.gold.get((task.task, task.variation))
        if actions is None:
            return None
        return GoldOracle(actions, visible_objects, self.topics.get(task.task, "default"))

    def observe(self, oracle: GoldOracle | None, action: Action) -> None:
        if oracle is not None:
            oracle.observe(action.text)
