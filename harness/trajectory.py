"""The trajectory store: one directory per run, JSON Lines throughout.

Layout (readable with ``pandas.read_json(path, lines=True)``)::

    RUN/config.json            the run's config snapshot (no secrets), written once; paths inside the
                               results directory are relative to RUN (:func:`relative_paths`)
    RUN/episodes.jsonl         one line per finished episode
    RUN/turns/<episode>.jsonl  one line per turn, appended as the turn happens

    RUN/.lock                  held (flock) by the one process writing the run; holds its pid
    RUN/episodes.retried.jsonl episode lines of infrastructure failures taken out for a rerun
    RUN/episodes.torn-N.jsonl  a torn final line cut off by a resume, kept for inspection

What a line holds is :mod:`harness.records`' business: the store appends
:class:`~harness.records.EpisodeRecord` and :class:`~harness.records.TurnRecord` lines
and parses them back in the run's format version.

Each line is appended on an ``O_APPEND`` descriptor (a storage fault part-way through
cuts it back off; see :mod:`harness.storage`), so a killed process leaves at worst one
torn final line, which readers drop with a warning and the next writer cuts off (into
a side file) before appending. One process writes a run at a time: :meth:`RunStore.open`
takes an exclusive ``flock`` on ``RUN/.lock`` that the OS releases however the process ends. An
episode counts as finished only once its line is in ``episodes.jsonl``;
rerunning a run skips those and restarts the others, keeping the turns of an
interrupted attempt beside the new ones as ``*.interrupted-N.jsonl``. A
recorded failure of the infrastructure (``failure: "infrastructure"``) is not
a result: by default a rerun moves its line to ``episodes.retried.jsonl`` and
plays the episode again, so every episode has exactly one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, RunLockedError, StorageError, TrajectoryError
from harness.records import FORMAT_VERSION, READABLE_VERSIONS, EpisodeRecord, TurnRecord
from harness.storage import fault_of, guarded

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
EPISODES_FILE = "episodes.jsonl"
TURNS_DIR = "turns"
LOCK_FILE = ".lock"
RETRIED_FILE = "episodes.retried.jsonl"
LOCK_POLL_S = 0.2
# A config snapshot's value {"relative_path": "../../../models/ridge"}: a path inside the results directory,
# relative to the run directory, so the results directory can be moved or copied and resumed.
RELATIVE_PATH = "relative_path"
_MISSING = object()  # a field one snapshot has and the other lacks


def append_line(path: Path, record: dict[str, Any], sync: bool = False) -> None:
    """Append one line; a write the storage refuses part-way is cut back off, so the file never holds a torn
    line that a later append would bury, and raises :class:`~harness.errors.StorageError`."""
    data = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    with guarded(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                rest = memoryview(data)
                while rest:  # a short write is retried: the next one says why it fell short
                    written = os.write(fd, rest)
                    if written == 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                    rest = rest[written:]
                if sync:
                    os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` whole or not at all; a storage fault leaves the old file and no temporary behind."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with guarded(path):
        try:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


_warned_torn: set[tuple[str, int]] = set()
_held_locks: dict[Path, list[int]] = {}  # lock file -> [descriptor, stores of this process holding it]


def _warn_torn(path: Path, number: int, size: int) -> None:
    """Once per file state: a reader that rereads a file (resume, summaries) must not repeat itself."""
    key = (str(path), size)
    if key not in _warned_torn:
        _warned_torn.add(key)
        log.warning("dropping torn last line %d of %s", number, path)


def repair_torn_tail(path: Path) -> Path | None:
    """Cut a torn final line off ``path`` before anything is appended to it; returns the side file kept.

    The fragment goes to ``<name>.torn-N.jsonl`` so nothing is destroyed; a final
    line that is complete JSON but lost only its newline is kept and terminated.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data or data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n") + 1
    fragment = data[cut:]
    try:
        json.loads(fragment)
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    else:
        with open(path, "ab") as handle:
            handle.write(b"\n")
            os.fsync(handle.fileno())
        return None
    n = 1
    while (aside := path.with_name(f"{path.stem}.torn-{n}.jsonl")).exists():
        n += 1
    aside.write_bytes(fragment)
    with open(path, "r+b") as handle:
        handle.truncate(cut)
        os.fsync(handle.fileno())
    log.warning(
        "%s ended in a torn line (%d bytes, kept in %s); cut it off before resuming",
        path,
        len(fragment),
        aside,
    )
    return aside


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Parse a JSONL file; a torn last line is dropped, a corrupt inner line is an error."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise TrajectoryError(f"cannot read {path}: {exc.strerror}") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            is_last = all(not rest.strip() for rest in lines[number:])
            if is_last and not text.endswith("\n"):
                _warn_torn(path, number, len(text))
                continue
            raise TrajectoryError(
                f"corrupt trajectory file {path}: line {number} is not valid JSON"
            ) from None
    return records


