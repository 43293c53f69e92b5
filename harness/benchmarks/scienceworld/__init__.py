"""ScienceWorld: multi-turn science experiments in a text world, scored by the engine (-100..100).

The folder holds the engine wrapper (``engine.py``: deterministic JVM, fast
stepping), the gold-path oracle for simulated models (``oracle.py``, paths
cached by ``gold.py``), the prompt and reply format (``prompt.py``) and the
reference split (``split.py``, data in ``benchmarks/splits/``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from harness.benchmarks.base import Benchmark
from harness.benchmarks.scienceworld.prompt import ScienceWorldFormat
from harness.config import BENCHMARKS_DIR, Limits
from harness.errors import ConfigError, TrajectoryError
from harness.records import TurnRecord
from harness.types import TaskInstance

GOLD_PATHS = BENCHMARKS_DIR / "data" / "scienceworld_gold.jsonl.gz"

# Observations that mean the turn's action did not work: the engine's parser
# rejecting it, the agent's reply not parsing, or the engine asking to disambiguate.
ERROR_RULES: tuple[re.Pattern[str], ...] = (
    re.compile(r"No known action matches", re.IGNORECASE),
    re.compile(r"could not be parsed", re.IGNORECASE),
    re.compile(r"Ambiguous request", re.IGNORECASE),
)


class ScienceWorld(Benchmark):
    name = "scienceworld"
    score_range = (-100.0, 100.0)
    reference_episode_seconds = 0.27  # `make benchmark`'s quick episodes, 2026-12-06
    limits = Limits(max_turns=50, budget_dollars=2.0)  # the reference's
    split_file = BENCHMARKS_DIR / "splits" / "scienceworld-v1.json"

    def __init__(self) -> None:
        self.agent_format = ScienceWorldFormat()

    def make_environment(self):
        from harness.benchmarks.scienceworld.engine import ScienceWorldEnv
        from harness.benchmarks.scienceworld.gold import load_gold_paths

        return ScienceWorldEnv(gold=load_gold_paths(GOLD_PATHS) if GOLD_PATHS.exists() else None)

    def fingerprint(self) -> dict[str, Any]:
        from harness.benchmarks.scienceworld.engine import engine_fingerprint

        return engine_fingerprint()

    def oracle_fingerprint(self) -> dict[str, Any]:
        """The shipped gold-path cache's digest: which variations have an oracle, and which path."""
        return {"gold_sha256": _gold_digest()}

    def check_simulated(self, tasks: list[TaskInstance]) -> None:
        """Simulated models step along a variation's gold path, which the shipped cache holds only for the
        variations its splits use: a split file with others needs their paths generated first."""
        missing = sorted({(t.task, t.variation) for t in tasks} - set(gold_paths()))
        if missing:
            task, variation = missing[0]
            raise ConfigError(
                f"simulated models need a gold path per variation; {len(missing)} variation(s) of these tasks"
                f" have none in {GOLD_PATHS.name} (first: {task}/{variation}): generate them with"
                " `python -m harness.benchmarks.scienceworld.gold SPLIT_FILE`"
            )

    def reference_item(self, info: Mapping[str, Any]) -> tuple[str, int] | None:
        """The reference logs a ScienceWorld episode's task type and variation as ``task_name``/``variation_idx``."""
        if info.get("benchmark") not in (None, self.name) or "task_name" not in info:
            return None
        if not isinstance(info.get("variation_idx"), int):
            raise TrajectoryError("no integer info.variation_idx beside info.task_name")
        return str(info["task_name"]), info["variation_idx"]

    def is_error_turn(self, turn: TurnRecord) -> bool:
        observation = turn.observation or ""
        return any(rule.search(observation) for rule in ERROR_RULES)

    def critical_turns(self, task: TaskInstance, turns: list[TurnRecord]) -> frozenset[int] | None:
        """Turns at which the gold path's next action was a ``focus on`` (privileged: diagnostics only).

        The gold-path oracle is advanced over the logged actions exactly as the environment advances it
        (any executed action that equals the next gold action moves it on).
        """
        from harness.benchmarks.scienceworld.oracle import GoldOracle

        gold = gold_paths().get((task.task, task.variation))
        if gold is None:
            return None
        oracle = GoldOracle(gold, visible_objects=list, topic="")
        critical = set()
        for record in sorted(turns, key=lambda r: r.turn):
            if oracle.is_critical():
                critical.add(record.turn)
            if record.action:
                oracle.observe(record.action)
        return frozenset(critical)


@functools.cache
def _gold_digest() -> str | None:
    import hashlib

    return hashlib.sha256(GOLD_PATHS.read_bytes()).hexdigest()[:16] if GOLD_PATHS.exists() else None


@functools.cache
def gold_paths() -> dict[tuple[str, int], list[str]]:
    from harness.benchmarks.scienceworld.gold import load_gold_paths

    return load_gold_paths(GOLD_PATHS) if GOLD_PATHS.exists() else {}
