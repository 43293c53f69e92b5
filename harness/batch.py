"""Batches of episodes over parallel workers, resumable and crash tolerant: the pipeline's engine room.

Each worker process owns one environment per benchmark (for ScienceWorld, one
JVM) and reuses it across episodes. Workers write their episode's turn file as
they go; only the parent appends to ``episodes.jsonl``, so that file has a
single writer. All inputs are validated in the parent before any worker starts.
:func:`execute` is the library entry point; a caller that wants to show progress
passes a :class:`BatchProgress` (the CLI passes a progress bar).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import subprocess
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from harness.agent import episode_seed, run_episode
from harness.backends import build_backends
from harness.benchmarks import get_benchmark
from harness.config import REPO_ROOT, Limits, RunConfig, to_plain
from harness.errors import EnvironmentCrashed, HarnessError
from harness.pool import Pool, load_pool
from harness.protocols import Environment
from harness.splits import Split
from harness.trajectory import RunStore
from harness.types import TaskInstance
from routers import make_router

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """A validated run: what to play and where to write it."""

    config: RunConfig
    pool: Pool
    tasks: list[TaskInstance]
    store: RunStore

    @property
    def pending(self) -> list[TaskInstance]:
        done = self.store.finished_keys()
        return [t for t in self.tasks if t.key not in done]


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def resolve(config: RunConfig) -> RunConfig:
    """The config with the benchmark's defaults filled in, as it is recorded with the run."""
    limits = (config.limits or Limits()).over(get_benchmark(config.benchmark).limits)
    return replace(config, limits=limits)


def prepare_check(config: RunConfig) -> tuple[RunConfig, Pool, Split, list[TaskInstance]]:
    """Check every input (benchmark, pool, router, judge, split) without writing anything."""
    benchmark = get_benchmark(config.benchmark)
    config = resolve(config)
    pool = load_pool(config.pool)
    make_router(config.router.name, config.router.params, pool.names)
    if config.judge is not None:
        pool.model(config.judge)
    split = benchmark.load_split(config.split_file)
    tasks = split.tasks(config.split, quick=config.quick, task_filter=config.task_filter)
    if not tasks:
        raise HarnessError(f"no tasks in split {config.split!r} match filter {config.task_filter!r}")
    return config, pool, split, tasks


def prepare(config: RunConfig, out: Path) -> Batch:
    """Check every input, then open (or check) the run directory, before any work starts."""
    config, pool, split, tasks = prepare_check(config)
    store = RunStore(out)
    store.open(
        {
            "run": to_plain(config),
            "pool_sha256": pool.sha256,
            "price_cards": {m.name: to_plain(m.price) for m in pool.spec.models},
            "split_version": split.version,
            "engine": get_benchmark(config.benchmark).fingerprint(),
        }
    )
    return Batch(config=config, pool=pool, tasks=tasks, store=store)


class Player:
    """The pool's backends and the router of one run, playing on a shared environment."""

    def __init__(self, config: RunConfig, out: Path, env: Environment):
        self.config = resolve(config)
        self.benchmark = get_benchmark(config.benchmark)
        self.store = RunStore(out)
        pool = load_pool(config.pool)
        self.backends = build_backends(pool, config.backend)
        self.judge = self.backends[config.judge] if config.judge is not None else None
        self.router = make_router(config.router.name, config.router.params, pool.names)
        self.env = env

    def play(self, task: TaskInstance) -> dict[str, Any]:
        """Run one episode; a crashed engine is restarted and the episode retried once."""
        error: Exception | None = None
        for attempt in range(2):
            try:
                result = run_episode(
                    self.benchmark,
                    self.env,
                    self.backends,
                    self.router,
                    task,
                    self.config.seed,
                    self.config.limits,
                    self.store,
                    self.judge,
                )
                return result.record(self.config.router.label) | {"attempts": attempt + 1}
            except EnvironmentCrashed as exc:
                error = exc
                log.warning("%s; restarting the engine (attempt %d)", exc, attempt + 1)
                self.env.restart()
            except HarnessError as exc:
                error = exc
                break
        return failed_record(task, self.config, error)