def check_format_version(root: Path, config: dict[str, Any], writing: bool = False) -> int:
    """The run's format version; one this harness cannot read (or, ``writing``, append to) is refused by name."""
    found = config.get("format_version", 1)
    if writing and found != FORMAT_VERSION:
        doing = f"appends only to version {FORMAT_VERSION}"
    elif found not in READABLE_VERSIONS:
        doing = f"reads versions {', '.join(map(str, READABLE_VERSIONS))}"
    else:
        return found
    raise TrajectoryError(
        f"run directory {root} has trajectory format version {found}; this harness {doing} "
        f"(convert it: harness import run {root} NEW_DIR)"
    )


def _inside(text: str, root: Path) -> Path | None:
    """The absolute path ``text`` names if it is an existing file or directory inside ``root``, else None."""
    try:
        path = Path(text).absolute()
        if not path.exists():
            return None
    except (OSError, ValueError):  # not a path at all (a NUL, a name too long)
        return None
    return path if path.is_relative_to(Path(root).absolute()) else None


def relative_paths(value: Any, run_dir: Path, root: Path) -> Any:
    """``value`` (part of a config snapshot) with every string that names an existing path inside the
    results directory ``root`` recorded as ``{"relative_path": ...}``, relative to ``run_dir``.

    A checkpoint or cache of the results directory then stays the same run wherever the directory is
    moved or copied (:meth:`RunStore.config` resolves it back). A path outside ``root`` (a checkpoint or
    a cache the user named elsewhere) is recorded as given: it is part of what the run is, and moving
    the results directory does not move it.
    """
    if isinstance(value, dict):
        return {k: relative_paths(v, run_dir, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, run_dir, root) for v in value]
    if isinstance(value, str) and (path := _inside(value, root)) is not None:
        return {RELATIVE_PATH: os.path.relpath(path, Path(run_dir).absolute())}
    return value


