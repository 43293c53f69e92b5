"""The engine prefix cache kept on disk, shared by every worker process of a benchmark's batches.

One SQLite file per benchmark engine (``DIR/<benchmark>-<fingerprint>.sqlite``: the
engine fingerprint, versions and JVM flags, is part of the name, so a tree is only ever
served to the engine that grew it). WAL mode lets two worker processes read while one
writes; every write is its own short transaction. What a process learns (a reset, a
step, the visible objects at a node, a task found nondeterministic) is written at once,
and at the start of each episode a process reads in the rows of that task added since it
last looked (row ids only grow: nothing is ever deleted).

Two processes may grow the same node at once. The second insert is ignored and the row
already there is compared with what its own engine returned: a difference is a
mismatch, handled as within one process (the task is marked nondeterministic, for every
process, and runs on the engine from then on). Results are stored as JSON, so a score
comes back with the type the engine gave it (an int stays an int in the turn lines).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from harness.benchmarks import get_benchmark
from harness.errors import ConfigError
from harness.replay.prefix_cache import ActionKey, Node, PrefixCache, Root
from harness.types import StepResult, TaskInstance

BUSY_TIMEOUT_MS = 60_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS roots (
    task TEXT PRIMARY KEY, description TEXT NOT NULL, observation TEXT NOT NULL, has_oracle INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    task TEXT NOT NULL, node TEXT NOT NULL, parent TEXT NOT NULL, action TEXT NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (task, node)
);
CREATE TABLE IF NOT EXISTS visible (
    task TEXT NOT NULL, node TEXT NOT NULL, objects TEXT NOT NULL, PRIMARY KEY (task, node)
);
CREATE TABLE IF NOT EXISTS nondeterministic (task TEXT PRIMARY KEY, found TEXT NOT NULL, pid INTEGER NOT NULL);
"""


def store_path(directory: Path, benchmark: str) -> Path:
    """The cache file of ``benchmark``'s engine as it is now: its fingerprint and its oracle's (a tree
    records whether each task had an oracle, so new gold paths must not be served an old tree)."""
    plugin = get_benchmark(benchmark)
    identity = {**plugin.fingerprint(), **plugin.oracle_fingerprint()}
    fingerprint = json.dumps(identity, sort_keys=True, default=str)
    return Path(directory) / f"{benchmark}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}.sqlite"


