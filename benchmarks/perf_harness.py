"""Harness overhead per turn against ScienceWorld's own step time, episodes/s with 1 and 2 workers, and
what a learned router adds to an episode.

Usage: python benchmarks/perf_harness.py [--episodes N] [--embedders minilm minilm-static] [--skip-throughput]

Part 1 plays episodes in this process with timing proxies around the environment,
the backends and the router, so every second of an episode is attributed to the
engine (reset, step), the simulated models, the router, or the loop itself
(prompting, parsing, ledger, trajectory writes). Part 2 runs the same batch with
one and with two worker processes and prints the throughput ratio. Part 3 plays
the same tasks in this process with a fixed router (random over the pool) and
with each learned router family trained on each embedder's vectors (a short fit
on a synthetic log: the predictor's size, not its quality, sets the cost), each
with a fresh embedding cache, and prints the wall time per episode and per turn
as a ratio to the fixed router's (the performance issue's goal: at most 1.5x).
Per turn is the fairer ratio: a learned router that picks other models plays
episodes of another length.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from harness.agent import run_episode
from harness.backends import build_backends
from harness.batch import Workers, prepare, run_batch
from harness.benchmarks import get_benchmark
from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.config import RouterSpec, RunConfig
from harness.pool import load_pool
from harness.trajectory import RunStore
from routers import make_router
from routers.learned.encoder_spec import EMBEDDERS, REFERENCE_EMBEDDER
from routers.learned.train import TrainOptions, train_router

LEARNED = ("mtrouter", "lgbm", "ridge", "cluster")
EPISODE_GOAL = 1.5

TIMES: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


class Timed:
    """Delegates to ``inner`` and adds the wall time of the named methods to TIMES[label.method]."""

    def __init__(self, inner, label: str, methods: tuple[str, ...]):
        self._inner, self._label, self._methods = inner, label, methods

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in self._methods:
            return attr

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                TIMES[f"{self._label}.{name}"] += time.perf_counter() - start
                COUNTS[f"{self._label}.{name}"] += 1

        return timed


def overhead(episodes: int, out: Path) -> None:
    pool = load_pool("paper6")
    benchmark = get_benchmark("scienceworld")
    split = benchmark.load_split()
    tasks = [t for name in ("test_id", "test_ood") for t in split.tasks(name, quick=True)]
    tasks = (tasks * (episodes // len(tasks) + 1))[:episodes]
    env = Timed(benchmark.make_environment(), "env", ("reset", "step"))
    backends = {n: Timed(b, "model", ("complete",)) for n, b in build_backends(pool, "simulated").items()}
    router = Timed(make_router("random", {}, pool.names), "router", ("route",))
    store = RunStore(out)
    store.open({})
    started = time.perf_counter()
    turns = 0
    for i, task in enumerate(tasks):
        turns += run_episode(benchmark, env, backends, router, task, i, benchmark.limits, store).turns
    total = time.perf_counter() - started
    env._inner.close()
    engine = TIMES["env.reset"] + TIMES["env.step"]
    loop = total - engine - TIMES["model.complete"] - TIMES["router.route"]
    step_ms = 1000 * TIMES["env.step"] / max(1, COUNTS["env.step"])
    print(f"Part 1: {len(tasks)} episodes, {turns} turns, {COUNTS['env.step']} engine steps, {total:.1f} s")
    print(f"{'component':<28}{'ms/turn':>10}{'x step time':>14}")
    for name, seconds in [
        ("ScienceWorld step", TIMES["env.step"]),
        ("ScienceWorld reset", TIMES["env.reset"]),
        ("simulated models", TIMES["model.complete"]),
        ("router (random)", TIMES["router.route"]),
        ("loop, ledger, trajectory", loop),
    ]:
        per_turn = 1000 * seconds / turns
        print(f"{name:<28}{per_turn:>10.2f}{per_turn / step_ms:>14.2f}")
    harness_ms = 1000 * (loop + TIMES["router.route"]) / turns
    print(
        f"harness overhead per turn (loop + router): {harness_ms:.2f} ms = "
        f"{harness_ms / step_ms:.2f} x the mean engine step ({step_ms:.1f} ms)"
    )


def throughput(out: Path) -> None:
    """Episodes/s over test_id with 1 and 2 workers, measured after the workers are warm
    (imports done, JVMs started, on a quick val batch), and also including that start-up."""
    warm_rates, cold_rates = {}, {}
    for n in (1, 2):
        started = time.perf_counter()
        with Workers(n) as workers:
            warm_up = prepare(
                RunConfig(router=RouterSpec("random"), split="val", quick=True, workers=n), out / f"warm{n}"
            )
            run_batch(warm_up, workers=workers)
            timed = prepare(
                RunConfig(router=RouterSpec("random"), split="test_id", workers=n, seed=7), out / f"w{n}"
            )
            t0 = time.perf_counter()
            records = run_batch(timed, workers=workers)
            warm_rates[n] = len(records) / (time.perf_counter() - t0)
        cold_rates[n] = (len(records) + len(warm_up.tasks)) / (time.perf_counter() - started)
        print(
            f"{n} worker(s): {len(records)} episodes, {warm_rates[n]:.2f} episodes/s warm, "
            f"{cold_rates[n]:.2f} episodes/s including start-up"
        )
    print(
        f"2 workers / 1 worker: {warm_rates[2] / warm_rates[1]:.2f}x warm, {cold_rates[2] / cold_rates[1]:.2f}x with start-up"
    )


def play(router, tasks: list, out: Path) -> tuple[float, int]:
    """(wall seconds, turns) of the tasks played in this process with the router, engine started before."""
    benchmark = get_benchmark("scienceworld")
    pool = load_pool("paper6")
    backends = build_backends(pool, "simulated")
    env = benchmark.make_environment()
    env.reset(tasks[0])  # the JVM start is not the router's cost
    store = RunStore(out)
    store.open({})
    started = time.perf_counter()
    turns = sum(
        run_episode(benchmark, env, backends, router, task, i, benchmark.limits, store).turns
        for i, task in enumerate(tasks)
    )
    elapsed = time.perf_counter() - started
    env.close()
    return elapsed, turns


def learned_overhead(episodes: int, out: Path, embedders: list[str]) -> None:
    pool = load_pool("paper6")
    cards, names = list(pool.cards), pool.names
    split = get_benchmark("scienceworld").load_split()
    tasks = [t for name in ("test_id", "test_ood") for t in split.tasks(name, quick=True)]
    tasks = (tasks * (episodes // len(tasks) + 1))[:episodes]
    log = write_synthetic_run(out / "log", cards, {"boil": names[0], "grow-plant": names[1]})
    seconds, turns = play(make_router("random", {}, names), tasks, out / "fixed")
    fixed_episode, fixed_turn = seconds / len(tasks), seconds / turns
    print(
        f"Part 3: {len(tasks)} episodes per router; fixed (random): {1000 * fixed_episode:.0f} ms/episode, "
        f"{1000 * fixed_turn:.1f} ms/turn"
    )
    print(f"{'embedder':<18}{'router':<10}{'ms/episode':>12}{'x fixed':>9}{'ms/turn':>10}{'x fixed':>9}")
    worst: dict[str, float] = {}
    for embedder in embedders:
        for kind in LEARNED:
            ckpt = out / f"{kind}-{embedder}"
            train_router(
                kind,
                [log],
                ckpt,
                TrainOptions(embedder=embedder, cache_dir=str(out / f"train-{embedder}")),
                pool=cards,
            )
            params = {
                "checkpoint": str(ckpt),
                "lam": 0.05,
                "cache_dir": str(out / f"cache-{kind}-{embedder}"),
            }
            seconds, n = play(make_router(kind, params, names), tasks, out / f"play-{kind}-{embedder}")
            per_episode, per_turn = seconds / len(tasks) / fixed_episode, seconds / n / fixed_turn
            worst[embedder] = max(worst.get(embedder, 0.0), per_turn)
            print(
                f"{embedder:<18}{kind:<10}{1000 * seconds / len(tasks):>12.0f}{per_episode:>9.2f}"
                f"{1000 * seconds / n:>10.1f}{per_turn:>9.2f}"
            )
    for embedder, ratio in worst.items():
        verdict = "meets" if ratio <= EPISODE_GOAL else "misses"
        print(
            f"{embedder}: worst learned/fixed time per turn {ratio:.2f}x ({verdict} the {EPISODE_GOAL}x goal)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=25)
    parser.add_argument(
        "--embedders", nargs="*", default=[REFERENCE_EMBEDDER, "minilm-static"], choices=list(EMBEDDERS)
    )
    parser.add_argument("--skip-throughput", action="store_true", help="skip parts 1 and 2")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="perf-harness-"))
    try:
        if not args.skip_throughput:
            overhead(args.episodes, out / "overhead")
            throughput(out)
        learned_overhead(args.episodes, out / "learned", args.embedders)
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
