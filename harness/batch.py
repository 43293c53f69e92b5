"""Batches of episodes over parallel workers, resumable and crash tolerant: the pipeline's engine room.

Each worker process owns one environment per benchmark (for ScienceWorld, one
JVM) and reuses it across episodes. Workers write their episode's turn file as
they go; only the parent appends to ``episodes.jsonl``, so that file has a
single writer, and the parent holds the run directory's lock. All inputs are
validated in the parent before any worker starts. :func:`execute` is the library
entry point; a caller that wants to show progress passes a
:class:`BatchProgress` (the CLI passes a progress bar). :class:`Workers` is the
default executor; :mod:`harness.executors` has the interface and the Ray one.

Failures come in two kinds. An episode that failed on its own (the router chose
a model outside the pool, a bug in a plug-in) is a result and is recorded as
such. A failure of the infrastructure (the engine crashed twice, the provider
stayed unavailable, the worker process died too often) is recorded with
``failure: "infrastructure"`` and played again when the run is rerun. A worker
process that dies is replaced at once and its episodes are played again in the
same batch. Workers live in their own process group (a terminal's Ctrl-C
reaches only the parent, which stops the batch) and die with the parent.

With ``prefix_cache`` set, each worker's environment is wrapped in the engine prefix
cache stored in that directory (:mod:`harness.replay.prefix_store`), shared by all
workers and batches that name it. A worker returns the cache's counters of each
episode beside its record; the parent adds them up in ``RUN/prefix-cache.json``
(:data:`CACHE_FILE`), never in the episode records, which stay what the engine alone
would have given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import queue
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.agent import Episode, episode_seed
from harness.backends import build_backends
from harness.backends.litellm_backend import RETRIES_KEY
from harness.benchmarks import get_benchmark
from harness.config import REPO_ROOT, RunConfig, resolve, snapshot, to_plain
from harness.errors import (
    BatchInterrupted,
    EnvironmentCrashed,
    HarnessError,
    InfrastructureError,
    WorkerDied,
)
from harness.ledger import CostLedger
from harness.pool import Pool, load_pool
from harness.protocols import Environment
from harness.records import EPISODE_FAILURE, FAILED, INFRASTRUCTURE_FAILURE, EpisodeRecord, TurnRecord
from harness.splits import Split
from harness.storage import fault_of
from harness.trajectory import RunStore, episode_file_name, relative_paths, write_json_atomic
from harness.types import Charge, TaskInstance
from routers import make_router

if TYPE_CHECKING:
    from harness.executors import Executor

log = logging.getLogger(__name__)

# Set by the handler of :func:`stop_on_signals`: remembered because a KeyboardInterrupt raised inside a
# py4j call can be lost there.
interrupted = threading.Event()
MAX_WORKER_DEATHS = 3  # deaths of the worker playing an episode before it is recorded as failed
PARENT_POLL_S = 0.5  # how often a worker checks that its parent is still alive
RUNNING_POLL_S = 0.5  # how often the parent notes which episodes the workers are playing
CACHE_FILE = "prefix-cache.json"  # a run's prefix-cache counters, summed over its episodes
CACHE_COUNTS_KEY = (
    "_prefix_cache"  # the counters a worker sends in a record's extra; taken off before recording
)


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


def prepare_check(config: RunConfig) -> tuple[RunConfig, Pool, Split, list[TaskInstance]]:
    """Check every input (benchmark, pool, router, judge, split) without writing anything."""
    benchmark = get_benchmark(config.benchmark)
    config = resolve(config)
    pool = load_pool(config.pool)
    if config.backend == "simulated":
        pool.check_simulates(config.benchmark)
    make_router(config.router.name, config.router.params, pool.cards)
    if config.judge is not None:
        pool.model(config.judge)
    if config.prefix_cache is not None:
        from harness.replay.prefix_store import check_directory

        check_directory(Path(config.prefix_cache))
    split = benchmark.load_split(config.split_file)
    tasks = split.tasks(
        config.split, quick=config.quick, task_filter=config.task_filter, repeats=config.repeats
    )
    if config.variation is not None:
        tasks = [t for t in tasks if t.variation == config.variation]
    if not tasks:
        which = "" if config.variation is None else f" and variation {config.variation}"
        raise HarnessError(f"no tasks in split {config.split!r} match filter {config.task_filter!r}{which}")
    if config.backend == "simulated":
        benchmark.check_simulated(tasks)
    if config.executor == "ray":
        from harness.executors import require_ray  # harness.executors imports this module

        require_ray()
    return config, pool, split, tasks


def prepare(
    config: RunConfig,
    out: Path,
    wait_s: float = 0.0,
    retry_infrastructure: bool = True,
    root: Path | None = None,
) -> Batch:
    """Check every input, then own and open (or check) the run directory, before any work starts.

    The batch holds the directory's writer lock until ``batch.store.close()`` or the process ends;
    ``wait_s`` is how long to wait for another writer, ``retry_infrastructure`` False keeps
    recorded infrastructure failures as results instead of playing them again. ``root`` is the results
    directory ``out`` belongs to, if any: the router's paths inside it (checkpoints, caches) are recorded
    relative to ``out`` (:func:`harness.trajectory.relative_paths`), so that directory can move.
    """
    config, pool, split, tasks = prepare_check(config)
    store = RunStore(out)
    written = snapshot(config, pool, split)
    run = written["run"]
    if root is not None:
        run = {
            **run,
            "router": {**run["router"], "params": relative_paths(run["router"]["params"], out, root)},
        }
    store.open(
        {**written, "run": run},
        wait_s=wait_s,
        retry_infrastructure=retry_infrastructure,
        earlier=(written,),
    )
    return Batch(config=config, pool=pool, tasks=tasks, store=store)


class TurnSink(Protocol):
    """Where an episode's turn lines go as they happen: the run directory, or a stream to the process
    that writes it (:mod:`harness.executors`)."""

    def begin_episode(self, key: str) -> Any: ...

    def record_turn(self, path: Any, record: TurnRecord) -> None: ...


class Player:
    """The pool's backends and the router of one run, playing on a shared environment.

    Turn lines go to the run directory ``out`` unless ``turns`` takes them.
    """

    def __init__(self, config: RunConfig, out: Path, env: Environment, turns: TurnSink | None = None):
        self.config = resolve(config)
        self.benchmark = get_benchmark(config.benchmark)
        self.store: TurnSink = turns if turns is not None else RunStore(out)
        pool = load_pool(config.pool)
        self.backends = build_backends(pool, config.backend)
        self.judge = self.backends[config.judge] if config.judge is not None else None
        self.router = make_router(config.router.name, config.router.params, pool.cards)
        self.env = env

    def episode(self, task: TaskInstance) -> Episode:
        assert self.config.limits is not None
        return Episode(
            self.benchmark,
            self.env,
            self.backends,
            self.router,
            task,
            self.config.seed,
            self.config.limits,
            self.store,
            self.judge,
            constrained=self.config.constrained,
        )

    def play(self, task: TaskInstance) -> EpisodeRecord:
        """Run one episode; a crashed engine is restarted and the episode retried once.

        Whatever the outcome the record carries what this attempt spent (a failed attempt's
        ledger is kept). A crashed attempt's turns are kept as ``*.interrupted-N`` by the
        retry; the charges of the turn the crash cut short, which no line holds, go into
        ``unrecorded_charges`` marked ``abandoned``, and the run's writer settles the
        attempts and their cost (:meth:`harness.trajectory.RunStore.with_earlier_attempts`).
        """
        abandoned: list[dict[str, Any]] = []
        retries = 0
        for attempt in range(1, 3):
            episode = self.episode(task)
            try:
                result = episode.run()
            except EnvironmentCrashed as exc:
                if interrupted.is_set():  # the JVM died of the same Ctrl-C that py4j swallowed
                    raise KeyboardInterrupt from None
                error: Exception = exc
                retries += episode.scratch.get(RETRIES_KEY, 0)
                log.warning("%s; restarting the engine (attempt %d)", exc, attempt)
                try:
                    self.env.restart()
                except Exception as restart_error:  # noqa: BLE001 - a JVM that will not start is recorded
                    error = EnvironmentCrashed(f"{exc}; the restart failed too ({restart_error})")
                    break
                if attempt == 1:
                    abandoned += [{**c, "abandoned": True} for c in episode.ledger.turn_charges(episode.turn)]
                    continue
                break
            except Exception as exc:  # noqa: BLE001 - any failure of one episode is recorded, not fatal
                error = exc
                retries += episode.scratch.get(RETRIES_KEY, 0)
                break
            else:
                retries += episode.scratch.get(RETRIES_KEY, 0)
                record = result.record(self.config.router.label, retries=retries)
                record.unrecorded_charges += abandoned
                return record
        record = failed_record(task, self.config, error, episode.ledger, episode.turn, retries=retries)
        record.unrecorded_charges += abandoned
        return record


class Worker:
    """One environment (one JVM) reused across episodes and runs; a player cached per run.

    Runs that name a prefix cache get the same engine behind one cache wrapper per directory.
    ``turns``, if given, takes every run's turn lines instead of the run directories.
    """

    def __init__(self, turns: TurnSink | None = None) -> None:
        quiet_py4j()
        self.turns = turns
        self.envs: dict[str, Environment] = {}
        self.cached: dict[tuple[str, str], Any] = {}  # (benchmark, cache directory) -> PrefixCacheEnv
        self.players: dict[tuple[str, str], Player] = {}

    def environment(self, config: RunConfig) -> Environment:
        if config.benchmark not in self.envs:
            self.envs[config.benchmark] = get_benchmark(config.benchmark).make_environment()
        env = self.envs[config.benchmark]
        if config.prefix_cache is None:
            return env
        key = (config.benchmark, str(Path(config.prefix_cache).resolve()))
        if key not in self.cached:
            from harness.replay.prefix_cache import PrefixCacheEnv
            from harness.replay.prefix_store import StoredPrefixCache

            cache = StoredPrefixCache.open(Path(config.prefix_cache), config.benchmark)
            self.cached[key] = PrefixCacheEnv(env, cache)
        return self.cached[key]

    def player(self, config: RunConfig, out: Path) -> Player:
        key = (json.dumps(to_plain(config), sort_keys=True), str(out))
        if key not in self.players:
            self.players[key] = Player(config, out, self.environment(config), self.turns)
        return self.players[key]

    def play(self, config: RunConfig, out: Path, task: TaskInstance) -> EpisodeRecord:
        """Play ``task``; an environment that fails to start (a JVM killed while booting) gets a second try."""
        for attempt in range(1, 3):
            try:
                player = self.player(config, out)
                break
            except HarnessError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a JVM killed while it starts
                if attempt == 2:
                    raise EnvironmentCrashed(
                        f"cannot start the {config.benchmark} environment ({type(exc).__name__}: {exc})"
                    ) from None
                log.warning("the %s environment failed to start (%s); trying again", config.benchmark, exc)
        stats = getattr(player.env, "stats", None)
        before = stats.counts() if stats is not None else None
        record = player.play(task)
        if stats is not None and before is not None:
            record.extra[CACHE_COUNTS_KEY] = {k: v - before[k] for k, v in stats.counts().items()}
        return record

    def close(self) -> None:
        for wrapper in self.cached.values():
            wrapper.cache.close()
        for env in self.envs.values():
            env.close()
        self.envs.clear()
        self.cached.clear()
        self.players.clear()


def failure_kind(error: BaseException) -> str:
    """Whose failure ``error`` is: the infrastructure's (a storage fault too, wherever it was met, such as
    a learned router's embedding cache on a full disk) or the episode's."""
    if isinstance(error, InfrastructureError) or fault_of(error) is not None:
        return INFRASTRUCTURE_FAILURE
    return EPISODE_FAILURE


def failed_record(
    task: TaskInstance,
    config: RunConfig,
    error: BaseException,
    ledger: CostLedger | None = None,
    turns: int = 0,
    retries: int = 0,
) -> EpisodeRecord:
    """The record of an episode that did not finish, with every dollar its attempt was charged.

    ``unrecorded_charges`` are the charges of the turn the failure interrupted (and any
    judging), which no turn line holds.
    """
    ledger = ledger or CostLedger()
    return EpisodeRecord.of(
        task,
        episode_seed(config.seed, task),
        config.router.label,
        ledger,
        unrecorded_charges=ledger.turn_charges(turns),
        turns=turns,
        status=FAILED,
        failure=failure_kind(error),
        error=f"{type(error).__name__}: {' '.join(str(error).split())}",
        retries=retries,
    )


def worker_died_record(task: TaskInstance, config: RunConfig, store: RunStore, deaths: int) -> EpisodeRecord:
    """An episode whose worker kept dying; its spend is read back from the turns the dead worker wrote."""
    ledger = CostLedger()
    turns = 0
    if (store.turns_dir / episode_file_name(task.key)).exists():
        lines = store.turns(task.key)
        turns = len(lines)
        for line in lines:
            for charge in line.charges:
                ledger.charge(line.turn, Charge(**charge))
    error = WorkerDied(f"the worker process playing it died {deaths} times (killed or out of memory)")
    return failed_record(task, config, error, ledger, turns)


def _not_py4j(record: logging.LogRecord) -> bool:
    return f"{os.sep}py4j{os.sep}" not in record.pathname


def quiet_py4j() -> None:
    """Drop py4j's tracebacks: it logs one per failed call when a JVM dies or a call is interrupted.

    Our own errors say the same in one line. py4j logs some of them on the root logger
    (``logging.exception``), which would also configure logging if the root had no handler,
    so the root gets the plain stderr handler Python falls back to anyway.
    """
    logging.getLogger("py4j").setLevel(logging.CRITICAL)
    root = logging.getLogger()
    if _not_py4j not in root.filters:
        root.addFilter(_not_py4j)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)


def _kill_children() -> None:
    """SIGKILL this process's direct children (its JVMs)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == me:
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)


