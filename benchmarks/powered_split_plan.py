"""How large a test split must be: the planned interval of a paired difference between two routers.

Why: the verdict asks whether a router is within a margin of the best single model (the
benchmark's own unless stated: 5 ScienceWorld points, 0.05 of HLE's accuracy), and a test
split too small for that margin cannot decide it. This script sizes a test split from val
alone, never a test split: it pairs two routers' val runs episode by episode (each run
directory may be given once per seed, the seeds then counting as repeats of each variation),
splits the variance of the paired difference into a between-variation and a within-variation
(repeat) part, and prints the planned 95% half-width and minimum detectable difference for
test_id and for every powered split file of the benchmark at several repeat and seed counts.

    harness run --router single -p model=gpt-5 --split val --seed 0 --out pilot/a-s0   # and --seed 1
    harness run --router single -p model=deepseek-v3.2 --split val --seed 0 --out pilot/b-s0
    python benchmarks/powered_split_plan.py --a pilot/a-s0 pilot/a-s1 --b pilot/b-s0 pilot/b-s1

The benchmark is the runs' own (``--benchmark`` must agree with it when given).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.benchmarks import get_benchmark  # noqa: E402
from harness.config import BENCHMARKS_DIR, RunConfig  # noqa: E402
from harness.results import paired_variation_groups, task_of  # noqa: E402
from harness.splits import Split, load_split  # noqa: E402
from harness.trajectory import RunStore  # noqa: E402
from harness.verdict import power_plan, split_design, variance_components  # noqa: E402

DESIGNS = ("1x1", "1x3", "3x3", "5x3")  # repeats x seeds


def planned_splits(benchmark) -> dict[str, Split]:
    """test_id of the benchmark's split file, then the powered split of each of its powered split files."""
    splits = {"test_id": benchmark.load_split()}
    for path in sorted((BENCHMARKS_DIR / "splits").glob("*.json")):
        content = json.loads(path.read_text(encoding="utf-8"))
        if content.get("benchmark") == benchmark.name and "powered" in content:
            splits[content["powered"]["split"]] = load_split(path, benchmark.name)
    return splits


def runs_benchmark(paths: list[Path]) -> str:
    names = {(RunStore(p).config().get("run") or {}).get("benchmark") or RunConfig.benchmark for p in paths}
    if len(names) != 1:
        raise SystemExit(
            f"the run directories were played on different benchmarks: {', '.join(sorted(names))}"
        )
    return names.pop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", nargs="+", type=Path, required=True, help="router A's val run, one per seed")
    parser.add_argument("--b", nargs="+", type=Path, required=True, help="router B's val run, same seeds")
    parser.add_argument("--benchmark", help="the runs' benchmark (default: read from their config)")
    parser.add_argument("--margin", type=float, help="verdict margin (default: the benchmark's own)")
    parser.add_argument(
        "--designs",
        nargs="+",
        default=list(DESIGNS),
        help=f"REPEATSxSEEDS to plan (default {' '.join(DESIGNS)})",
    )
    args = parser.parse_args()
    if len(args.a) != len(args.b):
        parser.error("--a and --b need one run directory per seed each")
    try:
        designs = [tuple(int(n) for n in d.split("x")) for d in args.designs]
    except ValueError:
        parser.error("--designs: each is REPEATSxSEEDS, e.g. 3x3")
    played = runs_benchmark([*args.a, *args.b])
    if args.benchmark not in (None, played):
        parser.error(f"--benchmark {args.benchmark}: the runs were played on {played}")
    benchmark = get_benchmark(played)
    margin = benchmark.default_margin if args.margin is None else args.margin
    places = max(0, round(math.log10(100.0 / benchmark.score_range[1])))  # 0 on a 0-100 score, 2 on 0-1
    by_type: dict[str, dict[str, list]] = {}
    for a, b in zip(args.a, args.b, strict=True):
        for variation, rows in paired_variation_groups(a, b).items():
            by_type.setdefault(task_of(variation), {}).setdefault(variation, []).extend(rows.tolist())
    groups = {t: [np.array(rows) for rows in per.values()] for t, per in by_type.items()}
    components = variance_components(groups)
    episodes = sum(len(g) for per in groups.values() for g in per)
    print(
        f"{episodes} paired val episodes of {played} (margin {margin:g}): between-variation variance "
        f"{components.between:.{2 * places}f}, within-variation (repeat) variance {components.within:.{2 * places}f}"
    )
    width = 12 + places
    print(
        f"{'split':<14}{'repeats':>8}{'seeds':>6}{'episodes':>10}{'half-width':>{width}}{'MDD':>{7 + places}}  powered"
    )
    for name, split in planned_splits(benchmark).items():
        for repeats, seeds in designs:
            plan = power_plan(components, split_design(split, name, False, repeats), margin, seeds)
            print(
                f"{name:<14}{repeats:>8}{seeds:>6}{plan['episodes']:>10}{plan['halfwidth']:>{width}.{2 + places}f}"
                f"{plan['mdd']:>{7 + places}.{2 + places}f}  {plan['powered']}"
            )


if __name__ == "__main__":
    main()
