"""Replay throughput and what the engine prefix cache saves, on a benchmark results directory.

1. Offline evaluation throughput, in logged turns per second: every learned checkpoint of the
   benchmark at several λ points, and the exploration routers, evaluated on the exploration
   data (``data/``) with all six estimators and 1000 bootstrap resamples. History vectors are
   computed once (from the embedding cache on disk) and kept in memory for every evaluation, so
   the rate is that of replay itself, the "embeddings cached" case. The baselines' FQE is timed
   with its bootstrap refits (the default) and held fixed.
2. The prefix cache on a repeated batch: the benchmark's fixed routers rerun on their split's
   tasks, once on the plain engine and once through the cache seeded with the logged runs, on
   one JVM each, in this process. Printed: the share of engine steps the cache saves, engine
   resets saved, the wall-time ratio, and whether every episode record and turn line is the same.
   Then a cold-cache pass (no logs): what routers sharing prefixes among themselves save.

Run: ``PYTHONPATH=$PWD .venv/bin/python benchmarks/perf_replay.py results/quick [--split test_id]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from harness.agent import run_episode
from harness.backends import build_backends
from harness.benchmarks import get_benchmark
from harness.config import RouterSpec, RunConfig, from_dict, resolve
from harness.layout import ResultsLayout
from harness.pool import load_pool
from harness.replay.agreement import operating_points
from harness.replay.evaluate import evaluate_router, load_logs, logging_episodes
from harness.replay.ope import OPEConfig
from harness.replay.policies import StateVectors
from harness.replay.prefix_cache import PrefixCacheEnv
from harness.trajectory import RunStore
from routers import make_router

LAMBDAS = (0.0, 0.1, 0.25, 0.5, 1.0)


def throughput(bench: Path) -> None:
    runs = ResultsLayout(bench).data_runs()
    data = load_logs(runs)
    config = RunStore(runs[0]).config()["run"]
    cards = load_pool(config["pool"]).cards
    vectors = StateVectors()
    logged = logging_episodes(data, cards, "auto", vectors)
    models = sorted(p for p in (bench / "models").iterdir() if (p / "checkpoint.json").exists())
    specs = [
        RouterSpec(json.loads((m / "checkpoint.json").read_text())["kind"], {"checkpoint": str(m), "lam": lam,
                                                                           "cache_dir": str(bench / "embeddings")})
        for m in models
        for lam in LAMBDAS
    ]  # fmt: skip
    baselines = [
        RouterSpec("random"),
        RouterSpec("sticky-random", {"switch_prob": 0.03}),
        RouterSpec("heuristic"),
    ]
    started = time.perf_counter()
    evaluate_router(specs[0], data, cards, vectors=vectors, logged=logged)  # encodes the states once
    cold = time.perf_counter() - started
    print(
        f"replay: {len(data.episodes)} logged episodes, {data.turns} turns, all six estimators, 1000 resamples"
    )
    print(f"  first evaluation (history vectors from the disk cache): {cold:.2f} s")
    refit = OPEConfig().refit_resamples
    for label, group, config in (
        ("learned points, own value model", specs, OPEConfig()),
        (f"baselines, FQE value model refit on {refit} resamples", baselines, OPEConfig()),
        (
            "baselines, FQE value model held fixed (refit_resamples 0)",
            baselines,
            OPEConfig(refit_resamples=0),
        ),
    ):
        started = time.perf_counter()
        for spec in group:
            evaluate_router(spec, data, cards, config=config, vectors=vectors, logged=logged)
        seconds = time.perf_counter() - started
        turns = data.turns * len(group)
        print(f"  {len(group)} {label}: {turns} turns in {seconds:.2f} s = {turns / seconds:,.0f} turns/s")


def fixed_configs(bench: Path, split: str) -> list[tuple[RunConfig, Path]]:
    points = [p for p in operating_points(bench) if p.split == split and not p.learned]
    out = []
    for point in points:
        run = json.loads((point.path / "config.json").read_text())["run"]
        out.append((resolve(from_dict(RunConfig, run, str(point.path))), point.path))
    return out


def batch(env, configs: list[tuple[RunConfig, Path]], work: Path) -> tuple[float, list]:
    started = time.perf_counter()
    outputs = []
    for config, logged in configs:
        benchmark = get_benchmark(config.benchmark)
        pool = load_pool(config.pool)
        backends = build_backends(pool, config.backend)
        split = benchmark.load_split(config.split_file)
        out = work / logged.name
        store = RunStore(out)
        store.open({"run": {"router": config.router.name}})
        for task in split.tasks(config.split, quick=config.quick, task_filter=config.task_filter):
            router = make_router(config.router.name, config.router.params, pool.names)
            assert config.limits is not None
            result = run_episode(benchmark, env, backends, router, task, config.seed, config.limits, store)
            record = result.record(config.router.label)
            record.pop("duration_s")
            outputs.append((record, store.turns(task.key)))
    return time.perf_counter() - started, outputs


def prefix_cache(bench: Path, split: str) -> None:
    configs = fixed_configs(bench, split)
    if not configs:
        print(f"prefix cache: no fixed routers under {bench}/runs/{split}")
        return
    benchmark = get_benchmark(configs[0][0].benchmark)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = benchmark.make_environment()
        try:
            plain_s, plain = batch(env, configs, work / "plain")
            cached_env = PrefixCacheEnv(env)
            cached_env.cache.add_logged(load_logs([path for _, path in configs]).episodes)
            cached_s, cached = batch(cached_env, configs, work / "cached")
            cold_env = PrefixCacheEnv(env)
            cold_s, cold = batch(cold_env, configs, work / "cold")
        finally:
            env.close()
    stats, cold_stats = cached_env.stats, cold_env.stats
    episodes = len(plain)
    print(f"prefix cache: {len(configs)} fixed routers x their {split} tasks = {episodes} episodes, one JVM")
    print(
        f"  seeded with the logged runs: engine steps {stats.engine_steps} of {stats.requested_steps} asked "
        f"(saved {stats.saved_fraction:.1%}; {stats.replayed_steps} of them replays for the oracle), engine resets "
        f"{stats.engine_resets} for {episodes} episodes, mismatches {stats.mismatches}"
    )
    print(
        f"  wall time plain {plain_s:.1f} s, cached {cached_s:.1f} s: ratio {cached_s / plain_s:.3f} "
        f"({plain_s / cached_s:.1f}x faster); identical records and turn lines: {plain == cached}"
    )
    print(
        f"  cold cache (prefixes shared among the routers only): saved {cold_stats.saved_fraction:.1%} of "
        f"{cold_stats.requested_steps} steps, wall ratio {cold_s / plain_s:.3f}, identical: {plain == cold}, "
        f"mismatches {cold_stats.mismatches}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path, help="a benchmark results directory, e.g. results/quick")
    parser.add_argument("--split", default="test_id")
    parser.add_argument("--skip-cache", action="store_true", help="only the replay throughput")
    args = parser.parse_args()
    throughput(args.bench)
    if not args.skip_cache:
        prefix_cache(args.bench, args.split)


if __name__ == "__main__":
    main()