def _watch_parent(parent: int) -> None:
    """Exit, taking the JVMs along, as soon as the parent is gone (even after a kill -9 of it)."""
    while os.getppid() == parent:
        threading.Event().wait(PARENT_POLL_S)
    _kill_children()
    os._exit(1)


_worker: Worker | None = None
_playing: Any = None  # a multiprocessing queue: (worker pid, episode key or None) as episodes start and end


def _init_worker(parent: int, playing: Any) -> None:
    global _worker, _playing
    _playing = playing
    # Out of the terminal's process group: Ctrl-C goes to the parent alone, which stops the batch
    # cleanly, instead of killing every JVM mid-call. SIGINT ignored for the same reason.
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watchdog", daemon=True).start()
    _worker = Worker()


def _play(config: RunConfig, out: Path, task: TaskInstance) -> EpisodeRecord:
    assert _worker is not None, "worker not initialised"
    _playing.put((os.getpid(), task.key))
    try:
        return _worker.play(config, out, task)
    finally:
        _playing.put((os.getpid(), None))


class Workers:
    """The local executor: worker processes kept alive across batches, so imports and JVM starts are paid
    once (see :class:`harness.executors.Executor`).

    With one worker, episodes run in this process.
    """

    def __init__(self, n: int):
        self.n = n
        self._local: Worker | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._playing: Any = None

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

    def abandon(self) -> None:
        """Stop now: kill the worker processes (their JVMs follow), dropping the episodes they were playing."""
        if self._pool is not None:
            processes = list((self._pool._processes or {}).values())
            for process in processes:
                with contextlib.suppress(OSError):
                    process.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.join(timeout=10)
            self._pool = None
        self.close()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._playing = context.Queue()
            self._pool = ProcessPoolExecutor(
                max_workers=self.n,
                mp_context=context,
                initializer=_init_worker,
                initargs=(os.getpid(), self._playing),
            )
        return self._pool

    def _dead_workers_episodes(self, processes: dict[int, Any], playing: dict[int, str | None]) -> set[str]:
        """The episodes the worker(s) that died were playing: a worker the pool terminated after the
        death (SIGTERM) is not to blame, nor is one that was between episodes."""
        blamed = set()
        for pid, process in processes.items():
            process.join(timeout=1)
            if process.exitcode is not None and process.exitcode != -signal.SIGTERM:
                key = playing.get(pid)
                if key is not None:
                    blamed.add(key)
        return blamed

    def run(self, batch: Batch, pending: list[TaskInstance], finish: Callable[[EpisodeRecord], None]) -> None:
        try:
            self._run(batch, pending, finish)
        except KeyboardInterrupt:
            self.abandon()
            raise

    def _run(
        self, batch: Batch, pending: list[TaskInstance], finish: Callable[[EpisodeRecord], None]
    ) -> None:
        out = batch.store.root
        if self.n == 1:
            self._local = self._local or Worker()
            for task in pending:
                try:
                    record = self._local.play(batch.config, out, task)
                except InfrastructureError as exc:
                    record = failed_record(task, batch.config, exc)
                if interrupted.is_set():
                    # py4j may swallow the KeyboardInterrupt (its cleanup fails on the JVM that the same
                    # Ctrl-C killed); a failure it caused is not a result.
                    if not record.failed:
                        finish(record)
                    raise KeyboardInterrupt
                finish(record)
            return
        deaths: Counter[str] = Counter()
        order = {task.key: i for i, task in enumerate(pending)}
        todo = list(pending)
        while todo:
            replay = self._round(batch, todo, finish, deaths)
            todo = sorted(replay, key=lambda task: order[task.key])

    def _drain(self, playing: dict[int, str | None]) -> None:
        """Note which episode each worker is playing, from what the workers reported."""
        while True:
            try:
                pid, key = self._playing.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            playing[pid] = key

    def _round(
        self,
        batch: Batch,
        todo: list[TaskInstance],
        finish: Callable[[EpisodeRecord], None],
        deaths: Counter[str],
    ) -> list[TaskInstance]:
        """Submit ``todo`` to the pool; returns the episodes to play again because their worker died."""
        for restarted in (False, True):
            executor = self._executor()
            try:
                futures = {
                    executor.submit(_play, batch.config, batch.store.root, task): task for task in todo
                }
                break
            except BrokenProcessPool:  # a worker died while the pool sat idle between batches
                if restarted:
                    raise
                log.warning("a worker process died between batches; restarting the workers")
                executor.shutdown(wait=False, cancel_futures=True)
                self._pool = None
        remaining: set[Future] = set(futures)
        running: set[Future] = set()
        lost: list[Future] = []
        playing: dict[int, str | None] = {}
        processes: dict[int, Any] = {}
        while remaining:
            done, remaining = wait(remaining, timeout=RUNNING_POLL_S, return_when=FIRST_COMPLETED)
            running |= {f for f in remaining if f.running()}
            processes.update(executor._processes or {})
            self._drain(playing)
            for future in done:
                try:
                    record = future.result()
                except BrokenProcessPool:
                    lost.append(future)
                    continue
                except InfrastructureError as exc:  # the worker could not start its environment
                    record = failed_record(futures[future], batch.config, exc)
                finish(record)
        if not lost:
            return []
        # A worker died: the pool is broken as a whole. Blame the episodes that were being played
        # (all lost ones if none was seen running), replace the pool and play them all again.
        log.warning("a worker process died; restarting the workers and replaying %d episode(s)", len(lost))
        self._pool.shutdown(wait=False, cancel_futures=True)  # type: ignore[union-attr]
        self._pool = None
        self._drain(playing)
        keys = self._dead_workers_episodes(processes, playing)
        blamed = [f for f in lost if futures[f].key in keys] or [f for f in lost if f in running] or lost
        replay = []
        for future in lost:
            task = futures[future]
            if future in blamed:
                deaths[task.key] += 1
            if deaths[task.key] >= MAX_WORKER_DEATHS:
                finish(worker_died_record(task, batch.config, batch.store, deaths[task.key]))
            else:
                replay.append(task)
        return replay


