"""Stock ``scienceworld.ScienceWorldEnv`` vs our ``ScienceWorldEnv`` on the same tasks and actions.

Replays the cached gold paths of a few tasks in both environments (one warm-up
pass each, then a timed pass) and prints ms per step, ms per valid-action list,
JVM start and load+reset times and the resident memory of each JVM.

    .venv/bin/python benchmarks/perf_env_step.py [--tasks boil:0,find-animal:0] [--valid-every 3]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import scienceworld

from harness.benchmarks.scienceworld.engine import ScienceWorldEnv, engine_fingerprint
from harness.benchmarks.scienceworld.gold import load_gold_paths
from harness.types import TaskInstance

DEFAULT_TASKS = "boil:0,find-animal:0,power-component:0,chemistry-mix:0,grow-plant:0"


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _stock_env() -> scienceworld.ScienceWorldEnv:
    return scienceworld.ScienceWorldEnv(envStepLimit=10_000)


def _replay(
    reset: Callable[[], object],
    step: Callable[[str], object],
    valid: Callable[[], object],
    actions: list[str],
    valid_every: int,
) -> tuple[list[float], list[float], float]:
    reset_seconds = _timed(reset)
    step_seconds, valid_seconds = [], []
    for index, action in enumerate(actions):
        step_seconds.append(_timed(lambda a=action: step(a)))
        if valid_every and index % valid_every == 0:
            valid_seconds.append(_timed(valid))
    return step_seconds, valid_seconds, reset_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated task:variation list")
    parser.add_argument("--valid-every", type=int, default=3, help="time the valid-action list every N steps")
    args = parser.parse_args()
    keys = [(name, int(var)) for name, var in (item.split(":") for item in args.tasks.split(","))]
    gold = load_gold_paths()
    episodes = [(task, var, gold[(task, var)]) for task, var in keys]

    starts: dict[str, list[float]] = {"stock": [], "ours": []}
    for _ in range(2):  # interleaved, best of two: the first JVM of a run also pays for a cold disk cache
        for name, make in (("stock", _stock_env), ("ours", ScienceWorldEnv)):
            started = time.perf_counter()
            env = make()
            starts[name].append(time.perf_counter() - started)
            env.close()
    stock, ours = _stock_env(), ScienceWorldEnv()

    def stock_reset(task: str, var: int) -> None:
        stock.load(task, var)
        stock.reset()

    rows: dict[str, dict[str, list[float]]] = {"stock": {}, "ours": {}}
    for timed_pass in (False, True):  # first pass warms up both JITs
        for task, var, actions in episodes:
            instance = TaskInstance("scienceworld", task, var, "perf")
            results = {
                "stock": _replay(
                    functools.partial(stock_reset, task, var),
                    stock.step,
                    stock.get_valid_action_object_combinations,
                    actions,
                    args.valid_every,
                ),
                "ours": _replay(
                    functools.partial(ours.reset, instance),
                    ours.step,
                    ours.valid_actions,
                    actions,
                    args.valid_every,
                ),
            }
            if timed_pass:
                for name, (steps, valids, reset_seconds) in results.items():
                    row = rows[name]
                    row.setdefault("step", []).extend(steps)
                    row.setdefault("valid", []).extend(valids)
                    row.setdefault("reset", []).append(reset_seconds)

    def ms(values: list[float]) -> str:
        return f"{1000 * statistics.mean(values):9.1f}"

    stock_rss, ours_rss = _rss_mib(stock._gateway.java_process.pid), _rss_mib(ours.jvm_pid)
    n_steps = len(rows["ours"]["step"])
    print(f"engine: {engine_fingerprint()}")
    print(f"tasks: {args.tasks}  ({n_steps} gold steps timed after one warm-up pass)\n")
    print(f"{'measure':34}{'stock':>10}{'ours':>10}{'stock/ours':>12}")
    for label, key in (
        ("step, ms (mean)", "step"),
        ("valid actions, ms (mean)", "valid"),
        ("load + reset, ms (mean)", "reset"),
    ):
        s, o = statistics.mean(rows["stock"][key]), statistics.mean(rows["ours"][key])
        print(f"{label:34}{ms(rows['stock'][key]):>10}{ms(rows['ours'][key]):>10}{s / o:11.1f}x")
    s_med, o_med = statistics.median(rows["stock"]["step"]), statistics.median(rows["ours"]["step"])
    print(f"{'step, ms (median)':34}{1000 * s_med:10.1f}{1000 * o_med:10.1f}{s_med / o_med:11.1f}x")
    print(f"{'JVM start, s (best of 2)':34}{min(starts['stock']):10.2f}{min(starts['ours']):10.2f}")
    print(f"{'JVM RSS after run, MiB':34}{stock_rss:10.0f}{ours_rss:10.0f}")
    stock.close()
    ours.close()


if __name__ == "__main__":
    main()
