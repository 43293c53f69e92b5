"""The verdict: does each learned router hold up against the best single model when measured honestly?

A frontier shows where a router could be; the verdict says where the one operating point
chosen before any test split was seen (the family's val-selected lambda) is. For each
learned family and test split it gives the paired score difference to the best single
model, chosen by its val score (not its test score, which would flatter the single model
or the router depending on the draw), with a 95% interval that resamples training seeds,
then variations, then the repeats of each variation; the cost ratio with its interval;
and a non-inferiority verdict at a stated margin. Everything is recomputed from the run
directories, so the report and ``benchmark.json`` always agree with the episodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from harness.config import RunConfig
from harness.frontier import hierarchical_paired_bootstrap
from harness.layout import ResultsLayout
from harness.results import (
    TEST_SPLITS,
    benchmark_definition,
    pair_by_variation,
    paired_variations,
    replicate_dirs,
    run_dirs,
    run_split_weights,
    task_of,
)
from harness.seeding import derive_seed
from harness.splits import Split
from harness.trajectory import RunStore

VERDICT_SPLITS = TEST_SPLITS


def verdict_margin(definition: dict[str, Any]) -> float:
    """The margin a benchmark's definition states (its ``verdict.margin``), else its benchmark's default
    (:attr:`harness.benchmarks.base.Benchmark.default_margin`), in the benchmark's score units."""
    from harness.benchmarks import get_benchmark

    stated = ((definition.get("definition") or {}).get("verdict") or {}).get("margin")
    if stated is not None:
        return float(stated)
    return get_benchmark(definition.get("benchmark") or RunConfig.benchmark).default_margin


def _learned_run(bench_dir: Path, split: str, family: str, lam: float) -> Path | None:
    """The run directory of ``family`` at ``lam`` on ``split``, if it was evaluated there."""
    root = ResultsLayout(bench_dir).runs(split)
    if not root.is_dir():
        return None
    for _, _, path in (row for row in run_dirs(bench_dir) if row[0] == split):
        router = RunStore(path).config()["run"]["router"]
        params = router.get("params") or {}
        if router["name"] == family and params.get("lam") is not None:
            if math.isclose(float(params["lam"]), float(lam), rel_tol=1e-9, abs_tol=1e-12):
                return path
    return None


def paired_table(
    bench_dir: Path, splits: tuple[str, ...] = VERDICT_SPLITS, rule: str | None = None
) -> dict[tuple[str, str], dict]:
    """(family, split) -> the val-selected point's episodes paired with the val-best single model's.

    ``rule``: the key of a ``select.also`` rule whose choice to pair instead of the headline rule's.

    Each value holds ``pairs`` (per seed replicate, per variation, the (R, 4) repeats of
    :func:`harness.results.paired_variations`) and, per seed, the selected ``lam`` and the
    ``best_single``. A benchmark without seed replicates is its own single replicate; one
    without a selection stage (no val-best single model) has no verdict.
    """
    bench_dir = Path(bench_dir)
    definition = benchmark_definition(bench_dir)
    own_seed = int((definition.get("definition") or {}).get("seed", 0))
    replicates = replicate_dirs(bench_dir, definition) or {own_seed: bench_dir}
    table: dict[tuple[str, str], dict] = {}
    for seed, path in sorted(replicates.items()):
        child = benchmark_definition(path) if path != bench_dir else definition
        for family, choice in sorted((child.get("selected") or {}).items()):
            single = choice.get("best_single")
            if rule is not None:
                choice = (choice.get("also") or {}).get(rule) or {}
            if not single or "lam" not in choice:
                continue
            for split in splits:
                reference = ResultsLayout(path).run(split, single)
                mine = _learned_run(path, split, family, choice["lam"])
                if mine is None or not (reference / "config.json").exists():
                    continue
                mine_episodes, reference_episodes = RunStore(mine).episodes(), RunStore(reference).episodes()
                groups = pair_by_variation(mine_episodes, reference_episodes)
                if not groups:
                    continue
                failed = sum(r.failed for r in (*mine_episodes, *reference_episodes))
                entry = table.setdefault(
                    (family, split),
                    {
                        "pairs": [],
                        "strata": [],
                        "seeds": [],
                        "lam": [],
                        "best_single": [],
                        "weights": None,
                        "power": [],
                        "failed": 0,
                    },
                )
                entry["failed"] += failed
                entry["power"].append(((child.get("power") or {}).get(family) or {}).get(split))
                entry["pairs"].append(list(groups.values()))
                entry["strata"].append([task_of(v) for v in groups])
                entry["weights"] = run_split_weights(RunStore(mine).config(), split)
                entry["seeds"].append(seed)
                entry["lam"].append(float(choice["lam"]))
                entry["best_single"].append(single)
    return table