def run_batch(
    batch: Batch,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
    workers: Executor | None = None,
) -> list[EpisodeRecord]:
    """Play every pending episode of ``batch``; returns the new records in completion order.

    ``workers`` is the executor to play them on, else one opened for the batch from its config.

    On KeyboardInterrupt the workers abandon their episodes, nothing half-done is recorded,
    and the interrupt propagates.
    """
    records: list[EpisodeRecord] = []

    def finish(record: EpisodeRecord) -> None:
        counts = record.extra.pop(CACHE_COUNTS_KEY, None)
        record = batch.store.with_earlier_attempts(record)
        batch.store.record_episode(record)
        if counts is not None:
            add_cache_counts(batch.store.root, batch.config.prefix_cache, counts)
        records.append(record)
        if on_episode:
            on_episode(record)

    pending = batch.pending
    if not pending:
        return records
    if workers is not None:
        workers.run(batch, pending, finish)
        return records
    from harness.executors import open_executor  # harness.executors imports this module

    with open_executor(batch.config.executor, min(batch.config.workers, len(pending))) as own:
        own.run(batch, pending, finish)
    return records


def cache_summary(counts: dict[str, Any]) -> dict[str, Any]:
    """Counters with what they mean: hits (steps served), misses (new steps the engine ran), the
    replays that checked a cached prefix, mismatches, fallbacks, and the share of engine steps saved."""
    requested = counts["served_steps"] + counts["engine_steps"] - counts["replayed_steps"]
    return {
        **counts,
        "hits": counts["served_steps"],
        "misses": counts["engine_steps"] - counts["replayed_steps"],
        "requested_steps": requested,
        "saved_fraction": 1.0 - counts["engine_steps"] / requested if requested else 0.0,
    }


