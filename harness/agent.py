"""The agent loop, the same for every benchmark.

Each turn: the router picks a model, the model answers the shared history, the
reply's action is applied to the environment, and the turn is charged and
persisted before the next one starts. Control leaves the loop by exception
(:class:`EpisodeOver`), which carries why the episode ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import Limits
from harness.errors import UnknownNameError
from harness.ledger import CostLedger
from harness.prompt import (
    FINISH,
    FORMAT_ERROR,
    FormatError,
    initial_messages,
    observation_message,
    parse_action,
)
from harness.protocols import Environment, ModelBackend
from harness.seeding import derive_seed
from harness.trajectory import RunStore
from harness.types import CallContext, Charge, Message, ModelCard, TaskInstance, TurnState
from routers.base import Router


class EpisodeOver(Exception):
    """Raised inside the loop to end an episode; ``status`` says why."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


@dataclass
class EpisodeResult:
    task: TaskInstance
    seed: int
    score: float
    status: str  # done | submitted | max_turns | budget
    turns: int
    ledger: CostLedger
    models: list[str]
    duration_s: float

    @property
    def switches(self) -> int:
        return sum(a != b for a, b in zip(self.models, self.models[1:], strict=False))

    def record(self, router_label: str) -> dict[str, Any]:
        return {
            "episode": self.task.key,
            "benchmark": self.task.benchmark,
            "task": self.task.task,
            "variation": self.task.variation,
            "split": self.task.split,
            "seed": self.seed,
            "router": router_label,
            "score": self.score,
            "cost": self.ledger.total,
            "model_cost": self.ledger.model_total,
            "router_cost": self.ledger.router_total,
            "cost_by_model": self.ledger.by_model(),
            "turns": self.turns,
            "switches": self.switches,
            "switch_rate": self.switches / max(1, self.turns - 1),
            "status": self.status,
            "error": None,
            "duration_s": round(self.duration_s, 3),
        }


def episode_seed(run_seed: int, task: TaskInstance) -> int:
    return derive_seed(run_seed, task.key)


def run_episode(
    env: Environment,
    backends: dict[str, ModelBackend],
    router: Router,
    task: TaskInstance,
    run_seed: int,
    limits: Limits,
    store: RunStore | None = None,
) -> EpisodeResult:
    """Play one episode to its end, persisting every turn as it happens."""
    started = time.perf_counter()
    seed = episode_seed(run_seed, task)
    rng = np.random.default_rng(seed)
    description, first_observation = env.reset(task)
    messages = initial_messages(description, first_observation)
    candidates: list[ModelCard] = [b.card for b in backends.values()]
    ledger = CostLedger()
    models: list[str] = []
    scratch: dict[str, Any] = {}
    turns_path: Path | None = store.begin_episode(task.key) if store else None
    score = 0.0
    last_valid = True
    consecutive_errors = 0
    turn = 0
    try:
        while True:
            if turn >= limits.max_turns:
                raise EpisodeOver("max_turns")
            if ledger.total >= limits.budget_dollars:
                raise EpisodeOver("budget")
            state = TurnState(
                benchmark=task.benchmark,
                task=task.task,
                variation=task.variation,
                task_description=description,
                history=list(messages),
                turn=turn,
                dollars_spent=ledger.total,
                budget_dollars=limits.budget_dollars,
                max_turns=limits.max_turns,
                candidates=candidates,
                last_action_valid=last_valid,
                consecutive_errors=consecutive_errors,
            )
            decision = router.route(state, rng)
            backend = backends.get(decision.model)
            if backend is None:
                raise UnknownNameError(f"router chose unknown model {decision.model!r}")
            ctx = CallContext(seed=seed, turn=turn, task=task, oracle=env.oracle, scratch=scratch)
            completion = backend.complete(messages, ctx)
            for overhead in decision.overhead:
                ledger.charge(turn, overhead)
            ledger.charge(
                turn,
                Charge(
                    kind="model",
                    model=decision.model,
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                    dollars=completion.dollars,
                    price_version=backend.card.price.version,
                ),
            )
            models.append(decision.model)
            history_len = len(messages)
            action: str | None
            error: str | None = None
            done = False
            try:
                action = parse_action(completion.text)
            except FormatError:
                action, observation, valid, error = None, FORMAT_ERROR, False, "format"
            else:
                if action == FINISH:
                    observation, valid = "You declared the task completed.", True
                else:
                    result = env.step(action)
                    observation, valid, done, score = (
                        result.observation,
                        result.valid,
                        result.done,
                        result.score,
                    )
                    error = None if valid else "invalid_action"
            messages.append(Message("assistant", completion.text))
            messages.append(observation_message(observation, score))
            last_valid = valid
            consecutive_errors = 0 if valid else consecutive_errors + 1
            if store is not None and turns_path is not None:
                store.record_turn(
                    turns_path,
                    {
                        "episode": task.key,
                        "turn": turn,
                        "history_len": history_len,
                        "initial_messages": [m.__dict__ for m in messages[:2]] if turn == 0 else None,
                        "model": decision.model,
                        "propensity": decision.propensity,
                        "router_scores": decision.scores,
                        "prompt_tokens": completion.prompt_tokens,
                        "completion_tokens": completion.completion_tokens,
                        "dollars": completion.dollars,
                        "charges": ledger.turn_charges(turn),
                        "output": completion.text,
                        "action": action,
                        "observation": observation,
                        "valid": valid,
                        "error": error,
                        "score": score,
                        "done": done,
                    },
                )
            turn += 1
            if action == FINISH:
                raise EpisodeOver("submitted")
            if done:
                raise EpisodeOver("done")
    except EpisodeOver as over:
        status = over.status
    return EpisodeResult(
        task=task,
        seed=seed,
        score=score,
        status=status,
        turns=turn,
        ledger=ledger,
        models=models,
        duration_s=time.perf_counter() - started,
    )