def absolute_paths(value: Any, run_dir: Path) -> Any:
    """``value`` with every ``{"relative_path": ...}`` resolved against ``run_dir``: what a reader uses."""
    if isinstance(value, dict):
        if set(value) == {RELATIVE_PATH}:
            return os.path.normpath(Path(run_dir) / value[RELATIVE_PATH])
        return {k: absolute_paths(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [absolute_paths(v, run_dir) for v in value]
    return value


def first_difference(recorded: Any, given: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The dotted path of the first field where two snapshots differ, with both values; None if equal."""
    if isinstance(recorded, dict) and isinstance(given, dict):
        for key in sorted(set(recorded) | set(given), key=str):
            found = first_difference(
                recorded.get(key, _MISSING), given.get(key, _MISSING), f"{where}.{key}" if where else str(key)
            )
            if found is not None:
                return found
        return None
    return None if recorded == given else (where, recorded, given)


def _shown(value: Any, limit: int = 120) -> str:
    text = "absent" if value is _MISSING else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def episode_file_name(key: str) -> str:
    return key.replace("/", "__") + ".jsonl"


class RunStore:
    """The files of one run; resumable and safe to append to from one writer per file."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock_fd: int | None = None
        self._version: int | None = None
        self._retired: dict[str, EpisodeRecord] | None = None  # episode -> its last retired record

    @property
    def episodes_path(self) -> Path:
        return self.root / EPISODES_FILE

    @property
    def turns_dir(self) -> Path:
        return self.root / TURNS_DIR

    def open(
        self,
        config: dict[str, Any],
        wait_s: float = 0.0,
        retry_infrastructure: bool = True,
        earlier: tuple[dict[str, Any], ...] = (),
    ) -> None:
        """Become the run directory's one writer, then create it or check that it holds the same run.

        ``earlier`` are other snapshots of the same run, as an earlier harness recorded it (paths as
        given rather than relative); a run directory holding one is brought up to ``config``.

        A torn last episode line is cut off, and (unless ``retry_infrastructure`` is
        False) infrastructure failures are taken out so the batch plays them again. A run
        that could not be created (a full disk) leaves nothing of it behind, so a rerun starts clean.
        """
        created = [p for p in (self.root, self.turns_dir) if not p.exists()]
        try:
            with guarded(self.root):
                try:
                    self.turns_dir.mkdir(parents=True, exist_ok=True)
                    probe = self.root / f".write-probe-{os.getpid()}"
                    probe.write_text("")
                    probe.unlink()
                except OSError as exc:
                    if fault_of(exc) is not None:
                        raise
                    raise ConfigError(
                        f"output directory {self.root} is not writable: {exc.strerror}"
                    ) from None
                self.lock(wait_s)
                self._check_config(config, earlier)
                repair_torn_tail(self.episodes_path)
                if retry_infrastructure:
                    self.retire_infrastructure_failures()
        except StorageError:
            if not (self.root / CONFIG_FILE).exists():
                # the lock file is this open's if it holds it, or if the directory is this open's
                self._remove_unused(created, held=self._lock_fd is not None or self.root in created)
            self.close()
            raise
        except BaseException:
            self.close()
            raise

    def _remove_unused(self, created: list[Path], held: bool) -> None:
        """Take away what an :meth:`open` that created no run left: the lock file it ``held``, and the
        directories it made."""
        if held:
            with contextlib.suppress(OSError):
                (self.root / LOCK_FILE).unlink()
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty: nothing but what this open made is removed

    def lock(self, wait_s: float = 0.0) -> None:
        """Take the run's writer lock, waiting up to ``wait_s`` seconds (negative: forever) for its holder.

        The lock belongs to the process: stores of one process on one directory share it.
        """
        if self._lock_fd is not None:
            return
        path = (self.root / LOCK_FILE).resolve()
        held = _held_locks.get(path)
        if held is not None:
            held[1] += 1
            self._lock_fd = held[0]
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if wait_s < 0 else time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
                    raise RunLockedError(
                        f"run directory {self.root} is being written by another process (pid {holder}){waited}; "
                        "wait for it to finish, or pass --wait SECONDS"
                    ) from None
                time.sleep(LOCK_POLL_S)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # a full disk: the lock is given up with the error
            os.close(fd)
            raise
        _held_locks[path] = [fd, 1]
        self._lock_fd = fd

    def close(self) -> None:
        """Release the writer lock (the OS releases it too if the process dies)."""
        if self._lock_fd is None:
            return
        path = (self.root / LOCK_FILE).resolve()
        held = _held_locks.get(path)
        self._lock_fd = None
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _held_locks[path]
            os.close(held[0])

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_config(self, config: dict[str, Any], earlier: tuple[dict[str, Any], ...] = ()) -> None:
        snapshot = self._plain({"format_version": FORMAT_VERSION, **config})
        path = self.root / CONFIG_FILE
        if path.exists():
            existing = json.loads(path.read_text())
            check_format_version(self.root, existing, writing=True)
            if existing != snapshot:
                if not any(existing == self._plain({"format_version": FORMAT_VERSION, **e}) for e in earlier):
                    where, recorded, given = first_difference(existing, snapshot) or ("?", None, None)
                    raise ConfigError(
                        f"{self.root} holds a run with a different config ({where} is {_shown(recorded)} "
                        f"there, {_shown(given)} now); use another output directory"
                    )
                write_json_atomic(path, snapshot)  # the same run, now recorded so that it can move
        else:
            write_json_atomic(path, snapshot)
        self._version = FORMAT_VERSION

    @staticmethod
    def _plain(snapshot: dict[str, Any]) -> dict[str, Any]:
        """The snapshot as ``config.json`` holds it (JSON types only)."""
        return json.loads(json.dumps(snapshot, default=str))

    def config(self) -> dict[str, Any]:
        """The run's config snapshot, its relative paths resolved; a directory in another trajectory format
        is refused by name."""
        path = self.root / CONFIG_FILE
        if not path.exists():
            raise TrajectoryError(f"{self.root} is not a run directory (no {CONFIG_FILE})")
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise TrajectoryError(f"corrupt run config {path}") from None
        self._version = check_format_version(self.root, config)
        return absolute_paths(config, self.root)

    @property
    def format_version(self) -> int:
        """The version the run's lines are written in (a run not yet created will be written in this one's)."""
        if self._version is None:
            self._version = (
                self.config()["format_version"] if (self.root / CONFIG_FILE).exists() else FORMAT_VERSION
            )
        return self._version

    def episodes(self) -> list[EpisodeRecord]:
        if not self.episodes_path.exists():
            return []
        version, where = self.format_version, str(self.episodes_path)
        return [EpisodeRecord.from_line(line, version, where) for line in read_lines(self.episodes_path)]

    def finished_keys(self) -> set[str]:
        return {e.episode for e in self.episodes()}

    def retire_infrastructure_failures(self) -> list[EpisodeRecord]:
        """Move infrastructure-failure lines to ``episodes.retried.jsonl``; needs the writer lock."""
        episodes = self.episodes()
        retired = [e for e in episodes if e.infrastructure_failure]
        if not retired:
            return []
        for record in retired:
            append_line(self.root / RETRIED_FILE, record.to_line(), sync=True)
        self._retired = None
        kept = "".join(
            json.dumps(e.to_line(), sort_keys=True, default=str) + "\n"
            for e in episodes
            if not e.infrastructure_failure
        )
        tmp = self.episodes_path.with_name(f".{EPISODES_FILE}.tmp{os.getpid()}")
        with open(tmp, "w") as handle:
            handle.write(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.episodes_path)
        log.info("%s: %d infrastructure failure(s) will be played again", self.root, len(retired))
        return retired

    def turns(self, key: str) -> list[TurnRecord]:
        path = self.turns_dir / episode_file_name(key)
        version, where = self.format_version, str(path)
        return [TurnRecord.from_line(line, version, where) for line in read_lines(path)]

    def ordered_turns(self, key: str) -> list[TurnRecord]:
        """An episode's turn lines by turn index; none for an episode that never began a turn file."""
        if not (self.turns_dir / episode_file_name(key)).exists():
            return []
        return sorted(self.turns(key), key=lambda line: line.turn)

    def interrupted_files(self, key: str) -> list[Path]:
        """The turn files of ``key``'s earlier attempts kept aside by :meth:`begin_episode`, oldest first."""
        path = self.turns_dir / episode_file_name(key)
        files = []
        while (aside := path.with_name(f"{path.stem}.interrupted-{len(files) + 1}.jsonl")).exists():
            files.append(aside)
        return files

    def begin_episode(self, key: str) -> Path:
        """A fresh, empty turn file for ``key``; an earlier attempt's file is kept aside.

        The file is created at once, before the attempt's first turn, so that every attempt
        that began leaves a file however it ends: :meth:`with_earlier_attempts` counts them.
        """
        path = self.turns_dir / episode_file_name(key)
        with guarded(path):
            if path.exists():
                n = len(self.interrupted_files(key)) + 1
                os.replace(path, path.with_name(f"{path.stem}.interrupted-{n}.jsonl"))
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        return path

    def _last_retired(self, key: str) -> EpisodeRecord | None:
        """The latest record of ``key`` that a rerun took out of ``episodes.jsonl`` to play it again."""
        if self._retired is None:
            path = self.root / RETRIED_FILE
            version, where = self.format_version, str(path)
            lines = read_lines(path) if path.exists() else []
            self._retired = {
                r.episode: r for r in (EpisodeRecord.from_line(x, version, where) for x in lines)
            }
        return self._retired.get(key)

    def with_earlier_attempts(self, record: EpisodeRecord) -> EpisodeRecord:
        """``record`` charged with every earlier attempt of its episode, however each one ended.

        The one place where ``attempts`` and ``abandoned_cost`` are settled, by the run's writer
        just before the record is appended. Every attempt began with :meth:`begin_episode`, so the
        earlier ones are the episode's ``*.interrupted-N`` files (a worker, JVM or parent killed, an
        engine crash retried in-process, an infrastructure failure played again): ``attempts`` is
        their number plus one, and ``abandoned_cost`` every charge on their turn lines plus the
        charges no line holds that are known, marked ``abandoned`` in ``unrecorded_charges`` (the
        turn an engine crash cut short, and what a retired failure's record carried, whose own
        charges are carried over here). Charges of a process killed before it wrote them are lost
        with it: nothing was written.
        """
        unrecorded = list(record.unrecorded_charges)
        retired = self._last_retired(record.episode)
        if retired is not None:
            unrecorded += [{**c, "abandoned": True} for c in retired.unrecorded_charges]
        earlier = self.interrupted_files(record.episode)
        version = self.format_version
        on_lines = sum(
            float(c["dollars"])
            for path in earlier
            for line in read_lines(path)
            for c in TurnRecord.from_line(line, version, str(path)).charges
        )
        marked = sum(float(c["dollars"]) for c in unrecorded if c.get("abandoned"))
        return dataclasses.replace(
            record,
            attempts=len(earlier) + 1,
            abandoned_cost=on_lines + marked,
            unrecorded_charges=unrecorded,
        )

    def record_turn(self, path: Path, record: TurnRecord) -> None:
        append_line(path, record.to_line())

    def record_episode(self, record: EpisodeRecord) -> None:
        append_line(self.episodes_path, record.to_line(), sync=True)