def add_cache_counts(run_dir: Path, directory: str | None, counts: dict[str, int]) -> None:
    """Add one episode's prefix-cache counters to the run's ``prefix-cache.json`` (the parent alone writes it)."""
    path = Path(run_dir) / CACHE_FILE
    total = json.loads(path.read_text()) if path.exists() else {"episodes": 0}
    summed = {k: int(total.get(k, 0)) + int(v) for k, v in counts.items()}
    write_json_atomic(
        path,
        {"store": directory, "episodes": total["episodes"] + 1, **cache_summary(summed)},
    )


def read_cache_counts(run_dirs: list[Path]) -> dict[str, Any] | None:
    """The prefix-cache counters of several runs added up; None if none of them used the cache."""
    files = [Path(d) / CACHE_FILE for d in run_dirs if (Path(d) / CACHE_FILE).exists()]
    if not files:
        return None
    from harness.replay.prefix_cache import CacheStats

    loaded = [json.loads(f.read_text()) for f in files]
    counts = {k: sum(int(x.get(k, 0)) for x in loaded) for k in CacheStats.COUNTERS}
    return {
        "runs": len(files),
        "episodes": sum(int(x.get("episodes", 0)) for x in loaded),
        "stores": sorted({str(x["store"]) for x in loaded if x.get("store")}),
        **cache_summary(counts),
    }


