"""The trajectory store: one directory per run, JSON Lines throughout.

Layout (readable with ``pandas.read_json(path, lines=True)``)::

    RUN/config.json            the run's config snapshot (no secrets), written once
    RUN/episodes.jsonl         one line per finished episode
    RUN/turns/<episode>.jsonl  one line per turn, appended as the turn happens

Each line is written with a single ``write`` on an ``O_APPEND`` descriptor, so a
killed process leaves at worst one torn final line, which readers drop with a
warning. An episode counts as finished only once its line is in
``episodes.jsonl``; rerunning a run skips those and restarts the others, keeping
the turns of an interrupted attempt beside the new ones as ``*.interrupted-N.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, TrajectoryError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
EPISODES_FILE = "episodes.jsonl"
TURNS_DIR = "turns"
# 2: turn lines carry the messages they appended (tool calls and tool results included), episode
# lines the judge's cost apart. Version 1 directories are refused by name, never misread.
FORMAT_VERSION = 2


def append_line(path: Path, record: dict[str, Any], sync: bool = False) -> None:
    data = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}")
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


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
                log.warning("dropping torn last line %d of %s", number, path)
                continue
            raise TrajectoryError(
                f"corrupt trajectory file {path}: line {number} is not valid JSON"
            ) from None
    return records


def check_format_version(root: Path, config: dict[str, Any]) -> None:
    found = config.get("format_version", 1)
    if found != FORMAT_VERSION:
        raise TrajectoryError(
            f"run directory {root} has trajectory format version {found}; this harness reads version "
            f"{FORMAT_VERSION} (convert it: harness import run {root} NEW_DIR)"
        )


def episode_file_name(key: str) -> str:
    return key.replace("/", "__") + ".jsonl"


class RunStore:
    """The files of one run; resumable and safe to append to from one writer per file."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def episodes_path(self) -> Path:
        return self.root / EPISODES_FILE

    @property
    def turns_dir(self) -> Path:
        return self.root / TURNS_DIR

    def open(self, config: dict[str, Any]) -> None:
        """Create the run directory, or check that an existing one holds the same run."""
        try:
            self.turns_dir.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"output directory {self.root} is not writable: {exc.strerror}") from None
        snapshot = {"format_version": FORMAT_VERSION, **config}
        path = self.root / CONFIG_FILE
        if path.exists():
            existing = json.loads(path.read_text())
            check_format_version(self.root, existing)
            differing = sorted(k for k in set(existing) | set(snapshot) if existing.get(k) != snapshot.get(k))
            if differing:
                raise ConfigError(
                    f"{self.root} holds a run with a different config (field {differing[0]!r} differs); "
                    "use another output directory"
                )
            return
        write_json_atomic(path, json.loads(json.dumps(snapshot, default=str)))

    def config(self) -> dict[str, Any]:
        """The run's config snapshot; a directory in another trajectory format is refused by name."""
        path = self.root / CONFIG_FILE
        if not path.exists():
            raise TrajectoryError(f"{self.root} is not a run directory (no {CONFIG_FILE})")
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise TrajectoryError(f"corrupt run config {path}") from None
        check_format_version(self.root, config)
        return config

    def episodes(self) -> list[dict[str, Any]]:
        if not self.episodes_path.exists():
            return []
        return read_lines(self.episodes_path)

    def finished_keys(self) -> set[str]:
        return {e["episode"] for e in self.episodes()}

    def turns(self, key: str) -> list[dict[str, Any]]:
        return read_lines(self.turns_dir / episode_file_name(key))

    def begin_episode(self, key: str) -> Path:
        """A fresh turn file for ``key``; an interrupted attempt's file is kept aside."""
        path = self.turns_dir / episode_file_name(key)
        if path.exists():
            n = 1
            while (aside := path.with_name(f"{path.stem}.interrupted-{n}.jsonl")).exists():
                n += 1
            os.replace(path, aside)
        return path

    def record_turn(self, path: Path, record: dict[str, Any]) -> None:
        append_line(path, record)

    def record_episode(self, record: dict[str, Any]) -> None:
        append_line(self.episodes_path, record, sync=True)