class Worker:
    """One environment (one JVM) reused across episodes and runs; a player cached per run."""

    def __init__(self) -> None:
        self.envs: dict[str, Environment] = {}
        self.players: dict[tuple[str, str], Player] = {}

    def player(self, config: RunConfig, out: Path) -> Player:
        key = (json.dumps(to_plain(config), sort_keys=True), str(out))
        if key not in self.players:
            if config.benchmark not in self.envs:
                self.envs[config.benchmark] = get_benchmark(config.benchmark).make_environment()
            self.players[key] = Player(config, out, self.envs[config.benchmark])
        return self.players[key]

    def play(self, config: RunConfig, out: Path, task: TaskInstance) -> dict[str, Any]:
        return self.player(config, out).play(task)

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()
        self.players.clear()


def failed_record(task: TaskInstance, config: RunConfig, error: BaseException | None) -> dict[str, Any]:
    return {
        "episode": task.key,
        "benchmark": task.benchmark,
        "task": task.task,
        "variation": task.variation,
        "split": task.split,
        "seed": episode_seed(config.seed, task),
        "router": config.router.label,
        "score": None,
        "cost": None,
        "turns": None,
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
    }


_worker: Worker | None = None


def _init_worker() -> None:
    global _worker
    _worker = Worker()


def _play(config: RunConfig, out: Path, task: TaskInstance) -> dict[str, Any]:
    assert _worker is not None, "worker not initialised"
    return _worker.play(config, out, task)


class Workers:
    """Worker processes kept alive across batches, so imports and JVM starts are paid once.

    With one worker, episodes run in this process.
    """

    def __init__(self, n: int):
        self.n = n
        self._local: Worker | None = None
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        self._local = self._pool = None

    def run(
        self, batch: Batch, pending: list[TaskInstance], finish: Callable[[dict[str, Any]], None]
    ) -> None:
        out = batch.store.root
        if self.n == 1:
            self._local = self._local or Worker()
            for task in pending:
                finish(self._local.play(batch.config, out, task))
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.n, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
            )
        futures = {self._pool.submit(_play, batch.config, out, task): task for task in pending}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    record = future.result()
                except Exception as exc:  # the worker process died outright
                    record = failed_record(futures[future], batch.config, exc)
                finish(record)


def run_batch(
    batch: Batch,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
    workers: Workers | None = None,
) -> list[dict[str, Any]]:
    """Play every pending episode of ``batch``; returns the new records in completion order."""
    records: list[dict[str, Any]] = []

    def finish(record: dict[str, Any]) -> None:
        batch.store.record_episode(record)
        records.append(record)
        if on_episode:
            on_episode(record)

    pending = batch.pending
    if not pending:
        return records
    if workers is not None:
        workers.run(batch, pending, finish)
        return records
    with Workers(min(batch.config.workers, len(pending))) as own:
        own.run(batch, pending, finish)
    return records


class BatchProgress(Protocol):
    """What a caller of :func:`execute` is told: the batch's size and each episode as it finishes."""

    def start(self, label: str, total: int, finished: list[dict[str, Any]]) -> None: ...

    def episode(self, record: dict[str, Any]) -> None: ...

    def stop(self) -> None: ...


def execute(
    config: RunConfig,
    out: Path,
    label: str | None = None,
    workers: Workers | None = None,
    progress: BatchProgress | None = None,
) -> list[dict[str, Any]]:
    """Validate, then play every pending episode of a run; returns all episode records of the run directory.

    ``workers`` lets a caller keep worker processes across batches.
    """
    batch = prepare(config, out)
    if progress is not None:
        progress.start(label or config.router.label, len(batch.tasks), batch.store.episodes())
    try:
        run_batch(batch, progress.episode if progress is not None else None, workers)
    finally:
        if progress is not None:
            progress.stop()
    return batch.store.episodes()
