"""Counterfactual branches: several models tried at one logged state, every branch continued alike.

Why. An ordinary logged episode credits each decision with the luck of every later
turn. A branch point removes most of that: at a state sampled along a logged episode
the environment is restored, each of a set of candidate models answers that one turn,
and every branch is then played to its end by one shared *continuation policy* under
common random numbers. Siblings differ only in the branched decision (and in what it
caused), so the difference of their outcomes measures that decision, and the paired
target (:mod:`routers.learned.targets`) trains on exactly that difference.

How a state is restored, without reading anything privileged. The environment is
reset and the logged prefix of actions replayed on it (deterministic engines give back
the logged observations; any difference is an error, never silently accepted). The
models' side of the prefix is restored one of two ways (``BranchDesign.prefix``):

* ``log``: the history the next model sees is the logged one, rebuilt from the turn
  lines; no model is called for the prefix and nothing is billed for it. This is what
  a stateless provider allows, and the cheap way. A simulated pool keeps a little
  per-episode memory outside the history (a model's error streak), which starts empty
  at the branch point in this mode;
* ``calls``: every prefix turn is asked of its logged model again, with the parent's
  episode seed, and must answer exactly as logged; the calls are billed. This restores
  per-episode memory too, for backends that answer the same prompt the same way (the
  simulated pool does; real providers generally do not, and then ``log`` is the mode).

Common random numbers. Each branch uses the parent episode's seed, so a simulated
model's draws at (turn, model) are the parent's and every sibling's (they are seeded
per episode seed, task, turn and model: :mod:`harness.backends.simulated`). The
continuation policy draws from a generator seeded per (episode seed, turn), not from
the episode's one sequential stream, so how many draws the branched decision or an
earlier turn took cannot shift a later turn's draw. Ordinary runs keep their seeding.

Records. Branches are ordinary episodes of a run directory in the format ``harness run``
writes (config.json, episodes.jsonl, turns/), so training, replay and off-policy
evaluation read them. Each episode line carries ``branch_of`` (the parent's run, its
episode key as ``parent`` and its seed, the branched turn and model, the sibling group,
the design and the continuation policy) and ``billed_cost``, the dollars this collection
actually spent on it (in ``log`` mode the replayed prefix is not billed again). Turn
lines of the prefix carry ``replayed`` (the mode) and the parent's model and propensity;
the branched turn's propensity is its probability under the design (below); continuation
turns carry the continuation policy's own.

The design's propensity. At each branch point a uniformly random subset of ``models``
candidates (all of them by default), in random order, is played. Each sibling's model
is then marginally uniform over the pool, so its propensity is 1/n whatever the subset
size: averaged over the siblings, inverse-propensity estimates stay unbiased. Siblings
of one point are dependent; ``branch_of.group`` names the point, for clustered
intervals and for the paired target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.agent import Episode, episode_seed
from harness.backends import build_backends
from harness.benchmarks import get_benchmark
from harness.config import BranchDesign, RunConfig, from_dict, resolve, snapshot, to_plain
from harness.errors import ConfigError, HarnessError
from harness.pool import Pool, load_pool
from harness.protocols import Environment, ModelBackend
from harness.records import EpisodeRecord, TurnRecord
from harness.seeding import derive_seed
from harness.trajectory import RunStore
from harness.types import CallContext, Completion, Decision, Message, TaskInstance, ToolSpec, TurnState
from routers import make_router
from routers.base import Router

# What a prefix turn line must repeat of its parent's for the prefix to count as restored.
RESTORED_FIELDS = (
    "model",
    "history_len",
    "messages",
    "prompt_tokens",
    "completion_tokens",
    "dollars",
    "action",
    "observation",
    "valid",
    "score",
    "done",
)


class BranchDivergence(HarnessError):
    """A replayed prefix did not give back what the parent logged (engine or model not deterministic)."""


@dataclass(frozen=True)
class BranchPoint:
    """One state of one parent episode and the models tried there."""

    parent: str  # the parent's episode key
    turn: int
    models: tuple[str, ...]

    @property
    def group(self) -> str:
        return f"{self.parent}@{self.turn}"

    def key(self, model: str) -> str:
        """The branch's episode key: unique in the run, readable, and a valid turn-file name."""
        return f"{self.parent}/branch-t{self.turn}-{model}"