def check_directory(directory: Path) -> None:
    """A clear error before any work if the cache directory cannot be created or written."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"prefix cache directory {directory} is not writable: {exc.strerror}") from None


def _encode(result: StepResult) -> str:
    return json.dumps([result.observation, result.score, result.done, result.valid])


def _decode(text: str) -> StepResult:
    observation, score, done, valid = json.loads(text)
    return StepResult(observation=observation, score=score, done=done, valid=valid)


def _enter_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL, retrying while another process holds the lock: SQLite answers a journal-mode
    change with "database is locked" at once, without waiting out the busy timeout, when a second
    connection is setting up the same new file."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class StoredPrefixCache(PrefixCache):
    """A :class:`PrefixCache` whose trees are written through to, and read back from, one SQLite file."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._seen: dict[str, tuple[int, int]] = {}  # task -> last node and visible row ids read
        self._index: dict[str, dict[str, Node]] = {}  # task -> digest -> node

    @classmethod
    def open(cls, directory: Path, benchmark: str) -> StoredPrefixCache:
        check_directory(directory)
        return cls(store_path(directory, benchmark))

    @property
    def db(self) -> sqlite3.Connection:
        """Opened on first use, so that each worker process has its own connection."""
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _enter_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- reading ---------------------------------------------------------------------------

    def begin(self, task: TaskInstance) -> None:
        key = task.key
        if key in self.stats.nondeterministic:
            return
        if self.db.execute("SELECT 1 FROM nondeterministic WHERE task = ?", (key,)).fetchone():
            self.stats.nondeterministic.add(key)
            self.roots.pop(key, None)
            self._index.pop(key, None)
            return
        root = self.root(task)
        row = self.db.execute(
            "SELECT description, observation, has_oracle FROM roots WHERE task = ?", (key,)
        ).fetchone()
        if row is not None and root.observation is None:
            if root.description is not None and root.description != row[0]:
                self.mismatch(task)
                return
            root.description, root.observation, root.has_oracle = row[0], row[1], bool(row[2])
        index = self._index_of(task)
        last_node, last_visible = self._seen.get(key, (0, 0))
        for rowid, node, parent, action, result in self.db.execute(
            "SELECT rowid, node, parent, action, result FROM nodes WHERE task = ? AND rowid > ? ORDER BY rowid",
            (key, last_node),
        ):
            last_node = rowid
            above = index.get(parent)
            if above is None:
                continue
            action_key: ActionKey = tuple(json.loads(action))  # type: ignore[assignment]
            known = above.children.get(action_key)
            if known is None:
                above.children[action_key] = index[node] = Node(_decode(result), digest=node)
            elif known.result is None or _encode(known.result) != result:
                self.mismatch(task)
                return
        for rowid, node, objects in self.db.execute(
            "SELECT rowid, node, objects FROM visible WHERE task = ? AND rowid > ? ORDER BY rowid",
            (key, last_visible),
        ):
            last_visible = rowid
            if node in index and index[node].visible_objects is None:
                index[node].visible_objects = json.loads(objects)
        self._seen[key] = (last_node, last_visible)

    def _index_of(self, task: TaskInstance) -> dict[str, Node]:
        index = self._index.get(task.key)
        if index is None:
            index, todo = {}, [self.root(task)]
            while todo:
                node = todo.pop()
                index[node.digest] = node
                todo.extend(node.children.values())
            self._index[task.key] = index
        return index

    # -- writing ---------------------------------------------------------------------------

    def grow(self, task: TaskInstance, node: Node, key: ActionKey, result: StepResult) -> Node | None:
        child = super().grow(task, node, key, result)
        assert child is not None
        self._index_of(task)[child.digest] = child
        encoded = _encode(result)
        inserted = self.db.execute(
            "INSERT OR IGNORE INTO nodes (task, node, parent, action, result) VALUES (?, ?, ?, ?, ?)",
            (task.key, child.digest, node.digest, json.dumps(key), encoded),
        ).rowcount
        if not inserted:
            (stored,) = self.db.execute(
                "SELECT result FROM nodes WHERE task = ? AND node = ?", (task.key, child.digest)
            ).fetchone()
            if stored != encoded:
                self.mismatch(task)
                return None
        return child

    def set_root(
        self, task: TaskInstance, root: Root, description: str, observation: str, oracle: bool
    ) -> bool:
        super().set_root(task, root, description, observation, oracle)
        self.db.execute(
            "INSERT OR IGNORE INTO roots (task, description, observation, has_oracle) VALUES (?, ?, ?, ?)",
            (task.key, description, observation, int(oracle)),
        )
        stored = self.db.execute(
            "SELECT description, observation, has_oracle FROM roots WHERE task = ?", (task.key,)
        ).fetchone()
        return tuple(stored) == (description, observation, int(oracle))

    def set_visible(self, task: TaskInstance, node: Node, objects: list[str]) -> None:
        super().set_visible(task, node, objects)
        self.db.execute(
            "INSERT OR IGNORE INTO visible (task, node, objects) VALUES (?, ?, ?)",
            (task.key, node.digest, json.dumps(list(objects))),
        )

    def mismatch(self, task: TaskInstance) -> None:
        super().mismatch(task)
        self._index.pop(task.key, None)
        self._seen.pop(task.key, None)
        self.db.execute(
            "INSERT OR IGNORE INTO nondeterministic (task, found, pid) VALUES (?, ?, ?)",
            (task.key, datetime.now(timezone.utc).isoformat(), os.getpid()),
        )
