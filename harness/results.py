"""A benchmark's results as tables, derived from its stored run directories only.

The benchmark orchestrator writes one run directory per operating point and split
(``RESULTS/<bench>/runs/<split>/<point>/``). Everything the plots, the report and
the MLflow log show is recomputed here from those files, so a report can always be
regenerated and never disagrees with the trajectories it summarises.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import BENCHMARKS_DIR, RouterSpec, RunConfig
from harness.errors import TrajectoryError, UnknownNameError
from harness.frontier import (
    OperatingPoint,
    aiq,
    clustered_bootstrap_point,
    paired_bootstrap_point,
    pareto_front,
    summarize_front,
)
from harness.layout import RUNS_DIR, ResultsLayout
from harness.records import EpisodeRecord
from harness.seeding import derive_seed
from harness.trajectory import RunStore

# The test splits a benchmark may evaluate on, headline first; the report and the verdict read them in this order.
TEST_SPLITS = ("test_id", "test_powered", "test_ood")
# Report order: the headline splits first, tuning and training data after.
SPLIT_ORDER = (*TEST_SPLITS, "val", "train")

POINT_COLUMNS = [
    "split",
    "point",
    "family",
    "label",
    "lam",
    "n",
    "failed",
    "mean_score",
    "score_lo",
    "score_hi",
    "mean_cost",
    "cost_lo",
    "cost_hi",
    "total_cost",
    "mean_turns",
    "switch_rate",
    "seconds_per_turn",
    "params",
    "run_dir",
]


# Undefined (NaN) for a point without a finished episode.
ESTIMATE_COLUMNS = (
    "mean_score",
    "score_lo",
    "score_hi",
    "mean_cost",
    "cost_lo",
    "cost_hi",
    "mean_turns",
    "switch_rate",
    "seconds_per_turn",
)


def split_sort_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def finished_splits(points: pd.DataFrame) -> list[str]:
    """Splits with at least one finished episode, headline splits first."""
    return sorted(points.loc[points["n"] > 0, "split"].unique(), key=split_sort_key)


def benchmark_definition(bench_dir: Path) -> dict[str, Any]:
    """The orchestrator's snapshot of the benchmark definition; empty when absent."""
    path = ResultsLayout(Path(bench_dir)).manifest
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise TrajectoryError(f"corrupt benchmark definition {path}") from None


def run_dirs(bench_dir: Path) -> list[tuple[str, str, Path]]:
    """(split, point, directory) of every run directory, in split then point order."""
    if not (Path(bench_dir) / RUNS_DIR).is_dir():
        raise TrajectoryError(f"{bench_dir} holds no benchmark results (no {RUNS_DIR}/ directory)")
    found = [(run.split, run.point, run.path) for run in ResultsLayout(Path(bench_dir)).point_runs()]
    if not found:
        raise TrajectoryError(f"{bench_dir} holds no run directories under {RUNS_DIR}/")
    return sorted(found, key=lambda row: (split_sort_key(row[0]), row[1]))


def _router_of(config: dict[str, Any]) -> tuple[str, str, float, dict[str, Any]]:
    """(family, label, lambda, params) of a run config; lambda is NaN for fixed routers."""
    router = config["run"]["router"]
    params = dict(router.get("params") or {})
    spec = RouterSpec(name=router["name"], params=params)
    lam = float(params["lam"]) if params.get("lam") is not None else math.nan
    return spec.name, spec.label, lam, params


def variation_of(record: EpisodeRecord) -> str:
    """The variation an episode record played: what its repeats share, the bootstrap's cluster."""
    return f"{record.task}/{record.variation}"


def _finished(records: list[EpisodeRecord]) -> list[EpisodeRecord]:
    """Finished episodes in task order: parallel workers append in completion order, and the
    bootstrap resamples by position, so a fixed order keeps intervals identical across reruns."""
    ok = [r for r in records if not r.failed and r.score is not None]
    return sorted(ok, key=lambda r: r.episode)


