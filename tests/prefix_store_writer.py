"""One process walking action sequences through the prefix cache stored on disk, for the concurrency test.

``python prefix_store_writer.py DIRECTORY WORKER`` plays :func:`walks` (the same for every worker,
worker 1 in reverse order) through the :class:`StoredPrefixCache` in DIRECTORY over :class:`TallyWorld`, then
prints its counters and every result it was given as one JSON line. The workers start together:
each writes ``ready-WORKER`` in DIRECTORY and waits for the others'.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from harness.replay.prefix_cache import PrefixCacheEnv
from harness.replay.prefix_store import StoredPrefixCache
from harness.types import Action, StepResult, TaskInstance

STORE = "tally.sqlite"
TASKS = [TaskInstance("counter", f"t{i}", 0, "test") for i in range(6)]


class TallyWorld:
    """A deterministic engine whose observation spells out the whole prefix, so any wrongly served
    result shows; scores are ints, as ScienceWorld's."""

    def __init__(self) -> None:
        self.steps = self.resets = 0

    def reset(self, task: TaskInstance) -> tuple[str, str]:
        self.resets += 1
        self.task, self.prefix = task, []
        return f"tally for {task.task}", "nothing yet"

    def step(self, action: Action) -> StepResult:
        self.steps += 1
        self.prefix.append(action.text)
        return StepResult(
            f"{self.task.task}: {' '.join(self.prefix)}", len(self.prefix), len(self.prefix) >= 12
        )

    @property
    def oracle(self):
        return None

    def close(self) -> None:
        pass


def walks(n: int = 60, seed: int = 0) -> list[tuple[TaskInstance, list[str]]]:
    """Action sequences over few letters: many share prefixes, within a task and across workers."""
    rng = np.random.default_rng(seed)
    return [
        (
            TASKS[int(rng.integers(len(TASKS)))],
            [str(c) for c in rng.choice(list("abc"), size=int(rng.integers(3, 9)))],
        )
        for _ in range(n)
    ]


def play(env, plan) -> list[list]:
    out = []
    for task, actions in plan:
        env.reset(task)
        out.append([[r.observation, r.score, r.done] for r in (env.step(Action(a)) for a in actions)])
    return out


def main(directory: str, worker: str, workers: str = "2") -> None:
    (Path(directory) / f"ready-{worker}").write_text("")
    deadline = time.monotonic() + 60
    while len(list(Path(directory).glob("ready-*"))) < int(workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    cache = StoredPrefixCache(Path(directory) / STORE)
    plan = walks(seed=0) if worker == "0" else list(reversed(walks(seed=0)))
    results = play(PrefixCacheEnv(TallyWorld(), cache), plan)
    print(json.dumps({"counts": cache.stats.counts(), "results": results}))


if __name__ == "__main__":
    main(*sys.argv[1:])