def branch_points(
    parents: Iterable[tuple[str, int]], names: list[str], design: BranchDesign
) -> list[BranchPoint]:
    """The design's branch points for parent episodes given as (key, number of turns), in order."""
    k = len(names) if design.models is None else min(design.models, len(names))
    parents = list(parents)
    if design.episodes is not None and design.episodes < len(parents):
        drawn = np.random.default_rng(derive_seed(design.seed, "branch-episodes"))
        parents = [
            parents[i] for i in sorted(drawn.choice(len(parents), size=design.episodes, replace=False))
        ]
    points = []
    for key, turns in parents:
        if turns < 1:
            continue
        rng = np.random.default_rng(derive_seed(design.seed, "branch-turns", key))
        for turn in sorted(rng.choice(turns, size=min(design.states_per_episode, turns), replace=False)):
            pick = np.random.default_rng(derive_seed(design.seed, "branch-models", key, int(turn)))
            models = tuple(names[i] for i in pick.permutation(len(names))[:k])
            points.append(BranchPoint(key, int(turn), models))
    return points


class BranchRouter(Router):
    """The router of one branch: the parent's models on the prefix, the branched model, then the continuation.

    The continuation draws from a generator seeded by (episode seed, turn), so siblings'
    continuation draws at a turn are the same whatever happened before it.
    """

    name = "branch"

    def __init__(
        self, prefix: list[TurnRecord], model: str, propensity: float, continuation: Router, seed: int
    ):
        self.prefix, self.model, self.propensity = prefix, model, propensity
        self.continuation, self.seed = continuation, seed

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        branched = len(self.prefix)
        if state.turn < branched:
            # This router always replays the logged model; the line keeps the parent's propensity (BranchTurns).
            logged = self.prefix[state.turn]
            return Decision(logged.model, 1.0, logged.router_scores)
        if state.turn == branched:
            return Decision(self.model, self.propensity)
        return self.continuation.route(state, continuation_rng(self.seed, state.turn))


def continuation_rng(seed: int, turn: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, "continuation", turn))


class PrefixBackend:
    """A pool model that answers the prefix's turns as logged: from the log (``log``) or by calling it and
    checking that it answers as logged (``calls``); from the branched turn on it is the model itself."""

    def __init__(self, inner: ModelBackend, prefix: list[TurnRecord], mode: str, where: str):
        self.inner, self.prefix, self.mode, self.where = inner, prefix, mode, where
        self.card = inner.card

    def complete(
        self, messages: list[Message], ctx: CallContext, tools: list[ToolSpec] | None = None
    ) -> Completion:
        if ctx.turn >= len(self.prefix):
            return self.inner.complete(messages, ctx, tools)
        logged = self.prefix[ctx.turn]
        if self.mode == "calls":
            completion = self.inner.complete(messages, ctx, tools)
            if completion.text != (logged.output or ""):
                raise BranchDivergence(
                    f"{self.where}: turn {ctx.turn}: {self.card.name} answered differently than logged; "
                    "this model does not repeat itself, branch with prefix: log"
                )
            return completion
        return Completion(
            text=logged.output or "",
            prompt_tokens=logged.prompt_tokens,
            completion_tokens=logged.completion_tokens,
            dollars=logged.dollars,  # what the provider billed (a cached price is re-derived)
            tool_calls=logged.messages[0].tool_calls,
        )