def point_row(split: str, point: str, run_dir: Path, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """One operating point's summary; failed episodes are counted, not averaged."""
    store = RunStore(run_dir)
    config = store.config()
    family, label, lam, params = _router_of(config)
    records = store.episodes()
    ok = _finished(records)
    row: dict[str, Any] = {
        "split": split,
        "point": point,
        "family": family,
        "label": label,
        "lam": lam,
        "n": len(ok),
        "failed": len(records) - len(ok),
        "params": params,
        "run_dir": str(run_dir),
    }
    if not ok:
        return row | dict.fromkeys(ESTIMATE_COLUMNS, math.nan) | {"total_cost": 0.0}
    # A seed per (split, point) keeps each interval reproducible regardless of which other points exist.
    boot_seed = derive_seed(seed, split, point) % 2**32
    scores, costs = [r.score for r in ok], [r.cost for r in ok]
    clusters = [variation_of(r) for r in ok]
    weights = run_split_weights(config, split)
    if weights is not None:  # a stratified split: each task type weighed by its share
        estimate = clustered_bootstrap_point(
            scores,
            costs,
            clusters,
            label=label,
            n_boot=n_boot,
            seed=boot_seed,
            strata=[task_of(c) for c in clusters],
            weights=weights,
        )
    elif len(set(clusters)) == len(clusters):
        estimate = paired_bootstrap_point(scores, costs, label=label, n_boot=n_boot, seed=boot_seed)
    else:  # repeated variations: resample variations, then repeats
        estimate = clustered_bootstrap_point(
            scores, costs, clusters, label=label, n_boot=n_boot, seed=boot_seed
        )
    assert estimate.score_ci is not None and estimate.cost_ci is not None
    return row | {
        "mean_score": estimate.score,
        "score_lo": estimate.score_ci[0],
        "score_hi": estimate.score_ci[1],
        "mean_cost": estimate.cost,
        "cost_lo": estimate.cost_ci[0],
        "cost_hi": estimate.cost_ci[1],
        "total_cost": float(sum(r.cost for r in ok)),
        "mean_turns": float(np.mean([r.turns for r in ok])),
        "switch_rate": float(np.mean([r.switch_rate or 0.0 for r in ok])),
        "seconds_per_turn": _seconds_per_turn(ok, config["run"].get("backend")),
    }


def _seconds_per_turn(records: list[EpisodeRecord], backend: str | None) -> float:
    """Wall seconds per turn (routing, model call, engine step or tool calls) of a real backend's episodes
    that timed themselves; NaN for imports and for the simulated backend, whose time is the simulator's
    rather than a model's (leaving it out keeps a simulated benchmark's report reproducible byte for byte)."""
    if backend == "simulated":
        return math.nan
    timed = [r for r in records if r.duration_s is not None and r.turns]
    if not timed:
        return math.nan
    return float(sum(r.duration_s for r in timed) / sum(r.turns for r in timed))


def load_points(bench_dir: Path, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (split, point): the numbers every table, plot and metric is built from.

    Means are over finished episodes; ``mean_cost`` is dollars per episode and
    ``score_lo``/``score_hi``, ``cost_lo``/``cost_hi`` are the 95% paired bootstrap
    intervals of the two means.
    """
    rows = [point_row(split, point, path, n_boot, seed) for split, point, path in run_dirs(bench_dir)]
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def episodes(bench_dir: Path) -> pd.DataFrame:
    """Every episode record of the benchmark, tagged with its split, point, family and lambda."""
    rows = []
    for split, point, path in run_dirs(bench_dir):
        store = RunStore(path)
        family, label, lam, _ = _router_of(store.config())
        context = {
            "split": split,
            "point": point,
            "family": family,
            "label": label,
            "lam": lam,
            "run_dir": str(path),
        }
        rows.extend(record.to_line() | context for record in store.episodes())
    return pd.DataFrame(rows)


def operating_points(points: pd.DataFrame) -> list[OperatingPoint]:
    """Rows with at least one finished episode as frontier operating points (label = point)."""
    usable = points[points["n"] > 0]
    return [
        OperatingPoint(
            label=row.point,
            score=row.mean_score,
            cost=row.mean_cost,
            score_ci=(row.score_lo, row.score_hi),
            cost_ci=(row.cost_lo, row.cost_hi),
            params={"family": row.family, "lam": row.lam},
        )
        for row in usable.itertuples()
    ]


def is_learned(points: pd.DataFrame) -> pd.Series:
    """Learned routers are the ones with a cost-weight knob, i.e. a lambda."""
    return points["lam"].notna()


def best_single(points: pd.DataFrame, split: str = "test_id") -> str | None:
    """The single-model point with the highest score on ``split`` (ties: the cheaper), if any."""
    singles = points[(points["family"] == "single") & (points["split"] == split) & (points["n"] > 0)]
    if singles.empty:
        return None
    return str(singles.sort_values(["mean_score", "mean_cost"], ascending=[False, True]).iloc[0]["point"])


def reference_point(
    definition: dict[str, Any], points: pd.DataFrame, split: str
) -> tuple[float, float, bool]:
    """(score, cost, given) of the hypervolume reference for ``split``.

    The benchmark definition's ``reference`` ({"score", "cost"} or [score, cost],
    optionally keyed by split) wins; otherwise the split's worst score and highest
    cost are used and ``given`` is False, so the report can say so.
    """
    given = definition.get("reference", definition.get("reference_point"))
    if isinstance(given, dict) and split in given:
        given = given[split]
    if isinstance(given, dict) and {"score", "cost"} <= set(given):
        return float(given["score"]), float(given["cost"]), True
    if isinstance(given, list | tuple) and len(given) == 2:
        return float(given[0]), float(given[1]), True
    rows = points[(points["split"] == split) & (points["n"] > 0)]
    return float(rows["mean_score"].min()), float(rows["mean_cost"].max()), False


def frontier_table(points: pd.DataFrame, split: str) -> pd.DataFrame:
    """A split's operating points, cheapest first, flagged when on the overall Pareto front."""
    rows = points[(points["split"] == split) & (points["n"] > 0)].sort_values(["mean_cost", "point"])
    on_front = {p.label for p in pareto_front(operating_points(rows))} if not rows.empty else set()
    # reindex: replay estimates carry no measured time per turn (NaN there)
    table = rows.reindex(columns=[c for c in POINT_COLUMNS if c not in ("split", "params", "run_dir")])
    table["on_front"] = table["point"].isin(on_front)
    return table.reset_index(drop=True)


def family_summaries(
    points: pd.DataFrame, split: str, reference: tuple[float, float], single_point: str | None
) -> pd.DataFrame:
    """Each router family's frontier numbers on ``split`` against the best single model.

    ``aiq`` is over each family's own cost range; ``aiq_shared`` is over one range
    shared by the families with at least two points (from the dearest of their
    cheapest points to the dearest point of any), so those values compare directly.
    """
    rows = points[(points["split"] == split) & (points["n"] > 0)]
    families = {family: operating_points(group) for family, group in rows.groupby("family", sort=True)}
    anchor = rows[rows["point"] == single_point]
    if anchor.empty:
        return pd.DataFrame()
    best = operating_points(anchor)[0]
    swept = [pts for pts in families.values() if len(pts) >= 2]
    shared = (
        (max(min(p.cost for p in pts) for pts in swept), max(p.cost for pts in swept for p in pts))
        if swept
        else None
    )
    table = []
    for family, pts in families.items():
        summary = summarize_front(pts, reference, best)
        table.append(
            {
                "family": family,
                "points": len(pts),
                **summary,
                "front": ", ".join(summary["front"]),
                "aiq_shared": aiq(pts, shared) if shared and len(pts) >= 2 else None,
                "aiq_shared_range": shared,
            }
        )
    return pd.DataFrame(table)


def provenance(bench_dir: Path) -> dict[str, list[Any]]:
    """What the runs were made with, as the distinct values found across all run configs.

    One value per key is the normal case; several mean the benchmark mixes runs of
    different pools, splits or engines, which the report and the MLflow log show.
    """
    seen: dict[str, list[Any]] = {
        key: [] for key in ("pool", "pool_sha256", "split_version", "engine", "seed", "price_cards")
    }
    for _, _, path in run_dirs(bench_dir):
        config = RunStore(path).config()
        values = {
            "pool": config["run"].get("pool"),
            "pool_sha256": config.get("pool_sha256"),
            "split_version": config.get("split_version"),
            "engine": config.get("engine"),
            "seed": config["run"].get("seed"),
            "price_cards": config.get("price_cards"),
        }
        for key, value in values.items():
            if value is not None and value not in seen[key]:
                seen[key].append(value)
    return seen


def selected_points(points: pd.DataFrame, definition: dict[str, Any]) -> pd.DataFrame:
    """The rows to show for each router: fixed routers as they are, learned families at
    their tuned lambda (benchmark.json ``selected``: {family: {"lam": ...}}) or, with no
    selection or no run at the selected lambda, at every lambda of the sweep."""
    selected = definition.get("selected") or {}
    keep = ~is_learned(points)
    for family, group in points[is_learned(points)].groupby("family"):
        lam = (selected.get(family) or {}).get("lam")
        chosen = group["lam"].map(
            lambda x, lam=lam: lam is not None and math.isclose(x, float(lam), rel_tol=1e-9, abs_tol=1e-12)
        )
        keep |= points.index.isin(group.index[chosen] if chosen.any() else group.index)
    return points[keep]


def headline_points(points: pd.DataFrame, definition: dict[str, Any], split: str = "test_id") -> pd.DataFrame:
    """One row per learned family on ``split``: its selected point, else its middle lambda."""
    rows = selected_points(points, definition)
    rows = rows[is_learned(rows) & (rows["split"] == split) & (rows["n"] > 0)].sort_values(["family", "lam"])
    middles = [group.iloc[len(group) // 2] for _, group in rows.groupby("family", sort=True)]
    return pd.DataFrame(middles, columns=rows.columns)


# How a learned family's operating point is chosen on the selection split (stated in the definition).
SELECTION_RULES = (
    "cheapest_reaching_best_single",
    "cheapest_noninferior",
    "cheapest_bound_noninferior",
    "highest_val_score",
)
MARGIN_RULES = ("cheapest_noninferior", "cheapest_bound_noninferior")  # the rules that take a margin
PAIRED_RULES = ("cheapest_bound_noninferior",)  # the rules that read ``score_diff_low``, a paired bound


def rule_key(rule: str, margin: float | None) -> str:
    """How a rule is named in benchmark.json and the report: ``cheapest_noninferior@5``."""
    return rule if margin is None else f"{rule}@{margin:g}"


def select_point(
    candidates: pd.DataFrame, rule: str, reference_score: float | None = None, margin: float | None = None
) -> dict[str, Any]:
    """The row of ``candidates`` (one family's points on the selection split: ``lam``,
    ``mean_score``, ``mean_cost``) that ``rule`` picks, with why.

    ``cheapest_reaching_best_single``: the cheapest point whose score is at least
    ``reference_score`` (the best single model's on the same split); when none reaches
    it, the highest-scoring point (``reached`` False says so). ``cheapest_noninferior``:
    the same with the bar lowered by ``margin`` score points, so a point that gives up at
    most ``margin`` for a lower cost is taken. ``cheapest_bound_noninferior``: the cheapest
    point that would pass the verdict on the selection split itself, its paired difference
    to the best single model having a 95% lower bound (``score_diff_low``) above
    ``-margin``; when none does, the point with the highest bound. A point estimate within
    the margin is not enough: on a few dozen variations it is often the lucky draw that
    regresses on test. ``highest_val_score``: the highest-scoring point. Ties go to the
    cheaper point, then the smaller lambda, so the choice never depends on row order.
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r} (known: {', '.join(SELECTION_RULES)})")
    if (margin is not None) != (rule in MARGIN_RULES):
        raise ValueError(f"rule {rule} {'takes no' if margin is not None else 'needs a'} margin")
    if rule in PAIRED_RULES and "score_diff_low" not in candidates:
        raise ValueError(f"rule {rule} needs each candidate's score_diff_low, its paired lower bound")
    usable = candidates.dropna(subset=["mean_score", "mean_cost"])
    if usable.empty:
        raise ValueError("no candidate point with a finished episode to select from")
    by_score = usable.sort_values(["mean_score", "mean_cost", "lam"], ascending=[False, True, True])
    reached = None
    chosen = by_score.iloc[0]
    if rule in PAIRED_RULES:
        bounded = usable.dropna(subset=["score_diff_low"])
        if bounded.empty:
            raise ValueError(f"rule {rule}: no candidate shares an episode with the best single model")
        passing = bounded[bounded["score_diff_low"] > -margin]
        reached = not passing.empty
        chosen = (
            passing.sort_values(["mean_cost", "lam"]).iloc[0]
            if reached
            else bounded.sort_values(
                ["score_diff_low", "mean_cost", "lam"], ascending=[False, True, True]
            ).iloc[0]
        )
    elif rule != "highest_val_score":
        if reference_score is None or math.isnan(reference_score):
            raise ValueError(f"rule {rule} needs the best single model's score on the selection split")
        reaching = usable[usable["mean_score"] >= reference_score - (margin or 0.0)]
        reached = not reaching.empty
        if reached:
            chosen = reaching.sort_values(["mean_cost", "lam"]).iloc[0]
    return {
        "lam": float(chosen["lam"]),
        "score": float(chosen["mean_score"]),
        "cost": float(chosen["mean_cost"]),
        "rule": rule,
        "margin": margin,
        "reached_best_single": reached,
        **({"score_diff_low": float(chosen["score_diff_low"])} if rule in PAIRED_RULES else {}),
    }


def selection_best_single(definition: dict[str, Any]) -> str | None:
    """The best single model as the selection stage found it on its split, if a selection ran."""
    for choice in (definition.get("selected") or {}).values():
        if choice.get("best_single"):
            return str(choice["best_single"])
    return None


def headline_single(points: pd.DataFrame, definition: dict[str, Any]) -> tuple[str | None, str]:
    """(best single point, the split it was chosen on): the selection split's when a selection ran."""
    chosen = selection_best_single(definition)
    if chosen is not None:
        return chosen, str((definition.get("selection") or {}).get("split", "val"))
    return best_single(points), "test_id"


def oracle_choices(
    points: pd.DataFrame, definition: dict[str, Any], split: str = "test_id"
) -> dict[str, dict]:
    """Each selected family's point had the rule been applied to ``split`` (an oracle: selection on test).

    Rules that need paired bounds have no oracle here: the points carry means, not episodes.
    """
    selection = definition.get("selection") or {}
    rule, margin = selection.get("rule"), selection.get("margin")
    reference = best_single(points, split)
    if rule is None or rule in PAIRED_RULES or reference is None:
        return {}
    ref_score = float(
        points[(points["point"] == reference) & (points["split"] == split)]["mean_score"].iloc[0]
    )
    out = {}
    for family in definition.get("selected") or {}:
        rows = points[(points["family"] == family) & (points["split"] == split) & (points["n"] > 0)]
        if not rows.empty:
            out[family] = select_point(rows, rule, ref_score, margin)
    return out


def replicate_dirs(bench_dir: Path, definition: dict[str, Any]) -> dict[int, Path]:
    """Seed -> results directory of each seed replicate that has run directories."""
    found = {}
    for seed, relative in (definition.get("replicates") or {}).items():
        path = Path(bench_dir) / relative
        if (path / RUNS_DIR).is_dir():
            found[int(seed)] = path
    return found


def paired_variations(run_dir: str | Path, reference_dir: str | Path) -> list[np.ndarray]:
    """The episodes both runs finished, grouped by variation: per variation an (R, 4) array of
    (score, reference score, cost, reference cost), one row per repeat, paired by episode key
    (same variation, same repeat, same episode seed)."""
    return list(paired_variation_groups(run_dir, reference_dir).values())


def paired_variation_groups(run_dir: str | Path, reference_dir: str | Path) -> dict[str, np.ndarray]:
    """:func:`paired_variations` keyed by variation (``task/variation``, :func:`variation_of`), so a
    stratified split can tell each group's task type."""
    return pair_by_variation(RunStore(Path(run_dir)).episodes(), RunStore(Path(reference_dir)).episodes())


def pair_by_variation(records: list[EpisodeRecord], reference: list[EpisodeRecord]) -> dict[str, np.ndarray]:
    """:func:`paired_variation_groups` of episodes already read (a caller that also counts their failures
    reads each run once)."""
    mine = {r.episode: r for r in _finished(records)}
    theirs = {r.episode: r for r in _finished(reference)}
    groups: dict[str, list[list[float]]] = {}
    for key in sorted(set(mine) & set(theirs)):
        a, b = mine[key], theirs[key]
        groups.setdefault(variation_of(a), []).append([a.score, b.score, a.cost, b.cost])
    return {variation: np.array(rows, dtype=float) for variation, rows in groups.items()}


def run_split_weights(config: dict[str, Any], split: str) -> dict[str, float] | None:
    """The task-type weights of ``split`` in the split file a run was played on (None: unweighted)."""
    run = config.get("run") or {}
    return split_weights(run.get("benchmark") or RunConfig.benchmark, run.get("split_file"), split)


def split_weights_of(run_dir: str | Path, split: str) -> dict[str, float] | None:
    """:func:`run_split_weights` of the run in ``run_dir``."""
    return run_split_weights(RunStore(Path(run_dir)).config(), split)


@functools.lru_cache(maxsize=32)
def split_weights(benchmark: str, split_file: str | None, split: str) -> dict[str, float] | None:
    """The task-type weights of ``split`` in a benchmark's split file (None: its shipped one), read once.

    The split file is the one record of the weights (``config.json`` pins its version), so reading a
    run's results needs its benchmark's plug-in: without it they are refused by name, never scored
    unweighted (a stratified split's unweighted mean is another number). A relative path that is not
    there from the working directory is the repository's (definitions name split files from its root),
    so results read the same from anywhere.
    """
    from harness.benchmarks import get_benchmark

    if split_file is not None and not Path(split_file).is_absolute() and not Path(split_file).exists():
        shipped = BENCHMARKS_DIR.parent / split_file
        split_file = str(shipped) if shipped.exists() else split_file

    try:
        plugin = get_benchmark(benchmark)
    except UnknownNameError as exc:
        raise UnknownNameError(
            f"the results of benchmark {benchmark!r} are weighed by its split file: {exc}"
        ) from None
    return plugin.load_split(split_file).weights(split)


def task_of(variation: str) -> str:
    """The task type of a :func:`variation_of` key: a stratified split's stratum."""
    return variation.rsplit("/", 1)[0]


def seed_rows(bench_dir: Path, splits: tuple[str, ...] = TEST_SPLITS) -> pd.DataFrame:
    """One row per (router, split, seed) of a seeded benchmark, learned families at their val-selected point.

    ``pairs`` holds the router's and that seed's best single model's episodes, paired and
    grouped by variation (:func:`paired_variations`: what the hierarchical bootstrap resamples);
    ``strata`` each group's task type and ``weights`` the split's task-type weights (None:
    unstratified), so the bootstrap weighs a stratified split as :func:`point_row` does.
    """
    definition = benchmark_definition(bench_dir)
    rows = []
    for seed, path in sorted(replicate_dirs(bench_dir, definition).items()):
        child = benchmark_definition(path)
        points = load_points(path)
        shown = selected_points(points, child)
        single, _ = headline_single(points, child)
        for split in splits:
            here = shown[(shown["split"] == split) & (shown["n"] > 0)]
            anchor = points[(points["point"] == single) & (points["split"] == split)]
            for row in here.itertuples():
                learned = not math.isnan(row.lam)
                groups = (
                    paired_variation_groups(row.run_dir, anchor.iloc[0]["run_dir"])
                    if not anchor.empty
                    else {}
                )
                rows.append(
                    {
                        "router": f"{row.family} (val-selected)" if learned else row.point,
                        "split": split,
                        "seed": seed,
                        "lam": row.lam,
                        "score": row.mean_score,
                        "score_halfwidth": (row.score_hi - row.score_lo) / 2,
                        "cost": row.mean_cost,
                        "best_single": single,
                        "best_single_cost": float(anchor.iloc[0]["mean_cost"])
                        if not anchor.empty
                        else math.nan,
                        "pairs": list(groups.values()),
                        "strata": [task_of(v) for v in groups],
                        "weights": split_weights_of(row.run_dir, split),
                    }
                )
    return pd.DataFrame(rows)