class BatchProgress(Protocol):
    """What a caller of :func:`execute` is told: the batch's size and each episode as it finishes."""

    def start(self, label: str, total: int, finished: list[EpisodeRecord]) -> None: ...

    def episode(self, record: EpisodeRecord) -> None: ...

    def stop(self) -> None: ...


def execute(
    config: RunConfig,
    out: Path,
    label: str | None = None,
    workers: Executor | None = None,
    progress: BatchProgress | None = None,
    wait_s: float = 0.0,
    retry_infrastructure: bool = True,
    root: Path | None = None,
) -> list[EpisodeRecord]:
    """Validate, then play every pending episode of a run; returns all episode records of the run directory.

    ``workers`` lets a caller keep an executor (its processes and JVMs) across batches; ``wait_s``,
    ``retry_infrastructure`` and ``root`` are :func:`prepare`'s. An interrupt (SIGINT, or SIGTERM
    under :func:`stop_on_signals`) is re-raised as :class:`BatchInterrupted`, whose
    message says how much is recorded and how to resume.
    """
    batch = prepare(config, out, wait_s=wait_s, retry_infrastructure=retry_infrastructure, root=root)
    try:
        if progress is not None:
            progress.start(label or config.router.label, len(batch.tasks), batch.store.episodes())
        try:
            run_batch(batch, progress.episode if progress is not None else None, workers)
        finally:
            if progress is not None:
                progress.stop()
        return batch.store.episodes()
    except KeyboardInterrupt:
        recorded = len(batch.store.finished_keys() & {t.key for t in batch.tasks})
        raise BatchInterrupted(
            f"interrupted: {recorded} of {len(batch.tasks)} episodes of {out} are recorded; "
            "rerun the same command to resume"
        ) from None
    finally:
        batch.store.close()


