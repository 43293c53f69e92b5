"""Benchmarks' environments by name, with their task splits and engine fingerprints."""

from __future__ import annotations

from harness.config import BENCHMARKS_DIR
from harness.errors import UnknownNameError

BENCHMARKS = ("scienceworld",)
GOLD_PATHS = BENCHMARKS_DIR / "data" / "scienceworld_gold.jsonl.gz"


def _check(benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise UnknownNameError(f"unknown benchmark {benchmark!r} (available: {', '.join(BENCHMARKS)})")


def make_environment(benchmark: str):
    _check(benchmark)
    from harness.environments.gold import load_gold_paths
    from harness.environments.scienceworld import ScienceWorldEnv

    return ScienceWorldEnv(gold=load_gold_paths(GOLD_PATHS) if GOLD_PATHS.exists() else None)


def environment_fingerprint(benchmark: str) -> dict:
    _check(benchmark)
    from harness.environments.scienceworld import engine_fingerprint

    return engine_fingerprint()


def task_split(benchmark: str):
    _check(benchmark)
    from harness.environments.splits import load_split

    return load_split()
