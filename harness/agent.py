"""The agent loop, the same for every benchmark.

Each turn: the router picks a model, the model answers the shared history (with
the benchmark's tools, if it has any), the benchmark's format turns the reply
into actions (one text command, or up to N tool calls), each action is applied
to the environment and its result sent back, and the turn is charged and
persisted, with the messages it appended, before the next one starts. When a
limit ends the episode the benchmark may take a final answer; then its scorer
gives the episode's score (a judge's call billed apart). Control leaves the loop
by exception (:class:`EpisodeOver`), which carries why the episode ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.benchmarks.base import Benchmark, FormatError, Transcript
from harness.config import Limits
from harness.errors import UnknownNameError
from harness.ledger import CostLedger
from harness.protocols import Environment, ModelBackend
from harness.records import EpisodeRecord, TurnRecord, count_switches
from harness.seeding import derive_seed
from harness.trajectory import RunStore
from harness.types import Action, CallContext, Completion, Message, ModelCard, TaskInstance, TurnState
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
    score_details: dict[str, Any] = field(default_factory=dict)

    @property
    def switches(self) -> int:
        return count_switches(self.models)

    def record(self, router_label: str, **fields: Any) -> EpisodeRecord:
        """The episode's line of ``episodes.jsonl``; ``fields`` adds what the caller knows (attempts, ...)."""
        return EpisodeRecord.of(
            self.task,
            self.seed,
            router_label,
            self.ledger,
            models=self.models,
            score=self.score,
            status=self.status,
            turns=self.turns,
            duration_s=round(self.duration_s, 3),
            score_details=self.score_details,
            **fields,
        )


def episode_seed(run_seed: int, task: TaskInstance) -> int:
    return derive_seed(run_seed, task.key)


@dataclass
class TurnOutcome:
    """What the actions of one reply did: the messages they append and how the turn is recorded."""

    messages: list[Message] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    valid: bool = True
    error: str | None = None  # "format" | "invalid_action"
    done: bool = False
    submitted: Action | None = None
    step_times: list[list[float]] = field(default_factory=list)  # [start, end] (epoch s) per observation


class Progress:
    """An episode under way as its limits and its router see it: the turns played, the dollars spent and
    the models chosen so far. The agent loop and a served session (:mod:`harness.serve.sessions`) share it,
    so both stop at their limits, and show their router its state, alike."""

    limits: Limits  # resolved: no field unset
    turn: int
    ledger: CostLedger
    models: list[str]

    def limit_reached(self) -> str | None:
        """The check before each turn: the turn limit, then the dollar budget (the status it ends with)."""
        assert self.limits.max_turns is not None and self.limits.budget_dollars is not None
        if self.turn >= self.limits.max_turns:
            return "max_turns"
        if self.ledger.episode_total >= self.limits.budget_dollars:
            return "budget"
        return None

    def turn_state(self, task: TaskInstance, description: str, history: list[Message],
                   candidates: list[ModelCard], **more: Any) -> TurnState:  # fmt: skip
        """What the router sees before this turn; ``more`` are the fields only the agent loop knows."""
        assert self.limits.max_turns is not None and self.limits.budget_dollars is not None
        return TurnState(
            benchmark=task.benchmark,
            task=task.task,
            variation=task.variation,
            task_description=description,
            history=history,
            turn=self.turn,
            dollars_spent=self.ledger.episode_total,
            budget_dollars=self.limits.budget_dollars,
            max_turns=self.limits.max_turns,
            candidates=candidates,
            previous_model=self.models[-1] if self.models else None,
            **more,
        )