class BranchTurns:
    """The turn sink of one branch: its own key on every line, and each prefix line checked against the parent's."""

    def __init__(self, store: RunStore, key: str, prefix: list[TurnRecord], mode: str, where: str):
        self.store, self.key, self.prefix, self.mode, self.where = store, key, prefix, mode, where

    def begin_episode(self, key: str) -> Path:
        return self.store.begin_episode(self.key)

    def record_turn(self, path: Path, record: TurnRecord) -> None:
        record = replace(record, episode=self.key)
        turn = record.turn
        if turn < len(self.prefix):
            logged = self.prefix[turn]
            differing = [name for name in RESTORED_FIELDS if getattr(record, name) != getattr(logged, name)]
            if differing:
                raise BranchDivergence(
                    f"{self.where}: replaying turn {turn} gave a different {differing[0]!r} than logged; "
                    "the environment is not deterministic for this task"
                )
            # the parent's propensity, None where it logged none: a replayed turn is the parent's decision
            record = replace(
                record, propensity=logged.propensity, extra={**record.extra, "replayed": self.mode}
            )
        self.store.record_turn(path, record)


@dataclass
class Source:
    """The parent run: its config (limits resolved), pool and finished episodes with their turn lines."""

    path: Path
    config: RunConfig
    pool: Pool
    episodes: dict[str, EpisodeRecord]
    store: RunStore
    read_turns: tuple[str, list[TurnRecord]] | None = None  # the last episode's turn lines read

    @classmethod
    def read(cls, path: Path) -> Source:
        store = RunStore(path)
        parent_config = store.config()
        if "branch" in parent_config:
            raise ConfigError(
                f"{path} holds branches; branch the run they came from ({parent_config['branch']['source']})"
            )
        run = dict(parent_config.get("run") or {})
        try:
            config = resolve(from_dict(RunConfig, run, f"{path}/config.json run"))
        except ConfigError as exc:
            raise ConfigError(f"cannot branch from {path}: {exc}") from None
        episodes = {
            e.episode: e for e in store.episodes() if not e.failed and e.score is not None and e.turns > 0
        }
        return cls(Path(path), config, load_pool(config.pool), episodes, store)

    def turns(self, key: str) -> list[TurnRecord]:
        """An episode's turn lines in order, read once for all the siblings of its branch points."""
        if self.read_turns is None or self.read_turns[0] != key:
            self.read_turns = (key, self.store.ordered_turns(key))
        return self.read_turns[1]


def branch_snapshot(source: Source, design: BranchDesign) -> dict[str, Any]:
    """The branch run's config.json: the parent's run, and the design.

    No router is named: no one router logged the branches (the parent's on the prefix, the design at
    the branch, the continuation after it), so readers take each turn's logged propensity, and a
    mixture-of-loggers estimate is refused by name rather than computed with the wrong policy.
    """
    split = get_benchmark(source.config.benchmark).load_split(source.config.split_file)
    written = snapshot(source.config, source.pool, split,
                       branch={"source": str(source.path.resolve()), **to_plain(design)})  # fmt: skip
    written["run"]["router"] = None
    return written


