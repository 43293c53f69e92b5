"""How large the powered split must be: the planned interval of a paired difference between two routers.

Why: the verdict asks whether a router is within 5 points of the best single model, and on
test_id's 73 variations the interval of that difference is +-9 to +-16 points, so no router
could pass. This script sizes the powered split from val alone, never a test split: it pairs
two routers' val runs episode by episode (each run directory may be given once per seed, the
seeds then counting as repeats of each variation), splits the variance of the paired
difference into a between-variation and a within-variation (repeat) part, and prints the
planned 95% half-width and minimum detectable difference for test_id and for the powered
split at several repeat and seed counts.

    harness run --router single -p model=gpt-5 --split val --seed 0 --out pilot/a-s0   # and --seed 1
    harness run --router single -p model=deepseek-v3.2 --split val --seed 0 --out pilot/b-s0
    python benchmarks/powered_split_plan.py --a pilot/a-s0 pilot/a-s1 --b pilot/b-s0 pilot/b-s1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.benchmarks.scienceworld.split import (  # noqa: E402
    DEFAULT_SPLIT_PATH,
    POWERED_SPLIT,
    POWERED_SPLIT_PATH,
)
from harness.results import paired_variation_groups, task_of  # noqa: E402
from harness.splits import load_split  # noqa: E402
from harness.verdict import power_plan, split_design, variance_components  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", nargs="+", type=Path, required=True, help="router A's val run, one per seed")
    parser.add_argument("--b", nargs="+", type=Path, required=True, help="router B's val run, same seeds")
    parser.add_argument("--margin", type=float, default=5.0)
    args = parser.parse_args()
    if len(args.a) != len(args.b):
        parser.error("--a and --b need one run directory per seed each")
    by_type: dict[str, dict[str, list]] = {}
    for a, b in zip(args.a, args.b, strict=True):
        for variation, rows in paired_variation_groups(a, b).items():
            by_type.setdefault(task_of(variation), {}).setdefault(variation, []).extend(rows.tolist())
    groups = {t: [np.array(rows) for rows in per.values()] for t, per in by_type.items()}
    components = variance_components(groups)
    episodes = sum(len(g) for per in groups.values() for g in per)
    print(
        f"{episodes} paired val episodes: between-variation variance {components.between:.0f}, "
        f"within-variation (repeat) variance {components.within:.0f}"
    )
    splits = {
        "test_id": load_split(DEFAULT_SPLIT_PATH, "scienceworld"),
        POWERED_SPLIT: load_split(POWERED_SPLIT_PATH, "scienceworld"),
    }
    print(f"{'split':<14}{'repeats':>8}{'seeds':>6}{'episodes':>10}{'half-width':>12}{'MDD':>7}  powered")
    for name, split in splits.items():
        for repeats, seeds in ((1, 1), (1, 3), (3, 3), (5, 3)):
            plan = power_plan(components, split_design(split, name, False, repeats), args.margin, seeds)
            print(
                f"{name:<14}{repeats:>8}{seeds:>6}{plan['episodes']:>10}{plan['halfwidth']:>12.2f}"
                f"{plan['mdd']:>7.2f}  {plan['powered']}"
            )


if __name__ == "__main__":
    main()
