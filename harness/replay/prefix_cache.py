"""An engine prefix cache: repeated action prefixes served from memory, the engine run only where needed.

Many episodes share prefixes: the first turns of every rerun, Optuna trials and λ sweeps
over the same tasks, the fixed routers of a benchmark on one split. Where an environment
is deterministic for (task instance, action prefix), what it returns after a prefix is a
function of the prefix, so it can be served from a tree built from earlier episodes
(live ones as they run, logged ones from their turn lines).

:class:`PrefixCacheEnv` wraps an environment. ``reset`` and ``step`` are served from the
tree while the episode stays on it; the engine is not touched, and the wrapper only
remembers the prefix. When the episode leaves the tree (an action the tree has not seen),
the engine is *materialised*: reset, and the prefix replayed on it, each replayed result
checked against the tree. Then the step runs on the engine and its result becomes a new
node; the episode stays live while it makes new nodes, and a step onto a node the tree has
is served again (the engine then stays behind until it is needed).

It proves itself: a mismatch (a reset or step whose result differs from the tree) marks
the task instance nondeterministic, is counted, drops the task's tree, and from then on
that task runs on the engine only. The episode during which a mismatch is found has
already been shown cached results up to that point; it continues on the engine's state,
and the mismatch is in the counters for whoever needs to discard it.

The oracle. Simulated models read ``env.oracle`` every turn, so it has to stay right
while the engine is not stepped. Two ways, chosen per environment:

* an :class:`OracleReplica` rebuilds the oracle outside the engine and advances it with
  each action; the only engine query it needs is routed through the wrapper, which caches
  the answer per node (materialising the engine the first time a node is asked). For
  ScienceWorld (``ScienceWorldEnv.oracle_replica``): the gold-path oracle's progress is a function
  of the action prefix, and its one engine call, the visible objects that
  ``wrong_critical_actions`` ranks, is cached per node;
* otherwise the wrapper materialises the engine whenever ``oracle`` is read and returns the
  engine's own: always correct, but it saves nothing for simulated models (it still does
  for real models, whose environments have no oracle: a root with no oracle is recorded).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.benchmarks import get_benchmark
from harness.errors import ConfigError
from harness.protocols import Environment
from harness.replay.logged import LoggedEpisode, task_description
from harness.types import Action, StepResult, TaskInstance

ActionKey = tuple[str, str | None, str]


def action_key(action: Action) -> ActionKey:
    return (action.text, action.tool, json.dumps(action.arguments, sort_keys=True, default=str))


def child_digest(parent: str, key: ActionKey) -> str:
    """A node's name: a hash of the action prefix that leads to it (the root's is empty)."""
    return hashlib.sha256(f"{parent}\x00{json.dumps(key)}".encode()).hexdigest()[:32]


@dataclass
class Node:
    result: StepResult | None  # None at the root
    children: dict[ActionKey, Node] = field(default_factory=dict)
    visible_objects: list[str] | None = None  # what the oracle asked the engine here, once asked
    digest: str = ""  # see child_digest


@dataclass
class Root(Node):
    description: str | None = None
    observation: str | None = None  # None: known from a log only (the first observation is not logged)
    has_oracle: bool | None = None  # None: not yet seen on the engine


@dataclass
class CacheStats:
    served_resets: int = 0
    engine_resets: int = 0  # including those that materialise a prefix
    served_steps: int = 0
    engine_steps: int = 0  # every step the engine ran: live ones and replayed prefixes
    replayed_steps: int = 0  # of engine_steps, replays of a cached prefix
    mismatches: int = 0
    fallback_episodes: int = 0  # played on the engine alone: their task instance was found nondeterministic
    nondeterministic: set[str] = field(default_factory=set)

    COUNTERS = (
        "served_resets",
        "engine_resets",
        "served_steps",
        "engine_steps",
        "replayed_steps",
        "mismatches",
        "fallback_episodes",
    )

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.COUNTERS}

    @property
    def requested_steps(self) -> int:
        """Steps the episodes asked for: what a plain engine would have run."""
        return self.served_steps + self.engine_steps - self.replayed_steps

    @property
    def saved_fraction(self) -> float:
        """Share of the requested engine steps that did not run (replays counted against it)."""
        requested = self.requested_steps
        return 1.0 - self.engine_steps / requested if requested else 0.0


class PrefixCache:
    """The trees, one per task instance, and what they have found out about determinism."""

    def __init__(self) -> None:
        self.roots: dict[str, Root] = {}
        self.stats = CacheStats()

    def root(self, task: TaskInstance) -> Root:
        return self.roots.setdefault(task.key, Root(result=None))

    def deterministic(self, task: TaskInstance) -> bool:
        return task.key not in self.stats.nondeterministic

    def mismatch(self, task: TaskInstance) -> None:
        self.stats.mismatches += 1
        self.stats.nondeterministic.add(task.key)
        self.roots.pop(task.key, None)

    # What the wrapper learns goes through these, so that a cache kept on disk
    # (:mod:`harness.replay.prefix_store`) can share it with other processes.

    def begin(self, task: TaskInstance) -> None:
        """An episode of ``task`` starts (a shared cache brings in what others have added)."""

    def grow(self, task: TaskInstance, node: Node, key: ActionKey, result: StepResult) -> Node | None:
        """The engine ran ``key`` from ``node``: its new child, or None if that contradicted the cache."""
        child = node.children[key] = Node(result, digest=child_digest(node.digest, key))
        return child

    def set_root(
        self, task: TaskInstance, root: Root, description: str, observation: str, oracle: bool
    ) -> bool:
        """What the engine's reset showed; False if that contradicted the cache."""
        root.description, root.observation, root.has_oracle = description, observation, oracle
        return True

    def set_visible(self, task: TaskInstance, node: Node, objects: list[str]) -> None:
        node.visible_objects = list(objects)

    def add_logged(self, episodes: Iterable[LoggedEpisode]) -> int:
        """Add the steps of logged episodes; returns how many turns were added (or were already there).

        Only benchmarks with one text action per turn are read (the logged ``action`` of a
        turn is then the one command sent); a reply that did not parse stepped nothing and
        is passed over, a submitted answer stepped nothing and ends the episode's path.
        """
        added = 0
        for episode in episodes:
            benchmark = get_benchmark(episode.benchmark)
            if benchmark.agent_format.tools or benchmark.agent_format.max_actions_per_turn != 1:
                continue
            task = TaskInstance(episode.benchmark, episode.task, episode.variation, episode.split)
            if not self.deterministic(task):
                continue
            root = self.root(task)
            root.description = root.description or task_description(episode)
            node: Node = root
            for t, turn in enumerate(episode.turns):
                text, score = turn.extra.get("action"), turn.extra.get("score")
                if text is None and turn.extra.get("error") == "format":
                    continue  # the reply did not parse: the engine was not stepped
                submitted = episode.status == "submitted" and t == len(episode.turns) - 1
                if text is None or score is None or submitted:
                    break
                result = StepResult(
                    observation=str(turn.extra.get("observation") or ""),
                    score=score,
                    done=bool(turn.extra.get("done")),
                    valid=turn.valid is not False,
                )
                key = action_key(Action(text))
                child = node.children.get(key)
                if child is None:
                    child = self.grow(task, node, key, result)
                elif child.result != result:
                    child = None
                    self.mismatch(task)
                if child is None:
                    break
                node = child
                added += 1
        return added