def play_branch(
    source: Source,
    point: BranchPoint,
    model: str,
    design: BranchDesign,
    env: Environment,
    backends: dict[str, ModelBackend],
    store: RunStore,
    judge: ModelBackend | None = None,
    continuation: Router | None = None,
) -> EpisodeRecord:
    """Play one branch to its end and return its episode line (not yet recorded).

    ``continuation`` is the continuation router to use, fresh for this branch; None builds it from the design.
    """
    parent = source.episodes[point.parent]
    turns = source.turns(point.parent)
    prefix = turns[: point.turn]
    where = f"{source.path}/{point.parent}"
    task = TaskInstance(parent.benchmark, parent.task, parent.variation, parent.split, parent.repeat)
    n = len(source.pool.names)
    if continuation is None:
        continuation = make_router(design.continuation.name, design.continuation.params, source.pool.cards)
    # The parent's seed: every model draw is the parent's and every sibling's.
    seed = episode_seed(source.config.seed, task)
    if seed != parent.seed:
        raise ConfigError(
            f"{where}: recorded seed {parent.seed} is not the one its run's seed gives ({seed})"
        )
    router = BranchRouter(prefix, model, 1.0 / n, continuation, seed)
    wrapped = {name: PrefixBackend(b, prefix, design.prefix, where) for name, b in backends.items()}
    sink = BranchTurns(store, point.key(model), prefix, design.prefix, where)
    assert source.config.limits is not None, "Source.read resolves them"
    episode = Episode(
        get_benchmark(task.benchmark),
        env,
        wrapped,
        router,
        task,
        source.config.seed,
        source.config.limits,
        sink,
        judge,  # type: ignore[arg-type]
    )
    result = episode.run()
    record = result.record(f"branch:{design.continuation.label}")
    prefix_dollars = sum(t.dollars for t in prefix)
    return replace(
        record,
        episode=point.key(model),
        billed_cost=result.ledger.total - (prefix_dollars if design.prefix == "log" else 0.0),
        branch_of={
            "run": str(source.path.resolve()),
            "parent": point.parent,
            "seed": seed,
            "turn": point.turn,
            "model": model,
            "group": point.group,
            "siblings": list(point.models),
            "propensity": 1.0 / n,
            "prefix": design.prefix,
            "continuation": to_plain(design.continuation),
            "design": {
                "episodes": design.episodes,
                "states_per_episode": design.states_per_episode,
                "models": design.models,
                "seed": design.seed,
            },
        },
    )


def collect_branches(
    source_dir: Path,
    out: Path,
    design: BranchDesign,
    cache: bool = True,
    progress: Callable[[EpisodeRecord], None] | None = None,
    env: Environment | None = None,
    parents: Iterable[str] | None = None,
) -> list[EpisodeRecord]:
    """Branch the finished episodes of the run at ``source_dir`` (those keyed in ``parents``; None: all)
    into the run directory ``out``.

    Resumable like any run: branches already recorded in ``out`` are skipped. With ``cache``
    the engine sits behind a prefix cache seeded with the parent run (prefixes are served
    from memory, and every step the engine does run is checked against the log).
    Returns the episode lines written by this call.
    """
    source = Source.read(Path(source_dir))
    config = source.config
    make_router(
        design.continuation.name, design.continuation.params, source.pool.cards
    )  # checked before work
    wanted = None if parents is None else set(parents)
    missing = sorted((wanted or set()) - set(source.episodes))
    if missing:
        raise ConfigError(f"{source_dir} has no finished episode {missing[0]!r} to branch")
    chosen = [(key, e.turns) for key, e in sorted(source.episodes.items()) if wanted is None or key in wanted]
    points = branch_points(chosen, source.pool.names, design)
    store = RunStore(out)
    store.open(branch_snapshot(source, design))
    opened: Environment | None = None
    try:
        done = store.finished_keys()
        todo = [(p, m) for p in points for m in p.models if p.key(m) not in done]
        if not todo:
            return []
        benchmark = get_benchmark(config.benchmark)
        engine = env if env is not None else (opened := benchmark.make_environment())
        if cache:
            from harness.replay.importers import read_run_dir
            from harness.replay.prefix_cache import cached_environment

            engine = cached_environment(engine, read_run_dir(source.path)[0])
        backends = build_backends(source.pool, config.backend)
        judge = backends[config.judge] if config.judge is not None else None
        written = []
        for point, model in todo:
            record = play_branch(source, point, model, design, engine, backends, store, judge)
            record = store.with_earlier_attempts(record)  # a resumed collection's killed attempts
            store.record_episode(record)
            written.append(record)
            if progress is not None:
                progress(record)
        return written
    finally:
        store.close()
        if opened is not None:
            opened.close()
