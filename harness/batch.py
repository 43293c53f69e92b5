"""Batches of episodes over parallel workers, resumable and crash tolerant.

Each worker process owns one environment (one ScienceWorld JVM) and reuses it
across episodes. Workers write their episode's turn file as they go; only the
parent appends to ``episodes.jsonl``, so that file has a single writer. All
inputs are validated in the parent before any worker starts.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import subprocess
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.agent import episode_seed, run_episode
from harness.backends import build_backends
from harness.config import REPO_ROOT, RunConfig, to_plain
from harness.environments import environment_fingerprint, make_environment, task_split
from harness.errors import EnvironmentCrashed, HarnessError
from harness.pool import Pool, load_pool
from harness.protocols import Environment
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


def prepare(config: RunConfig, out: Path) -> Batch:
    """Check every input (pool, router, split, output directory) before any work starts."""
    pool = load_pool(config.pool)
    make_router(config.router.name, config.router.params, pool.names)
    split = task_split(config.benchmark)
    tasks = split.tasks(config.split, quick=config.quick, task_filter=config.task_filter)
    if not tasks:
        raise HarnessError(f"no tasks in split {config.split!r} match filter {config.task_filter!r}")
    store = RunStore(out)
    store.open(
        {
            "run": to_plain(config),
            "pool_sha256": pool.sha256,
            "price_cards": {m.name: to_plain(m.price) for m in pool.spec.models},
            "split_version": split.version,
            "engine": environment_fingerprint(config.benchmark),
        }
    )
    return Batch(config=config, pool=pool, tasks=tasks, store=store)


class Player:
    """The pool's backends and the router of one run, playing on a shared environment."""

    def __init__(self, config: RunConfig, out: Path, env: Environment):
        self.config = config
        self.store = RunStore(out)
        pool = load_pool(config.pool)
        self.backends = build_backends(pool, config.backend)
        self.router = make_router(config.router.name, config.router.params, pool.names)
        self.env = env

    def play(self, task: TaskInstance) -> dict[str, Any]:
        """Run one episode; a crashed engine is restarted and the episode retried once."""
        error: Exception | None = None
        for attempt in range(2):
            try:
                result = run_episode(
                    self.env,
                    self.backends,
                    self.router,
                    task,
                    self.config.seed,
                    self.config.limits,
                    self.store,
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
                self.envs[config.benchmark] = make_environment(config.benchmark)
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