class OracleReplica(Protocol):
    """Rebuilds a benchmark's oracle outside its engine (see the module docstring)."""

    def start(self, task: TaskInstance, visible_objects: Callable[[], list[str]]) -> Any:
        """A fresh oracle for ``task`` whose engine queries go through ``visible_objects``; None: no oracle."""
        ...

    def observe(self, oracle: Any, action: Action) -> None:
        """Advance the oracle as the engine would after running ``action``."""
        ...


def replica_for(env: Environment) -> OracleReplica | None:
    """The environment's own oracle replica (``env.oracle_replica()``), if it offers one."""
    make = getattr(env, "oracle_replica", None)
    return make() if make is not None else None


class PrefixCacheEnv:
    """An :class:`~harness.protocols.Environment` that runs its inner engine only off the cached tree."""

    def __init__(
        self, inner: Environment, cache: PrefixCache | None = None, replica: OracleReplica | None = None
    ):
        self.inner = inner
        self.cache = cache if cache is not None else PrefixCache()
        self.replica = replica if replica is not None else replica_for(inner)
        self._task: TaskInstance | None = None
        self._prefix: list[Action] = []
        self._node: Node | None = None  # where the episode is in the tree; None once it left it
        self._live = False  # the engine is at the episode's current state
        self._oracle: Any = None
        self._has_oracle = True  # False once the root says the engine has no oracle for this task

    @property
    def stats(self) -> CacheStats:
        return self.cache.stats

    # -- the environment interface -------------------------------------------------------------

    def reset(self, task: TaskInstance) -> tuple[str, str]:
        self._task, self._prefix, self._has_oracle = task, [], True
        self.cache.begin(task)
        if not self.cache.deterministic(task):
            self._node = None
            self.cache.stats.fallback_episodes += 1
            return self._engine_reset(task)
        root = self.cache.root(task)
        if root.observation is None or root.has_oracle is None:
            description, observation = self._engine_reset(task)
            oracle = getattr(self.inner, "oracle", None) is not None
            if (root.description is not None and root.description != description) or not self.cache.set_root(
                task, root, description, observation, oracle
            ):
                self.cache.mismatch(task)
                self._node = None
                return description, observation
            self._node = root
            return description, observation
        self.cache.stats.served_resets += 1
        self._node, self._live, self._has_oracle = root, False, bool(root.has_oracle)
        self._oracle = self._start_oracle(task) if root.has_oracle else None
        assert root.description is not None
        return root.description, root.observation

    def step(self, action: Action) -> StepResult:
        assert self._task is not None, "step before reset"
        key = action_key(action)
        node = self._node
        child = node.children.get(key) if node is not None else None
        if child is not None:  # served even when the engine is live: it then stays behind
            assert child.result is not None
            self.cache.stats.served_steps += 1
            self._live = False
            self._advance(action, child)
            return child.result
        if not self._live and not self._materialise():
            node, child = None, None
        result = self._engine_step(action)
        if node is not None and self.cache.deterministic(self._task):
            child = self.cache.grow(self._task, node, key, result)
        self._advance(action, child)
        return result

    @property
    def oracle(self) -> Any:
        if self.replica is not None:
            return self._oracle
        if not self._has_oracle:
            return None
        if not self._live and self._task is not None:
            self._materialise()
        return getattr(self.inner, "oracle", None)

    def visible_objects(self) -> list[str]:
        """The engine's visible objects at the current state, cached per node."""
        node = self._node
        if node is not None and node.visible_objects is not None:
            return list(node.visible_objects)
        if not self._live:
            self._materialise()
        objects = self.inner.visible_objects()  # type: ignore[attr-defined]
        if self._node is not None and self._task is not None:
            self.cache.set_visible(self._task, self._node, objects)
        return objects

    def restart(self) -> None:
        self.inner.restart()  # type: ignore[attr-defined]
        self._live = False

    def close(self) -> None:
        self.inner.close()

    # -- internals ---------------------------------------------------------------------------

    def _start_oracle(self, task: TaskInstance) -> Any:
        return self.replica.start(task, self.visible_objects) if self.replica is not None else None

    def _engine_reset(self, task: TaskInstance) -> tuple[str, str]:
        self.cache.stats.engine_resets += 1
        description, observation = self.inner.reset(task)
        self._live = True
        self._oracle = self._start_oracle(task)
        return description, observation

    def _engine_step(self, action: Action) -> StepResult:
        self.cache.stats.engine_steps += 1
        return self.inner.step(action)

    def _advance(self, action: Action, child: Node | None) -> None:
        self._prefix.append(action)
        self._node = child
        if self.replica is not None:
            self.replica.observe(self._oracle, action)

    def _materialise(self) -> bool:
        """Bring the engine to the episode's state by reset and replay; False if a replayed result differed."""
        task = self._task
        assert task is not None
        oracle = self._oracle
        root = self.cache.root(task)
        self.cache.stats.engine_resets += 1
        description, observation = self.inner.reset(task)
        self._live = True
        same = (description, observation) == (root.description, root.observation)
        node: Node | None = root
        for action in self._prefix:
            self.cache.stats.engine_steps += 1
            self.cache.stats.replayed_steps += 1
            result = self.inner.step(action)
            node = node.children.get(action_key(action)) if node is not None else None
            if node is None or node.result != result:
                same = False
        self._oracle = oracle  # the replica's oracle already stands where the prefix leads
        if not same:
            self.cache.mismatch(task)
            self._node = None
        return same


def cached_environment(env: Environment, episodes: Sequence[LoggedEpisode] = ()) -> PrefixCacheEnv:
    """``env`` behind a prefix cache seeded with ``episodes``; refuses to wrap a wrapper."""
    if isinstance(env, PrefixCacheEnv):
        raise ConfigError("the environment already has a prefix cache")
    wrapped = PrefixCacheEnv(env)
    wrapped.cache.add_logged(episodes)
    return wrapped
