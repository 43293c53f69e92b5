"""What the engine prefix cache saves on the batches of the quick benchmark: engine steps and wall time.

Running ``make benchmark`` twice takes about half an hour, so this plays the part of it where
prefixes repeat: the definition's fixed routers on its eval splits (eight routers over the same
tasks) and one learned family's λ sweep on val and the eval splits (the same tasks again, each
λ point sharing the first turns of the others). Each batch is played three ways, on one pair
of worker processes (JVMs started once, so start-up is not counted):

* off: no cache;
* cold: through a cache directory that started empty and holds what the cold batches before this
  one added (prefixes shared between routers and λ points only, as in one benchmark run);
* warm: the same batch again on the filled cache (a rerun, or a benchmark repeated).

The three are interleaved batch by batch, so a change in the machine's load (the cores are
shared) falls on all three alike; the wall times are still only as steady as that load.

Printed: the share of requested engine steps each cached pass saved, its hits, misses, replays and
mismatches, the wall time of each pass and their ratios, and whether every episode record (without
``duration_s``) and every turn file is the same as the uncached pass's.

Needs a trained checkpoint of the family in the results directory (``harness benchmark quick``, or
its collect and train stages). Run:
``PYTHONPATH=$PWD .venv/bin/python benchmarks/perf_prefix_cache.py results/quick [--family mtrouter]``
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

from harness.batch import Workers, execute, read_cache_counts
from harness.config import load_benchmark
from harness.pipeline import BenchmarkRun
from harness.trajectory import RunStore


def batches(run: BenchmarkRun, family: str) -> list[tuple[str, object]]:
    """(relative out dir, config) of every batch: fixed routers on the eval splits, then the λ sweep."""
    d = run.d
    out = []
    for split in d.eval_splits:
        quick = d.eval_quick.get(split, d.quick)
        out += [(f"{split}/{spec.label}", run.config(spec, split, quick)) for spec in d.fixed_routers]
    learned = next(x for x in d.learned if x.name == family)
    checkpoint = run.layout.model(family)
    if not (checkpoint / "checkpoint.json").exists():
        raise SystemExit(
            f"no trained {family} checkpoint in {checkpoint}; run the benchmark's train stage first"
        )
    tune_split = d.tune.split if d.tune is not None else "val"
    tune_quick = d.tune.quick if d.tune is not None else True
    for split, quick in [(tune_split, tune_quick)] + [
        (s, d.eval_quick.get(s, d.quick)) for s in d.eval_splits
    ]:
        for lam in learned.lambdas:
            spec = run.learned_spec(family, checkpoint, lam)
            out.append((f"{split}/{spec.label}", run.config(spec, split, quick)))
    return out


def play(plan, work: Path, workers: Workers, cache: Path) -> dict[str, float]:
    """Every batch off, cold and warm in turn; the wall seconds of each way, summed over the batches."""
    seconds = {"off": 0.0, "cold": 0.0, "warm": 0.0}
    for name, config in plan:
        for way in seconds:
            started = time.perf_counter()
            cached = config if way == "off" else replace(config, prefix_cache=str(cache))
            execute(cached, work / way / name, workers=workers)
            seconds[way] += time.perf_counter() - started
    return seconds


def records(root: Path, plan) -> list:
    out = []
    for name, _ in plan:
        store = RunStore(root / name)
        episodes = sorted(
            (replace(r, duration_s=None) for r in store.episodes()),
            key=lambda r: r.episode,
        )
        turns = {p.name: p.read_text() for p in sorted(store.turns_dir.iterdir())}
        out.append((name, episodes, turns))
    return out


def describe(label: str, counts: dict, seconds: float, off_s: float, same: bool) -> str:
    return (
        f"  {label}: saved {counts['saved_fraction']:.1%} of {counts['requested_steps']} engine steps "
        f"(hits {counts['hits']}, misses {counts['misses']}, replays {counts['replayed_steps']}, mismatches "
        f"{counts['mismatches']}, fallback episodes {counts['fallback_episodes']}; resets served "
        f"{counts['served_resets']} of {counts['served_resets'] + counts['engine_resets']}); wall {seconds:.1f} s = "
        f"{seconds / off_s:.3f} of off ({off_s / seconds:.2f}x); records identical to off: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path, help="the benchmark's results directory, e.g. results/quick")
    parser.add_argument("--definition", default=None, help="default: the results directory's name")
    parser.add_argument("--family", default="mtrouter", help="the learned family whose λ sweep is played")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    definition = load_benchmark(args.definition or args.bench.name)
    run = BenchmarkRun(definition, args.bench.parent)
    plan = batches(run, args.family)
    work = args.bench / "perf-prefix-cache"
    shutil.rmtree(work, ignore_errors=True)
    cache = work / "cache"
    with Workers(args.workers) as workers:
        seconds = play(plan, work, workers, cache)
    off_s = seconds["off"]
    off = records(work / "off", plan)
    episodes = sum(len(e) for _, e, _ in off)
    print(
        f"prefix cache on {definition.name}'s batches: {len(plan)} batches ({len(definition.fixed_routers)} fixed "
        f"routers on {', '.join(definition.eval_splits)}; {args.family} at λ in {next(x.lambdas for x in definition.learned if x.name == args.family)} "
        f"on val and those splits), {episodes} episodes, {args.workers} workers"
    )
    print(f"  off: wall {off_s:.1f} s")
    for label in ("cold", "warm"):
        counts = read_cache_counts([work / label / name for name, _ in plan])
        assert counts is not None
        print(describe(label, counts, seconds[label], off_s, records(work / label, plan) == off))


if __name__ == "__main__":
    main()
