"""Gold action sequences for ScienceWorld task variations, generated once and cached.

The engine's gold agent costs ~1 s per load (median; ~30 s on mendelian
genetics) and, once enabled in a JVM, makes every later reset in that JVM
regenerate the path. So gold paths come from dedicated JVMs here, are replayed
in a separate deterministic :class:`ScienceWorldEnv` (recording whether the
replay really reaches 100), and are written to a gzip JSONL cache that
simulated models read through the environment's oracle.

Of the 1,782 shipped paths (every variation of scienceworld-v1's, scienceworld-powered-v1's and
scienceworld-reversed-powered-v1's splits), 1,771 replay to 100. Six fall short because the gold
agent itself does (it ends there too: freeze/11 and /19 at 87 and 82, four
mendelian-genetics paths at -100); three added with the reversed powered split
(grow-fruit/78 at 46, mendelian-genetics-unknown-plant/274 and /427 at -100) were not
checked against the gold agent; grow-fruit/6 and /8 reach 100 for the gold
agent but 46 and 50 here, because the gold agent draws from the engine's RNG
when it lists valid actions each step and our env does not (see
:mod:`harness.benchmarks.scienceworld.engine`).
"""

from __future__ import annotations

import gzip
import json
import logging
import multiprocessing
import multiprocessing.util
import os
import tempfile
import time
from pathlib import Path

from py4j.protocol import Py4JError

from harness.benchmarks.scienceworld.engine import (
    DEFAULT_HEAP,
    ScienceWorldEnv,
    ScienceWorldJvm,
    engine_fingerprint,
)
from harness.config import BENCHMARKS_DIR
from harness.errors import EnvironmentCrashed, TrajectoryError, UnknownNameError
from harness.types import TaskInstance

DEFAULT_GOLD_PATH = BENCHMARKS_DIR / "data" / "scienceworld_gold.jsonl.gz"
_CHECKPOINT_EVERY = 20

log = logging.getLogger(__name__)


class GoldPathMaker:
    """Two JVMs: one with gold generation on, one plain env to replay what it produced."""

    def __init__(self, heap: str = DEFAULT_HEAP):
        self.heap = heap
        self.fingerprint = engine_fingerprint(heap)
        self._gold_jvm = ScienceWorldJvm(heap)
        self._replay_env = ScienceWorldEnv(jvm_heap=heap)

    def make(self, task: str, variation: int) -> dict:
        started = time.perf_counter()
        server = self._gold_jvm.server
        error = server.load(task, variation, "", True)
        if error:
            raise UnknownNameError(f"ScienceWorld cannot load {task}/{variation}: {error}")
        joined = self._gold_jvm.gateway.jvm.java.lang.String.join("\n", server.getGoldActionSequence())
        actions = joined.split("\n") if joined else []
        generated = time.perf_counter()
        replay_score, replay_completed = self._replay(task, variation, actions)
        return {
            "task": task,
            "variation": variation,
            "actions": actions,
            "replay_score": replay_score,
            "replay_completed": replay_completed,
            "generate_seconds": round(generated - started, 3),
            "replay_seconds": round(time.perf_counter() - generated, 3),
            "engine": self.fingerprint,
        }

    def _replay(self, task: str, variation: int, actions: list[str]) -> tuple[int, bool]:
        self._replay_env.reset(TaskInstance("scienceworld", task, variation, "gold"))
        score, completed = 0, False
        for action in actions:
            result = self._replay_env.send(action)
            score, completed = int(result.score), result.done and result.score >= 0
            if result.done:
                break
        return score, completed

    def restart(self) -> None:
        self.close()
        self._gold_jvm = ScienceWorldJvm(self.heap)
        self._replay_env = ScienceWorldEnv(jvm_heap=self.heap)

    def close(self) -> None:
        self._gold_jvm.close()
        self._replay_env.close()


_worker: GoldPathMaker | None = None