class Episode(Progress):
    """One episode's state and loop; subclass and override a step to change one behaviour."""

    def __init__(
        self,
        benchmark: Benchmark,
        env: Environment,
        backends: dict[str, ModelBackend],
        router: Router,
        task: TaskInstance,
        run_seed: int,
        limits: Limits,
        store: RunStore | None = None,
        judge: ModelBackend | None = None,
        constrained: bool = False,
    ):
        self.constrained = constrained
        self.benchmark, self.env, self.backends, self.router = benchmark, env, backends, router
        self.format = benchmark.agent_format
        self.task, self.limits, self.store = task, limits.over(benchmark.limits), store
        self.scorer = benchmark.scorer(judge)
        self.seed = episode_seed(run_seed, task)
        self.rng = np.random.default_rng(self.seed)
        self.candidates = [b.card for b in backends.values()]
        self.ledger = CostLedger()
        self.models: list[str] = []
        self.scratch: dict[str, Any] = {}
        self.score = 0.0
        self.valid, self.consecutive_errors, self.turn = True, 0, 0
        self.submitted: Action | None = None
        self.step_start = 0.0  # when the action being applied began (epoch s)

    def run(self) -> EpisodeResult:
        started = time.perf_counter()
        # The attempt's turn file first, so that an attempt killed even while the engine resets counts.
        self.turns_path: Path | None = self.store.begin_episode(self.task.key) if self.store else None
        self.description, observation = self.env.reset(self.task)
        self.messages = self.format.initial_messages(self.description, observation)
        self.initial_count = len(self.messages)
        try:
            while True:
                self.check_limits()
                self.play_turn()
        except EpisodeOver as over:
            status = over.status
        transcript = Transcript(
            self.task, self.description, self.messages, self.score, status, self.submitted
        )
        if self.submitted is None and status in ("max_turns", "budget"):
            transcript.submitted = self.benchmark.final_answer(transcript)
            transcript.forced = transcript.submitted is not None
        verdict = self.scorer.score(transcript, self.context())
        for charge in verdict.charges:
            self.ledger.charge(self.turn, charge)
        return EpisodeResult(
            task=self.task,
            seed=self.seed,
            score=verdict.value,
            status=status,
            turns=self.turn,
            ledger=self.ledger,
            models=self.models,
            duration_s=time.perf_counter() - started,
            score_details=verdict.details,
        )

    def check_limits(self) -> None:
        status = self.limit_reached()
        if status is not None:
            raise EpisodeOver(status)

    def context(self) -> CallContext:
        return CallContext(
            seed=self.seed,
            turn=self.turn,
            task=self.task,
            oracle=getattr(self.env, "oracle", None),
            agent_format=self.format,
            scratch=self.scratch,
        )

    def state(self) -> TurnState:
        return self.turn_state(self.task, self.description, list(self.messages), self.candidates,
                               last_action_valid=self.valid, consecutive_errors=self.consecutive_errors)  # fmt: skip

    def play_turn(self) -> None:
        route_start = time.time()
        decision = self.router.route(self.state(), self.rng)
        backend = self.backends.get(decision.model)
        if backend is None:
            raise UnknownNameError(f"router chose unknown model {decision.model!r}")
        ctx = self.context()
        if self.constrained:
            ctx = replace(ctx, reply_schema=self.format.reply_schema(self.env))
        model_start = time.time()
        completion = backend.complete(self.messages, ctx, tools=list(self.format.tools) or None)
        model_end = time.time()
        for overhead in decision.overhead:
            self.ledger.charge(self.turn, overhead)
        charge = self.ledger.bill_model(self.turn, decision.model, backend.card.price, completion)
        cached = self.ledger.cached.get(self.turn, 0)
        self.models.append(decision.model)
        history_len = len(self.messages)
        outcome = self.act(completion)
        appended = [completion.message(), *outcome.messages]
        self.messages.extend(appended)
        self.valid = outcome.valid
        self.consecutive_errors = 0 if outcome.valid else self.consecutive_errors + 1
        if self.store is not None and self.turns_path is not None:
            first = self.turn == 0
            self.store.record_turn(
                self.turns_path,
                TurnRecord(
                    episode=self.task.key,
                    turn=self.turn,
                    history_len=history_len,
                    initial_messages=self.messages[: self.initial_count] if first else None,
                    task_description=self.description if first else None,
                    messages=appended,
                    model=decision.model,
                    propensity=decision.propensity,
                    router_scores=decision.scores,
                    prompt_tokens=completion.prompt_tokens,
                    cached_prompt_tokens=cached,
                    uncached_prompt_tokens=completion.prompt_tokens - cached,
                    completion_tokens=completion.completion_tokens,
                    dollars=charge.dollars,
                    charges=self.ledger.turn_charges(self.turn),
                    output=completion.text,
                    action="; ".join(a.describe() for a in outcome.actions) or None,
                    observation="\n".join(outcome.observations),
                    valid=outcome.valid,
                    error=outcome.error,
                    score=self.score,
                    done=outcome.done,
                    times={
                        "route": [route_start, model_start],
                        "model": [model_start, model_end],
                        "steps": outcome.step_times,
                    },
                    extra={} if completion.latency_s is None else {"latency_s": completion.latency_s},
                ),
            )
        self.turn += 1
        if outcome.submitted is not None:
            self.submitted = outcome.submitted
            raise EpisodeOver("submitted")
        if outcome.done:
            raise EpisodeOver("done")

    def act(self, completion: Completion) -> TurnOutcome:
        """Apply a reply's actions in order, up to the format's limit; stop at a submit or the end."""
        outcome = TurnOutcome()
        parts = self.format.parse(completion)
        for index, part in enumerate(parts):
            self.step_start = time.time()
            if index >= self.format.max_actions_per_turn:
                part = FormatError(
                    f"only {self.format.max_actions_per_turn} actions are run per turn; this one was not",
                    getattr(part, "call_id", None),
                )
            if isinstance(part, FormatError):
                self.respond(outcome, str(part), part.call_id)
                outcome.valid, outcome.error = False, "format"
                continue
            outcome.actions.append(part)
            if part.submit:
                outcome.submitted = part
                self.respond(outcome, self.format.submit_observation, part.call_id)
                break
            result = self.env.step(part)
            self.score = result.score
            self.respond(outcome, result.observation, part.call_id)
            if not result.valid:
                outcome.valid = False
                outcome.error = outcome.error or "invalid_action"
            if result.done:
                outcome.done = True
                break
        return outcome

    def respond(self, outcome: TurnOutcome, observation: str, call_id: str | None) -> None:
        outcome.step_times.append([self.step_start, time.time()])
        outcome.observations.append(observation)
        outcome.messages.append(self.format.observation_message(observation, self.score, call_id))


def run_episode(
    benchmark: Benchmark,
    env: Environment,
    backends: dict[str, ModelBackend],
    router: Router,
    task: TaskInstance,
    run_seed: int,
    limits: Limits,
    store: RunStore | None = None,
    judge: ModelBackend | None = None,
) -> EpisodeResult:
    """Play one episode to its end, persisting every turn as it happens."""
    return Episode(benchmark, env, backends, router, task, run_seed, limits, store, judge).run()
