"""Task splits as versioned data files: which task instances are train, val, test_id and test_ood.

Every benchmark stores its split in a JSON file (its plug-in names the default;
a run can point at another with ``split_file``) so that every run reads the same
instances instead of recomputing them. The file's shape::

    {"version": "...", "benchmark": "...", "topics": {task_type: topic},
     "task_types": {task_type: {"engine_name": ..., ...}},     # engine_name optional
     "splits": {split: {task_type: [variation, ...]}},
     "quick": {split: {task_type: [variation, ...]}},
     "strata": {split: {task_type: {"weight": w, "plays": k}}}}   # optional

A split listed under ``strata`` is a stratified sample: its score is the ``weight``-weighted
mean over task types of each type's mean, and each variation of a type is played ``plays``
times as often as the run's ``repeats`` ask (a type with few variations gets more plays).
Without ``strata`` a split's score is the plain mean over its variations.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError, UnknownNameError
from harness.types import TaskInstance

ANY_SPLIT = "any"  # every split's tasks together


@dataclass(frozen=True)
class Split:
    """A loaded split file: ``assignments[split][task_type]`` is a sorted list of variations."""

    version: str
    benchmark: str
    assignments: dict[str, dict[str, list[int]]]
    quick: dict[str, dict[str, list[int]]]
    topics: dict[str, str]
    engine_names: dict[str, str]
    strata: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def split_names(self) -> list[str]:
        return list(self.assignments)

    def weights(self, split_name: str) -> dict[str, float] | None:
        """Task type -> its weight in ``split_name``'s score (they sum to 1); None: an unweighted split."""
        stratum = self.strata.get(split_name)
        return {task: float(s["weight"]) for task, s in stratum.items()} if stratum else None

    def plays(self, split_name: str, task_type: str) -> int:
        """How many times a variation of ``task_type`` is played per repeat the run asks for."""
        return int(self.strata.get(split_name, {}).get(task_type, {}).get("plays", 1))

    @property
    def task_types(self) -> list[str]:
        return sorted({task for per_task in self.assignments.values() for task in per_task})

    def tasks(
        self, split_name: str, quick: bool = False, task_filter: str | None = None, repeats: int = 1
    ) -> list[TaskInstance]:
        """The split's task instances, each variation ``repeats`` times (times its type's ``plays``):
        every variation's first play, then every second play, and so on, so an interrupted run
        holds whole repeats. Split ``any`` is every split's variations together (``harness episode``)."""
        chosen = self.quick if quick else self.assignments
        if split_name == ANY_SPLIT:
            per_task = {
                task: sorted({v for split in chosen.values() for v in split.get(task, [])})
                for task in {task for split in chosen.values() for task in split}
            }
        elif split_name in self.assignments:
            per_task = chosen[split_name]
        else:
            known = ", ".join([*self.assignments, ANY_SPLIT])
            raise UnknownNameError(f"unknown split {split_name!r}; known: {known}")
        if task_filter is not None:
            try:
                pattern = re.compile(task_filter)
            except re.error:
                raise UnknownNameError(f"task filter {task_filter!r} is not a regular expression") from None
            if not any(pattern.search(task) for task in self.engine_names):
                raise UnknownNameError(
                    f"no {self.benchmark} task type matches {task_filter!r} in split {self.version}"
                )
        return [
            TaskInstance(
                benchmark=self.benchmark,
                task=self.engine_names[task],
                variation=variation,
                split=split_name,
                repeat=repeat,
            )
            for repeat in range(repeats * max((self.plays(split_name, t) for t in per_task), default=1))
            for task in sorted(per_task)
            if (task_filter is None or pattern.search(task))
            and repeat < repeats * self.plays(split_name, task)
            for variation in per_task[task]
        ]


def load_split(path: Path | str, benchmark: str) -> Split:
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        split = Split(
            version=content["version"],
            benchmark=content["benchmark"],
            assignments=content["splits"],
            quick=content["quick"],
            topics=content["topics"],
            engine_names={
                task: info.get("engine_name", task) for task, info in content["task_types"].items()
            },
            strata=content.get("strata", {}),
        )
    except FileNotFoundError:
        raise ConfigError(f"split file {path} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"split file {path} is malformed: {exc!r}") from None
    if split.benchmark != benchmark:
        raise ConfigError(f"split file {path} is for benchmark {split.benchmark!r}, not {benchmark!r}")
    for name, stratum in split.strata.items():
        if set(stratum) != set(split.assignments.get(name, {})):
            raise ConfigError(f"split file {path}: the strata of {name!r} are not its task types")
        try:
            total = sum(float(s["weight"]) for s in stratum.values())
            plays = [int(s.get("plays", 1)) for s in stratum.values()]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ConfigError(f"split file {path}: each stratum of {name!r} needs a numeric weight") from None
        if abs(total - 1.0) > 1e-9 or min(plays) < 1:
            raise ConfigError(f"split file {path}: {name!r}'s weights must sum to 1 and its plays be >= 1")
    return split