def _init_worker(heap: str) -> None:
    global _worker
    _worker = GoldPathMaker(heap)
    # Pool workers leave through os._exit, which skips atexit; a Finalize with a priority still runs.
    multiprocessing.util.Finalize(_worker, _worker.close, exitpriority=10)


def _make_in_worker(key: tuple[str, int]) -> dict:
    task, variation = key
    for attempt in (1, 2):
        try:
            return _worker.make(task, variation)
        except (EnvironmentCrashed, Py4JError) as exc:
            if attempt == 2:
                return {
                    "task": task,
                    "variation": variation,
                    "actions": [],
                    "error": str(exc).splitlines()[0],
                }
            _worker.restart()
    raise AssertionError("unreachable")


def generate_gold_paths(
    tasks: list[tuple[str, int]],
    workers: int = 2,
    *,
    out: Path = DEFAULT_GOLD_PATH,
    heap: str = DEFAULT_HEAP,
) -> None:
    """Add gold paths for ``tasks`` to the cache at ``out``; entries already there (without error) are kept.

    Safe to interrupt: the cache is rewritten atomically every few entries, and a
    rerun only generates what is missing.
    """
    out = Path(out)
    entries = _read_entries(out) if out.exists() else {}
    todo = sorted({(t, v) for t, v in tasks} - {k for k, e in entries.items() if "error" not in e})
    log.info("gold paths: %d cached, %d to generate with %d workers", len(entries), len(todo), workers)
    if not todo:
        return
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(
        workers, initializer=_init_worker, initargs=(heap,)
    ) as pool:
        for done, entry in enumerate(pool.imap_unordered(_make_in_worker, todo), start=1):
            entries[(entry["task"], entry["variation"])] = entry
            if done % _CHECKPOINT_EVERY == 0:
                _write_entries(out, entries)
                log.info("gold paths: %d/%d in %.0f s", done, len(todo), time.perf_counter() - started)
        pool.close()
        pool.join()
    _write_entries(out, entries)


def load_gold_entries(path: Path | str = DEFAULT_GOLD_PATH) -> dict[tuple[str, int], dict]:
    """Every cache line keyed by (task, variation), with replay results and engine fingerprint."""
    return _read_entries(Path(path))


def load_gold_paths(
    path: Path | str = DEFAULT_GOLD_PATH, min_replay_score: int | None = None
) -> dict[tuple[str, int], list[str]]:
    """(task, variation) -> gold actions, for entries generated without error.

    ``min_replay_score=100`` keeps only paths verified to solve the task in our env.
    """
    return {
        key: entry["actions"]
        for key, entry in _read_entries(Path(path)).items()
        if "error" not in entry and (min_replay_score is None or entry["replay_score"] >= min_replay_score)
    }


def _read_entries(path: Path) -> dict[tuple[str, int], dict]:
    entries = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                try:
                    entry = json.loads(line)
                    entries[(entry["task"], int(entry["variation"]))] = entry
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    raise TrajectoryError(f"gold cache {path} line {number} is malformed") from None
    except (OSError, EOFError) as exc:
        raise TrajectoryError(f"gold cache {path} is unreadable: {exc}") from None
    return entries


def _write_entries(path: Path, entries: dict[tuple[str, int], dict]) -> None:
    """Sorted lines, gzip mtime 0: the same entries always give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            for key in sorted(entries):
                f.write((json.dumps(entries[key], sort_keys=True) + "\n").encode("utf-8"))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is a shipped data file
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> None:
    """Add to the shipped cache every variation of a split file's splits (default: the reference split's):
    ``python -m harness.benchmarks.scienceworld.gold [SPLIT_FILE ...]``."""
    import sys

    from harness.benchmarks import get_benchmark

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    plugin = get_benchmark("scienceworld")
    splits = [plugin.load_split(path) for path in sys.argv[1:]] or [plugin.load_split()]
    keys = [
        (t.task, t.variation) for split in splits for name in split.split_names for t in split.tasks(name)
    ]
    generate_gold_paths(keys, workers=2, out=DEFAULT_GOLD_PATH)


if __name__ == "__main__":
    main()
