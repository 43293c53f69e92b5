"""Where a batch's episodes are played: this machine's worker pool, or actors on a Ray cluster.

An executor takes a validated batch's pending episodes and hands each finished
record to ``finish``; the caller (:func:`harness.batch.run_batch`) writes it. Both
executors keep their environments (for ScienceWorld, a JVM each) alive across
batches, play an episode with the same seed derivation and code
(:class:`harness.batch.Worker`), and so give the same records; a run directory
started on one can be resumed on the other.

The Ray executor runs one actor per environment. An episode is a streaming task
on an idle actor: the actor yields the episode's turn lines as they happen and
then its record, and this process writes them, so the run directory keeps one
writer even when the actors run on other machines without its filesystem. An
actor that dies mid-episode (killed, out of memory, its node lost) is replaced by
a fresh one and the episode played again from its start, its partial turns kept
aside as ``*.interrupted-N`` as on a resume; after :data:`harness.batch.MAX_WORKER_DEATHS`
deaths the episode is recorded as an infrastructure failure, as the local pool does.
Ray is imported only when the Ray executor is used (the ``scale`` extra).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from harness.batch import (
    MAX_WORKER_DEATHS,
    Batch,
    Worker,
    Workers,
    failed_record,
    worker_died_record,
)
from harness.config import EXECUTORS, RunConfig
from harness.errors import ConfigError, HarnessError, InfrastructureError
from harness.records import EpisodeRecord, TurnRecord
from harness.types import TaskInstance

log = logging.getLogger(__name__)

RAY_ADDRESS_ENV = "RAY_ADDRESS"
ACTOR_START_TIMEOUT_S = 300.0  # for a cluster to place an actor (it may have to scale up first)
STREAM_POLL_S = 0.5  # how long one wait on the actors' streams blocks (Ctrl-C is handled in between)
INSTALL_HINT = "pip install -e '.[scale]'"


class Executor(Protocol):
    """Plays a batch's pending episodes, giving each finished record to ``finish`` in this process.

    Kept across batches by a caller that runs many (the benchmark pipeline);
    ``close`` ends its processes. On KeyboardInterrupt it drops the episodes under
    way, records nothing half-done, and re-raises.
    """

    def run(
        self, batch: Batch, pending: list[TaskInstance], finish: Callable[[EpisodeRecord], None]
    ) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


def open_executor(kind: str, workers: int, ray_address: str | None = None) -> Executor:
    """The executor named ``kind`` with ``workers`` worker processes or actors.

    ``ray_address`` names the Ray cluster to join, else ``RAY_ADDRESS``, else a local
    Ray instance is started (and stopped on close).
    """
    if kind not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if kind == "ray":
        return RayExecutor(workers, ray_address)
    if ray_address is not None:
        raise ConfigError("a Ray address is given but the executor is local; add --executor ray")
    return Workers(workers)


def require_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ConfigError(f"the ray executor needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class TurnStream:
    """A :class:`harness.batch.TurnSink` inside an actor: turn lines become events of the current episode."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def begin_episode(self, key: str) -> str:
        self.events.put(("begin", key))
        return key

    def record_turn(self, path: Any, record: TurnRecord) -> None:
        self.events.put(("turn", record))


class EpisodeActor:
    """One environment on a Ray worker: plays episodes one at a time, streaming what the run directory gets.

    Events are ``("begin", key)`` when an attempt starts (an engine crash restarts
    the episode), ``("turn", line)`` per turn, then ``("episode", record)``, or
    ``("error", exc)`` for a problem that stops the batch (bad input found late).
    """

    def __init__(self) -> None:
        self.stream = TurnStream()
        self.worker = Worker(turns=self.stream)

    def pid(self) -> int:
        return os.getpid()

    def play(self, config: RunConfig, out: str, task: TaskInstance) -> Iterator[tuple[str, Any]]:
        # The episode runs in a thread so that its turns can be yielded while it plays.
        events = self.stream.events = queue.SimpleQueue()
        thread = threading.Thread(target=self._play, args=(config, Path(out), task, events), daemon=True)
        thread.start()
        while True:
            event = events.get()
            yield event
            if event[0] in ("episode", "error"):
                break
        thread.join()

    def _play(self, config: RunConfig, out: Path, task: TaskInstance, events: queue.SimpleQueue) -> None:
        try:
            record = self.worker.play(config, out, task)
        except InfrastructureError as exc:  # the environment would not start
            record = failed_record(task, config, exc)
        except Exception as exc:  # noqa: BLE001 - handed to the parent, which stops the batch
            events.put(("error", exc))
            return
        events.put(("episode", record))