def play_run(
    config: RunConfig,
    out: Path,
    *,
    ray_address: str | None = None,
    progress: BatchProgress | None = None,
    wait_s: float = 0.0,
    retry_infrastructure: bool = True,
) -> list[EpisodeRecord]:
    """One batch where ``config.executor`` says (``harness run``, and ``harness episode`` for a batch of one).

    The local pool is sized to the batch by :func:`execute`; a Ray executor is opened here, joining
    ``ray_address`` if given. Returns every episode record of the run directory.
    """
    if config.executor == "local" and ray_address is None:
        return execute(
            config, out, progress=progress, wait_s=wait_s, retry_infrastructure=retry_infrastructure
        )
    from harness.executors import open_executor  # harness.executors imports this module

    with open_executor(config.executor, config.workers, ray_address) as workers:
        return execute(
            config,
            out,
            workers=workers,
            progress=progress,
            wait_s=wait_s,
            retry_infrastructure=retry_infrastructure,
        )


def batch_problem(records: list[EpisodeRecord], where: str) -> str | None:
    """One line saying why a batch did not do what was asked, or None if it did.

    Infrastructure failures always count; episode failures only when every episode failed.
    """
    infrastructure = [r for r in records if r.infrastructure_failure]
    failed = [r for r in records if r.failed]
    if infrastructure:
        return (
            f"{len(infrastructure)} of {len(records)} episodes of {where} failed for infrastructure reasons "
            f"(first: {infrastructure[0].error}); rerun the same command to play them again"
        )
    if records and len(failed) == len(records):
        return f"all {len(records)} episodes of {where} failed (first: {failed[0].error})"
    return None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt while the block runs, so a batch stops cleanly.

    SIGINT is set explicitly: a process started from a non-interactive shell inherits it ignored.
    """

    def interrupt(signum: int, frame: object) -> None:
        interrupted.set()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    interrupted.clear()
    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
