"""What a Stage A collection spent exploring, read back from its run directories.

Collections are compared at equal exploration budget (sticky-random episodes against
counterfactual branches, :mod:`harness.branching`), so the spend is computed one way
for both, from the records alone: every model call made (a prefix turn replayed from
the log, ``replayed: "log"``, made none and is not billed again), its tokens, every
dollar billed (model calls, router overhead, judging, abandoned attempts) and the
engine work (resets, and the actions a plain engine had to run, restoring a branch's
prefix included; a prefix cache may have served some of them from memory).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.records import EpisodeRecord, TurnRecord
from harness.trajectory import RunStore


@dataclass(frozen=True)
class ExplorationSpend:
    episodes: int = 0
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dollars: float = 0.0
    engine_resets: int = 0
    engine_steps: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: ExplorationSpend) -> ExplorationSpend:
        return ExplorationSpend(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self))
        )

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "tokens": self.tokens}


def actions_stepped(turn: TurnRecord, submitted: bool) -> int:
    """The actions of one turn line the engine ran: none for a reply that did not parse, the submit not counted."""
    if not turn.action:
        return 0
    return len(str(turn.action).split("; ")) - (1 if submitted else 0)


def episode_spend(record: EpisodeRecord, turns: list[TurnRecord]) -> ExplorationSpend:
    """One episode's spend, from its line and its turn lines in order (:meth:`RunStore.ordered_turns`)."""
    calls, prompt, completion, dollars, steps = 0, 0, 0, 0.0, 0
    for line in turns:
        last = line.turn == turns[-1].turn
        steps += actions_stepped(line, submitted=last and record.status == "submitted")
        if line.extra.get("replayed") == "log":  # restored from the parent's log: no call was made
            continue
        calls += 1
        prompt += line.prompt_tokens
        completion += line.completion_tokens
        dollars += line.dollars + line.router_dollars
    dollars += record.judge_cost + record.abandoned_cost
    return ExplorationSpend(1, calls, prompt, completion, dollars, 1, steps)


def exploration_spend(run_dirs: Iterable[Path]) -> ExplorationSpend:
    """The spend of every recorded episode (failed ones too: they were paid for) of the run directories."""
    total = ExplorationSpend()
    for run_dir in map(Path, run_dirs):
        store = RunStore(run_dir)
        store.config()  # raises if this is not a run directory
        for record in store.episodes():
            total = total + episode_spend(record, store.ordered_turns(record.episode))
    return total