class RayExecutor:
    """Episodes as streaming tasks on ``n`` Ray actors, each holding one environment for its life."""

    def __init__(self, n: int, address: str | None = None):
        self.ray = require_ray()
        self.n = n
        self.address = address or os.environ.get(RAY_ADDRESS_ENV)
        self._started_ray = False
        self._actor_class: Any = None
        self.actors: dict[Any, int] = {}  # actor handle -> its process id
        self._playing: dict[str, Any] = {}  # episode key -> actor playing it

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def playing(self) -> dict[str, int]:
        """Episode key -> process id of the actor playing it, for the episodes under way."""
        return {key: self.actors[actor] for key, actor in self._playing.items() if actor in self.actors}

    def _connect(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING)
            else:
                # A private instance on loopback: never another process's cluster found on this machine.
                ray.init(
                    address="local",
                    num_cpus=self.n,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    _node_ip_address="127.0.0.1",
                )
                self._started_ray = True
        if self._actor_class is None:
            self._actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(EpisodeActor)

    def _start_actors(self, count: int) -> list[Any]:
        """``count`` new actors, once each has started (its process exists; its JVM starts on first use)."""
        handles = [self._actor_class.remote() for _ in range(count)]
        try:
            pids = self.ray.get([h.pid.remote() for h in handles], timeout=ACTOR_START_TIMEOUT_S)
        except self.ray.exceptions.GetTimeoutError:
            for handle in handles:
                self.ray.kill(handle)
            where = self.address or "the local Ray instance"
            raise HarnessError(
                f"Ray at {where} did not start {count} episode actor(s) in {ACTOR_START_TIMEOUT_S:g} s; "
                "each needs one free CPU"
            ) from None
        self.actors.update(zip(handles, pids, strict=True))
        return handles

    def close(self) -> None:
        for actor in list(self.actors):
            self.ray.kill(actor)
        self.actors.clear()
        self._playing.clear()
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False
            self._actor_class = None

    def run(self, batch: Batch, pending: list[TaskInstance], finish: Callable[[EpisodeRecord], None]) -> None:
        try:
            self._run(batch, pending, finish)
        except KeyboardInterrupt:
            self.close()
            raise

    def _run(
        self, batch: Batch, pending: list[TaskInstance], finish: Callable[[EpisodeRecord], None]
    ) -> None:
        ray = self.ray
        self._connect()
        if len(self.actors) < self.n:
            self._start_actors(self.n - len(self.actors))
        idle = deque(self.actors)
        todo = deque(pending)
        deaths: Counter[str] = Counter()
        streams: dict[Any, tuple[Any, TaskInstance]] = {}  # stream -> (actor, task)
        turn_files: dict[str, Any] = {}
        store = batch.store
        while todo or streams:
            while todo and idle:
                actor, task = idle.popleft(), todo.popleft()
                streams[actor.play.remote(batch.config, str(store.root), task)] = (actor, task)
                self._playing[task.key] = actor
            ready, _ = ray.wait(list(streams), num_returns=1, timeout=STREAM_POLL_S)
            for stream in ready:
                actor, task = streams[stream]
                try:
                    kind, payload = ray.get(next(stream))
                except ray.exceptions.RayActorError:
                    del streams[stream], self._playing[task.key], self.actors[actor]
                    deaths[task.key] += 1
                    log.warning(
                        "the Ray actor playing %s died; starting a fresh one and playing it again", task.key
                    )
                    if deaths[task.key] >= MAX_WORKER_DEATHS:
                        finish(worker_died_record(task, batch.config, store, deaths[task.key]))
                    else:
                        todo.appendleft(task)
                    idle.extend(self._start_actors(1))
                    continue
                if kind == "begin":
                    turn_files[task.key] = store.begin_episode(task.key)
                elif kind == "turn":
                    store.record_turn(turn_files[task.key], payload)
                elif kind == "error":
                    raise payload
                else:
                    del streams[stream], self._playing[task.key]
                    turn_files.pop(task.key, None)
                    idle.append(actor)
                    finish(payload)


__all__ = ["Executor", "RayExecutor", "open_executor", "require_ray", "RAY_ADDRESS_ENV"]
