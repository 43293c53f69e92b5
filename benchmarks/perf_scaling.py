"""Scale-out throughput: episodes/s of the local pool and the Ray executor, and Optuna trials/s per storage.

Episodes: the same batch (a fixed single-model router over the quick train split,
real ScienceWorld engine, simulated pool) on the local worker pool at 1 and 2
workers and on the Ray executor at 1 and 2 actors (one local Ray instance with 2
CPUs on loopback, started once). Each executor first plays a warm-up batch on
another split, so its processes, JVMs and actors are up; the clock covers the
measured batch only, and start-up is printed apart. The four runs' episode records
are compared (they must be identical: the executor changes where, not what).

Tuning: parallel-trial throughput of Optuna on PostgreSQL and SQLite at 1 and 2
workers, measured by ``perf_tuning_storage.measure`` (see that script).

    eval "$(bash .ci/services.sh)"      # a PostgreSQL server; its URL in HARNESS_TEST_POSTGRES_URL
    .venv/bin/python benchmarks/perf_scaling.py [--max-turns 20] [--trials 40] [--postgres URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import perf_tuning_storage  # noqa: E402 - the sibling script, importable once its directory is on the path

SIZES = (1, 2)
EXECUTORS = ("local", "ray")


def run_config(split: str, task_filter: str | None, max_turns: int, executor: str):
    from harness.config import Limits, RouterSpec, RunConfig

    return RunConfig(
        router=RouterSpec("single", {"model": "gpt-oss-120b"}),
        split=split,
        quick=True,
        task_filter=task_filter,
        limits=Limits(max_turns=max_turns),
        workers=max(SIZES),
        executor=executor,
    )


def measure_episodes(kind: str, n: int, scratch: Path, max_turns: int) -> tuple[float, float, int, list]:
    """(episodes/s of the measured batch, start-up seconds, episodes, records without durations)."""
    from harness.batch import execute
    from harness.executors import open_executor
    from harness.trajectory import RunStore

    began = time.perf_counter()
    with open_executor(kind, n) as executor:
        # Warm-up: one episode per worker or actor, so every process, JVM and actor is up.
        execute(run_config("val", "find", 5, kind), scratch / f"warm-{kind}-{n}", workers=executor)
        started = time.perf_counter() - began
        out = scratch / f"{kind}-{n}"
        clock = time.perf_counter()
        execute(run_config("train", None, max_turns, kind), out, workers=executor)
        elapsed = time.perf_counter() - clock
    records = sorted(
        (dataclasses.replace(r, duration_s=None) for r in RunStore(out).episodes()),
        key=lambda r: r.episode,
    )
    return len(records) / elapsed, started, len(records), records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-turns", type=int, default=20, help="turn limit of the measured episodes")
    parser.add_argument("--trials", type=int, default=40, help="complete Optuna trials per study")
    parser.add_argument("--objective-ms", type=float, default=20.0, help="sleep per Optuna trial")
    perf_tuning_storage.add_postgres_option(parser)
    args = perf_tuning_storage.parse_with_postgres(parser)

    import ray

    from harness.batch import quiet_py4j

    quiet_py4j()
    ray.init(
        address="local",
        num_cpus=max(SIZES),
        include_dashboard=False,
        logging_level=logging.WARNING,
        _node_ip_address="127.0.0.1",
    )
    scratch = Path(tempfile.mkdtemp(prefix="perf-scaling-"))
    rate: dict[tuple[str, int], float] = {}
    runs: dict[tuple[str, int], list] = {}
    try:
        print(f"episodes: single:gpt-oss-120b on the quick train split, max {args.max_turns} turns")
        print(f"{'executor':<9} {'size':>4} {'episodes':>8} {'start s':>8} {'episodes/s':>11}")
        for kind in EXECUTORS:
            for n in SIZES:
                rate[kind, n], started, count, runs[kind, n] = measure_episodes(
                    kind, n, scratch, args.max_turns
                )
                print(f"{kind:<9} {n:>4} {count:>8} {started:>8.1f} {rate[kind, n]:>11.2f}")
    finally:
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    same = all(records == runs["local", 1] for records in runs.values())
    print(f"records identical across executors and sizes: {'yes' if same else 'NO'}")
    print("ratios")
    for kind in EXECUTORS:
        print(f"  {kind:<6} 2 / 1: {rate[kind, 2] / rate[kind, 1]:.2f}x")
    for n in SIZES:
        print(f"  ray / local at {n}: {rate['ray', n] / rate['local', n]:.2f}x")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_args = argparse.Namespace(
        trials=args.trials, objective_ms=args.objective_ms, postgres=args.postgres
    )
    trials: dict[tuple[str, int], float] = {}
    print(f"\nOptuna: {args.trials} complete trials per study, objective {args.objective_ms:g} ms")
    print(f"{'storage':<11} {'workers':>7} {'trials':>6} {'trials/s':>9}")
    for storage in ("sqlite", "postgresql"):
        for n in SIZES:
            trials[storage, n], complete = perf_tuning_storage.measure(storage, n, storage_args)
            print(f"{storage:<11} {n:>7} {complete:>6} {trials[storage, n]:>9.1f}")
    print("ratios")
    for storage in ("sqlite", "postgresql"):
        print(f"  {storage:<11} 2 / 1 workers: {trials[storage, 2] / trials[storage, 1]:.2f}x")
    for n in SIZES:
        print(f"  postgresql / sqlite at {n}: {trials['postgresql', n] / trials['sqlite', n]:.2f}x")
    if not same:
        raise SystemExit("the executors gave different episode records")


if __name__ == "__main__":
    main()