def _nested_means(
    pairs: list[list[np.ndarray]],
    strata: list[list[str]] | None = None,
    weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    """(score, reference score, cost, reference cost): mean over seeds of variation means of repeat means
    (of the weighted strata's such means, on a stratified split)."""
    if weights is None or strata is None:
        return np.mean([np.mean([g.mean(axis=0) for g in seed], axis=0) for seed in pairs], axis=0)
    per_seed = []
    for groups, labels in zip(pairs, strata, strict=True):
        present = sorted(set(labels))
        total = sum(weights[t] for t in present)
        per_seed.append(
            sum(
                weights[t]
                / total
                * np.mean([g.mean(axis=0) for g, s in zip(groups, labels, strict=True) if s == t], axis=0)
                for t in present
            )
        )
    return np.mean(per_seed, axis=0)


def verdict(
    pairs: list[list[np.ndarray]],
    margin: float,
    n_boot: int = 4000,
    seed: int = 0,
    strata: list[list[str]] | None = None,
    weights: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The paired comparison of one family on one split and its verdict at ``margin``.

    Non-inferior iff the lower bound of the 95% interval of the score difference is above
    ``-margin``; better iff it is above zero. ``strata`` and ``weights``: a stratified split's
    task type per variation and each type's weight.
    """
    if weights is None:
        strata = None
    test = hierarchical_paired_bootstrap(pairs, n_boot=n_boot, seed=seed, strata=strata, weights=weights)
    score, single_score, cost, single_cost = _nested_means(pairs, strata, weights)
    low = test.score_diff_ci[0]
    return {
        "score": float(score),
        "best_single_score": float(single_score),
        "cost": float(cost),
        "best_single_cost": float(single_cost),
        "score_diff": test.score_diff,
        "score_diff_ci": list(test.score_diff_ci),
        "p_le_zero": test.p_le_zero,
        "cost_ratio": test.cost_ratio,
        "cost_ratio_ci": list(test.cost_ratio_ci),
        "margin": margin,
        "non_inferior": bool(low > -margin),
        "better": bool(low > 0.0),
        "n_seeds": test.seeds,
        "n_variations": test.variations,
        "n_episodes": test.episodes,
    }


def paired_lower_bound(run_dir: Path, reference_dir: Path, n_boot: int = 4000, seed: int = 0) -> float:
    """The 95% lower bound of one run's paired score difference to a reference run (same episodes),
    resampling variations with their repeats: the verdict's test, asked of a selection split."""
    pairs = paired_variations(run_dir, reference_dir)
    if not pairs:
        return math.nan
    return hierarchical_paired_bootstrap([pairs], n_boot=n_boot, seed=seed).score_diff_ci[0]


def is_judged(judged: Sequence[str] | None, family: str) -> bool:
    """Whether ``family``'s verdict is the benchmark's claim under ``verdict.judged`` (None: every
    learned family's); every other row is exploratory."""
    return judged is None or family in judged


def verdict_rows(
    bench_dir: Path,
    margin: float | None = None,
    n_boot: int = 4000,
    rule: str | None = None,
    splits: tuple[str, ...] | list[str] | None = None,
) -> list[dict[str, Any]]:
    """Every learned family's verdict on every test split it was evaluated on, in family then split order
    (at the points the ``select.also`` rule named ``rule`` chose, when given, on its ``splits``: where
    its point and the headline's coincide a split it was not played on would have a partial verdict)."""
    bench_dir = Path(bench_dir)
    definition = benchmark_definition(bench_dir)
    margin = verdict_margin(definition) if margin is None else margin
    judged = ((definition.get("definition") or {}).get("verdict") or {}).get("judged")
    order = {split: i for i, split in enumerate(VERDICT_SPLITS)}
    rows = []
    for (family, split), entry in sorted(
        paired_table(bench_dir, tuple(splits or VERDICT_SPLITS), rule=rule).items(),
        key=lambda kv: (kv[0][0], order[kv[0][1]]),
    ):
        boot_seed = derive_seed("verdict", family, split) % 2**32
        plans = [plan for plan in entry["power"] if plan]
        row = {
            "family": family,
            "split": split,
            "judged": is_judged(judged, family),
            "seeds": entry["seeds"],
            "lam": entry["lam"],
            "best_single": entry["best_single"],
            # planned before the test was played; None: no plan (no selection stage, or a quick one)
            "powered": all(plan["powered"] for plan in plans) if plans else None,
            "planned_mdd": float(np.mean([plan["mdd"] for plan in plans])) if plans else None,
            # episodes either router failed: the pairs left are not the split, so nothing is decided
            "failed_episodes": entry["failed"],
            **verdict(
                entry["pairs"],
                margin,
                n_boot=n_boot,
                seed=boot_seed,
                strata=entry["strata"],
                weights=entry["weights"],
            ),
        }
        if row["failed_episodes"]:
            row["non_inferior"] = row["better"] = False
        rows.append(row)
    return rows


def _places(margin: float) -> int:
    """Decimals that show a planned difference beside ``margin``: one past its leading digit (5 -> 1, 0.05 -> 3),
    so a plan on a 0-1 accuracy does not print as 0.1 or 0.0."""
    return max(1, 1 - math.floor(math.log10(margin))) if margin > 0 else 1


def verdict_text(row: dict[str, Any]) -> str:
    """One row's verdict in words, with its margin and, where it was planned, its power."""
    m = f"{row['margin']:g}"
    if row.get("failed_episodes"):
        return f"undecided: {row['failed_episodes']} failed episodes leave pairs that are not the split"
    if row["better"]:
        text = f"better (non-inferior at margin {m})"
    elif row["non_inferior"]:
        text = f"non-inferior at margin {m}"
    else:
        text = f"not shown non-inferior at margin {m}"
    if not row.get("judged", True):
        text = f"exploratory: {text}"
    if row.get("powered") is None:
        return text
    power = "powered" if row["powered"] else "not powered"
    mdd = f"{row['planned_mdd']:.{_places(row['margin'])}f}"
    return f"{text}; {power} (planned minimum detectable difference {mdd})"


# Power ------------------------------------------------------------------------
# A verdict is only worth playing if it can come out either way: before any test episode,
# the plan's standard error (from the variance of paired differences seen on val) says how
# large a true difference the test split could show at the stated margin.

POWER = 0.8  # the probability of a non-inferiority verdict the plan must reach for a router equal to the reference
_Z = NormalDist()


@dataclass(frozen=True)
class VarianceComponents:
    """The variance of a paired score difference, split the way the test split's design divides it."""

    between: float  # of the variations' mean differences around their task type's mean
    within: float  # of one episode's difference around its variation's mean (the repeats' noise)


def variance_components(groups_by_type: Mapping[str, Sequence[np.ndarray]]) -> VarianceComponents:
    """Pooled one-way random-effects estimates (method of moments) from paired episodes grouped by task
    type, then variation: each variation an (R, >=2) array whose first two columns are the two scores.

    Without repeats the within part cannot be told apart and is counted as between, which
    overstates what the test's repeats remove: a conservative plan.
    """
    ss_within = df_within = ss_between = df_between = 0.0
    repeats = []
    for variations in groups_by_type.values():
        diffs = [np.asarray(g, dtype=float)[:, 0] - np.asarray(g, dtype=float)[:, 1] for g in variations]
        means = np.array([d.mean() for d in diffs])
        ss_within += sum(float(((d - d.mean()) ** 2).sum()) for d in diffs)
        df_within += sum(len(d) - 1 for d in diffs)
        if len(means) > 1:
            ss_between += float(((means - means.mean()) ** 2).sum())
            df_between += len(means) - 1
        repeats += [len(d) for d in diffs]
    if df_between == 0:
        raise ValueError("variance components need at least two variations of one task type")
    within = ss_within / df_within if df_within else 0.0
    between = ss_between / df_between - (within / float(np.mean(repeats)) if df_within else 0.0)
    return VarianceComponents(between=max(between, 0.0), within=within)


def stratified_difference(
    groups_by_type: Mapping[str, Sequence[np.ndarray]], design: Mapping[str, tuple[float, int, int]]
) -> float:
    """The paired mean difference as a split's design weighs it (:func:`_nested_means` of one seed):
    per task type the mean of its variations' mean differences, weighted by the type's weight
    (renormalised over the types present)."""
    kept = [(task, g) for task, groups in groups_by_type.items() if task in design for g in groups]
    if not kept:
        raise ValueError("no paired variation of the design's task types")
    weights = {task: design[task][0] for task, _ in kept}
    means = _nested_means([[np.asarray(g) for _, g in kept]], [[task for task, _ in kept]], weights)
    return float(means[0] - means[1])


def seed_variance(differences: Sequence[tuple[float, float]]) -> float:
    """The variance between training seeds of a selected point's true difference, by the method of
    moments: the spread of the seeds' val mean differences less the part each one's own sampling adds.

    ``differences``: per seed, (its val mean difference, that mean's sampling variance). Two seeds
    give an estimate with one degree of freedom: a noisy plan, but not the zero a plan that ignores
    training seeds assumes.
    """
    if len(differences) < 2:
        raise ValueError("the spread between seeds needs at least two seeds")
    means = np.array([d for d, _ in differences], dtype=float)
    sampling = float(np.mean([v for _, v in differences]))
    return max(float(means.var(ddof=1)) - sampling, 0.0)


def planned_standard_error(
    components: VarianceComponents,
    design: Mapping[str, tuple[float, int, int]],
    seeds: int = 1,
    seed_variance: float = 0.0,
) -> float:
    """The standard error of a (stratified) paired mean difference over ``seeds`` training seeds:
    ``design`` maps each task type to (its weight, its variations, the plays of each); each seed's
    mean adds ``seed_variance`` (how far apart training seeds land) to its sampling variance."""
    variance = sum(
        weight**2 * (components.between / n + components.within / (n * plays))
        for weight, n, plays in design.values()
    )
    return math.sqrt((variance + seed_variance) / seeds)


def minimum_detectable_difference(se: float, power: float = POWER, alpha: float = 0.05) -> float:
    """How far above ``-margin`` a true difference must be for the test to declare non-inferiority
    with probability ``power``: (z_{1-alpha/2} + z_power) * se."""
    return (_Z.inv_cdf(1.0 - alpha / 2.0) + _Z.inv_cdf(power)) * se


def power_plan(
    components: VarianceComponents,
    design: Mapping[str, tuple[float, int, int]],
    margin: float,
    seeds: int = 1,
    alpha: float = 0.05,
    seed_variance: float = 0.0,
) -> dict[str, Any]:
    """What a planned test can decide at ``margin``: it is powered when a router exactly as good as
    the reference would be declared non-inferior with probability at least :data:`POWER`."""
    se = planned_standard_error(components, design, seeds, seed_variance)
    mdd = minimum_detectable_difference(se, POWER, alpha)
    z = _Z.inv_cdf(1.0 - alpha / 2.0)
    return {
        "margin": margin,
        "seeds": seeds,
        "variations": sum(n for _, n, _ in design.values()),
        "episodes": seeds * sum(n * plays for _, n, plays in design.values()),
        "se": se,
        "halfwidth": z * se,
        "mdd": mdd,
        "power_at_equal": _Z.cdf(margin / se - z) if se > 0 else 1.0,
        "powered": bool(mdd <= margin),
        "between_variance": components.between,
        "within_variance": components.within,
        "seed_variance": seed_variance,
    }


def split_design(
    split: Split, split_name: str, quick: bool, repeats: int
) -> dict[str, tuple[float, int, int]]:
    """Task type -> (weight, variations, plays per variation) of a split as a run plays it."""
    per_task = (split.quick if quick else split.assignments)[split_name]
    weights = split.weights(split_name)
    total = sum(len(v) for v in per_task.values())
    return {
        task: (
            weights[task] if weights else len(variations) / total,
            len(variations),
            repeats * split.plays(split_name, task),
        )
        for task, variations in per_task.items()
        if variations
    }


def power_text(plan: dict[str, Any]) -> str:
    """One plan in words, for the console and the report."""
    state = "powered" if plan["powered"] else "NOT powered"
    places = _places(plan["margin"])
    spread = plan.get("seed_variance") or 0.0
    seeds = f"{plan['seeds']} seeds" + (
        f", seeds' spread sd {math.sqrt(spread):.{places}f}" if spread else ""
    )
    return (
        f"{state}: {plan['episodes']} episodes ({plan['variations']} variations, {seeds}), "
        f"planned interval +-{plan['halfwidth']:.{places}f}, minimum detectable difference {plan['mdd']:.{places}f} "
        f"at margin {plan['margin']:g}, P(non-inferior | equal) = {plan['power_at_equal']:.2f}"
    )
