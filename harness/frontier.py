"""Score-cost frontier mathematics for comparing routers.

An operating point is one router configuration's (score, cost): score higher is
better (ScienceWorld -100..100, HLE accuracy 0..1), cost lower is better (mean or
total dollars). A router sweep (e.g. over a cost-aversion knob) gives a set of
points; these functions turn such sets into the numbers a comparison needs.

Two curves appear here and are deliberately different:

* the Pareto front keeps every configuration nobody beats on both axes; it is
  what hypervolume measures and what a plot highlights;
* the cost-quality hull is the upper convex boundary of the front, made
  non-decreasing. Every point on it is achievable because a coin flip between
  two configurations, episode by episode, yields the weighted average of their
  (score, cost) in expectation. AIQ and the matched-cost/matched-quality
  comparisons are read off this hull, following RouterBench (Hu et al., 2024).

Invalid arguments (empty point sets, non-finite numbers, inverted ranges) are
caller bugs and raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class OperatingPoint:
    """One configuration's mean score and cost, with optional bootstrap intervals.

    ``params`` records the knob settings that produced the point so a front can be
    traced back to configurations.
    """

    label: str
    score: float
    cost: float
    score_ci: tuple[float, float] | None = None
    cost_ci: tuple[float, float] | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _checked(points: Sequence[OperatingPoint]) -> list[OperatingPoint]:
    points = list(points)
    if not points:
        raise ValueError("no operating points given")
    for p in points:
        if not (np.isfinite(p.score) and np.isfinite(p.cost)):
            raise ValueError(
                f"operating point {p.label!r} has a non-finite score or cost ({p.score}, {p.cost})"
            )
    return points


def pareto_front(points: Sequence[OperatingPoint]) -> list[OperatingPoint]:
    """The points no other point weakly dominates, cheapest first.

    Ties go the strict way: of identical points the first given is kept, and a point
    equal on one axis but worse on the other is dropped, so along the returned list
    both cost and score strictly increase.
    """
    ordered = sorted(_checked(points), key=lambda p: (p.cost, -p.score))
    front: list[OperatingPoint] = []
    for p in ordered:
        if not front or p.score > front[-1].score:
            front.append(p)
    return front


def hypervolume(points: Sequence[OperatingPoint], reference: tuple[float, float]) -> float:
    """Area dominated by the points relative to ``reference = (ref_score, ref_cost)``.

    It is the area of the union of rectangles [cost_i, ref_cost] x [ref_score, score_i]
    over points with score_i > ref_score and cost_i < ref_cost; other points add
    nothing. Unlike AIQ it rewards an isolated good point without crediting the
    randomised mixtures between points, so the two together separate "one lucky
    configuration" from "a good curve". Units are score x dollars, so compare
    hypervolumes only under one shared reference.
    """
    ref_score, ref_cost = reference
    inside = [p for p in _checked(points) if p.score > ref_score and p.cost < ref_cost]
    if not inside:
        return 0.0
    front = pareto_front(inside)
    costs = np.array([p.cost for p in front] + [ref_cost])
    heights = np.array([p.score for p in front]) - ref_score
    # Between consecutive front costs the best reachable score is the cheaper point's.
    return float(np.sum(np.diff(costs) * heights))


def cost_quality_hull(points: Sequence[OperatingPoint]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (costs, scores) of the non-decreasing upper convex hull, cheapest first.

    The curve starts at the cheapest point (its best score), rises along the upper
    convex boundary to the best-scoring point and, beyond it, stays flat: extra spend
    can always be wasted, so a higher budget never lowers the achievable score. Below
    the cheapest point the curve is undefined. Both returned arrays strictly increase.
    """
    front = pareto_front(points)
    hull: list[tuple[float, float]] = []
    for p in front:
        while len(hull) >= 2:
            (c0, s0), (c1, s1) = hull[-2], hull[-1]
            # Drop the middle vertex when it lies on or under the chord to the new point.
            if (c1 - c0) * (p.score - s0) - (s1 - s0) * (p.cost - c0) >= 0:
                hull.pop()
            else:
                break
        hull.append((p.cost, p.score))
    costs, scores = (np.array(axis, dtype=float) for axis in zip(*hull, strict=True))
    return costs, scores


def _hull_score(costs: np.ndarray, scores: np.ndarray, at: np.ndarray) -> np.ndarray:
    # np.interp clamps to the last vertex beyond the right end: exactly the flat extension.
    return np.interp(at, costs, scores)


def aiq(points: Sequence[OperatingPoint], cost_range: tuple[float, float] | None = None) -> float:
    """RouterBench's Average Improvement in Quality: the hull's mean score over a cost range.

    RouterBench (Hu et al., 2024, arXiv:2403.12031) places each router configuration
    in the cost-quality plane, argues that randomly mixing two configurations reaches every
    point of the segment between them (interpolation) and that spending more can never
    be forced to lower quality (flat extrapolation to the right), and so scores a
    router by its non-decreasing convex hull R~(c). AIQ is

        AIQ = 1 / (c_max - c_min) * integral from c_min to c_max of R~(c) dc

    where [c_min, c_max] is a cost range shared by the routers under comparison.
    The integral here is exact (the hull is piecewise linear), not sampled.

    ``cost_range`` defaults to the points' own [min cost, max cost], dominated points
    included; a zero-width range gives the hull's score at that cost, the limit of the
    average. RouterBench's reference code counts a range extending left of a router's
    cheapest point as zero quality; with scores that can be negative that is not
    neutral, so such a range is refused instead: choose c_min no lower than every
    compared router's cheapest point.
    """
    costs, scores = cost_quality_hull(points)
    if cost_range is None:
        # The dearest evaluated point may be dominated, yet it still bounds the range the sweep covered.
        lo, hi = costs[0], max(p.cost for p in points)
    else:
        lo, hi = map(float, cost_range)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ValueError(f"cost_range {cost_range} must be finite with c_min <= c_max")
    if lo < costs[0]:
        raise ValueError(f"cost_range starts at {lo}, below the cheapest operating point's cost {costs[0]}")
    if hi == lo:
        return float(_hull_score(costs, scores, np.array([lo]))[0])
    xs = np.concatenate(([lo], costs[(costs > lo) & (costs < hi)], [hi]))
    ys = _hull_score(costs, scores, xs)
    area = np.sum(np.diff(xs) * (ys[:-1] + ys[1:]) / 2.0)
    return float(area / (hi - lo))


def cost_at_matched_quality(points: Sequence[OperatingPoint], target_score: float) -> float | None:
    """Least cost at which the hull reaches ``target_score``, or None if it never does.

    A target at or below the cheapest point's score costs that point's cost.
    """
    costs, scores = cost_quality_hull(points)
    if target_score > scores[-1]:
        return None
    if target_score <= scores[0]:
        return float(costs[0])
    return float(np.interp(target_score, scores, costs))


def score_at_matched_cost(points: Sequence[OperatingPoint], budget: float) -> float | None:
    """The hull's score at cost ``budget``; None below the cheapest point, flat beyond the dearest."""
    costs, scores = cost_quality_hull(points)
    if budget < costs[0]:
        return None
    return float(_hull_score(costs, scores, np.array([budget]))[0])


def _resample_indices(n: int, n_boot: int, alpha: float, seed: int) -> np.ndarray:
    if n < 1:
        raise ValueError("bootstrap needs at least one episode")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentile_interval(stats: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def _as_episodes(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per episode (1-D), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values")
    return array


def bootstrap_ci(
    values: Any,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    stat: Callable[..., Any] = np.mean,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over per-episode ``values``.

    Episodes are the resampling unit because they are the independent draws; turns
    within an episode are not. All resamples are drawn as one index matrix, so
    ``stat`` must accept ``axis=1`` (numpy reductions do). Same seed, same interval.
    """
    episodes = _as_episodes(values, "values")
    indices = _resample_indices(len(episodes), n_boot, alpha, seed)
    return _percentile_interval(np.asarray(stat(episodes[indices], axis=1)), alpha)


def paired_bootstrap_point(
    scores: Any,
    costs: Any,
    label: str = "",
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> OperatingPoint:
    """An operating point (mean score, mean cost per episode) with bootstrap intervals for both.

    Score and cost are resampled with the same episode indices because they are
    correlated within an episode (long episodes cost more and often score
    differently); independent resampling would misstate the joint uncertainty.
    For total rather than mean dollars multiply cost and its interval by the
    episode count.
    """
    score_arr = _as_episodes(scores, "scores")
    cost_arr = _as_episodes(costs, "costs")
    if score_arr.shape != cost_arr.shape:
        raise ValueError(f"scores and costs differ in episode count: {len(score_arr)} vs {len(cost_arr)}")
    indices = _resample_indices(len(score_arr), n_boot, alpha, seed)
    return OperatingPoint(
        label=label,
        score=float(score_arr.mean()),
        cost=float(cost_arr.mean()),
        score_ci=_percentile_interval(score_arr[indices].mean(axis=1), alpha),
        cost_ci=_percentile_interval(cost_arr[indices].mean(axis=1), alpha),
        params=dict(params or {}),
    )


def summarize_front(
    points: Sequence[OperatingPoint],
    reference: tuple[float, float],
    best_single: OperatingPoint,
) -> dict[str, Any]:
    """The headline comparison of one router's points against the best single model.

    Keys: ``front`` (labels on the Pareto front, cheapest first), ``hypervolume``
    (w.r.t. ``reference``), ``aiq`` (over the points' own cost range),
    ``cost_at_best_single_score`` and ``cost_ratio_vs_best_single`` (what the hull
    pays to match the best single model's score, and that as a fraction of the
    model's own cost; None when unreachable or the model cost nothing),
    ``score_at_best_single_cost`` and ``score_gain_vs_best_single`` (what the hull
    scores on the best single model's budget, and the difference; None when that
    budget is below the router's cheapest point). ``best_single`` is not added to
    ``points``; include it there if mixing with it should count.
    """
    matched_cost = cost_at_matched_quality(points, best_single.score)
    matched_score = score_at_matched_cost(points, best_single.cost)
    return {
        "front": [p.label for p in pareto_front(points)],
        "hypervolume": hypervolume(points, reference),
        "aiq": aiq(points),
        "cost_at_best_single_score": matched_cost,
        "cost_ratio_vs_best_single": (
            None if matched_cost is None or best_single.cost <= 0 else matched_cost / best_single.cost
        ),
        "score_at_best_single_cost": matched_score,
        "score_gain_vs_best_single": None if matched_score is None else matched_score - best_single.score,
    }


# Elements of one resampling chunk (resamples x variations x repeats x columns): bounds the memory.
_CHUNK_ELEMENTS = 2_000_000


def _clusters(groups: Sequence[Any], columns: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Variation groups (each an (R, columns) array, one row per repeat) padded to (V, R_max, columns)."""
    arrays = [np.asarray(g, dtype=float).reshape(-1, columns) for g in groups]
    if not arrays or any(len(a) == 0 for a in arrays):
        raise ValueError(f"{name} needs at least one variation, each with at least one episode")
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError(f"{name} contains non-finite values")
    counts = np.array([len(a) for a in arrays])
    values = np.zeros((len(arrays), counts.max(), columns))
    for i, a in enumerate(arrays):
        values[i, : len(a)] = a
    return values, counts


def _nested_mean(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean over variations of each variation's mean over its repeats, per column."""
    return (values.sum(axis=1) / counts[:, None]).mean(axis=0)


def _cluster_resamples(
    values: np.ndarray, counts: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` means of resampled variations, each drawn variation with all of its repeats (a cluster bootstrap).

    The spread of the variation means already holds the seed-to-seed variance of the repeats (divided by
    their number); resampling the repeats inside each drawn variation as well would count it a second time
    and widen the interval by up to sqrt(2) when, as on the simulated pool, most of an episode's variance
    is within a variation.
    """
    used = np.arange(values.shape[1]) < counts[:, None]
    means = (values * used[..., None]).sum(axis=1) / counts[:, None]  # (variations, columns)
    out = np.empty((n, values.shape[2]))
    step = max(1, _CHUNK_ELEMENTS // (len(means) * values.shape[2]))
    for start in range(0, n, step):
        m = min(step, n - start)
        out[start : start + m] = means[rng.integers(0, len(means), size=(m, len(means)))].mean(axis=1)
    return out


def clustered_bootstrap_point(
    scores: Any,
    costs: Any,
    clusters: Sequence[Any],
    label: str = "",
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    strata: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
) -> OperatingPoint:
    """:func:`paired_bootstrap_point` for episodes that come in clusters (the repeats of one variation).

    Repeats of a variation share its task, so they are not independent draws: the interval
    resamples variations, each with all of its repeats, and the point is the mean over
    variations of each variation's mean (the plain mean when every variation has as many
    repeats). On a stratified split (``strata``, one label per episode, and ``weights``) the
    variations are resampled within their stratum and the point is the weighted mean of the
    strata's means.
    """
    score_arr = _as_episodes(scores, "scores")
    cost_arr = _as_episodes(costs, "costs")
    if not (len(score_arr) == len(cost_arr) == len(clusters)):
        raise ValueError("scores, costs and clusters differ in episode count")
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"n_boot must be >= 1 and alpha in (0, 1), got {n_boot}, {alpha}")
    order = list(dict.fromkeys(clusters))
    both = np.column_stack([score_arr, cost_arr])
    groups = [both[[i for i, c in enumerate(clusters) if c == name]] for name in order]
    rng = np.random.default_rng(seed)
    if weights is None or strata is None:
        values, counts = _clusters(groups, 2, "clustered_bootstrap_point")
        stats = _cluster_resamples(values, counts, n_boot, rng)
        score, cost = _nested_mean(values, counts)
    else:
        label_of = dict(zip(clusters, strata, strict=True))
        layer = _strata(groups, [label_of[name] for name in order], weights, "clustered_bootstrap_point", 2)
        stats = sum(w * _cluster_resamples(values, counts, n_boot, rng) for w, (values, counts) in layer)
        score, cost = sum(w * _nested_mean(values, counts) for w, (values, counts) in layer)
    return OperatingPoint(
        label=label,
        score=float(score),
        cost=float(cost),
        score_ci=_percentile_interval(stats[:, 0], alpha),
        cost_ci=_percentile_interval(stats[:, 1], alpha),
        params=dict(params or {}),
    )


@dataclass(frozen=True)
class PairedComparison:
    """A router against a reference on the same episodes, over seeds, variations and repeats.

    ``score_diff`` is the router's score minus the reference's (mean over seeds of the mean
    over variations of the mean over repeats), ``cost_ratio`` the router's mean cost over the
    reference's, each with its hierarchical bootstrap interval; ``p_le_zero`` is the share of
    resamples whose score difference is at most zero (a one-sided bootstrap p-value for "the
    router is better").
    """

    score_diff: float
    score_diff_ci: tuple[float, float]
    p_le_zero: float
    cost_ratio: float
    cost_ratio_ci: tuple[float, float]
    seeds: int
    variations: int
    episodes: int


def hierarchical_paired_bootstrap(
    seeds: Sequence[Sequence[Any]],
    n_boot: int = 4000,
    alpha: float = 0.05,
    seed: int = 0,
    strata: Sequence[Sequence[str]] | None = None,
    weights: Mapping[str, float] | None = None,
) -> PairedComparison:
    """Resample seed replicates, then variations within each drawn seed (each with all of its repeats),
    of paired episodes.

    ``seeds[s][v]`` holds the repeats of variation ``v`` in seed replicate ``s``, one row per
    repeat: (router score, reference score, router cost, reference cost), both routers on the
    same episode (same task, same episode seed). Resampling seeds carries the training and
    exploration variance between replicates, variations the task variance and, through the
    variation means, the evaluation noise of the repeats; pairing by episode removes what the two
    routers share. With one seed
    and one repeat per variation this is the plain paired episode bootstrap.

    A stratified split (``strata[s][v]`` names variation ``v``'s stratum, its task type, and
    ``weights`` each stratum's share) is resampled within each stratum, and a seed's statistic
    is the weighted mean of its strata's means: the estimand of a split whose task-type mix
    the weights state, whatever the number of variations drawn from each type.
    """
    if not seeds:
        raise ValueError("hierarchical bootstrap needs at least one seed")
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"n_boot must be >= 1 and alpha in (0, 1), got {n_boot}, {alpha}")
    if (strata is None) != (weights is None):
        raise ValueError("strata and weights go together")
    if strata is None:
        layers = [[(1.0, _clusters(groups, 4, f"seeds[{i}]"))] for i, groups in enumerate(seeds)]
    else:
        layers = [
            _strata(groups, labels, weights, f"seeds[{i}]")
            for i, (groups, labels) in enumerate(zip(seeds, strata, strict=True))
        ]
    rng = np.random.default_rng(seed)
    k = len(layers)
    drawn = rng.integers(0, k, size=(n_boot, k))
    stats = np.zeros((n_boot, 4))
    for slot in range(k):
        for s, layer in enumerate(layers):
            rows = np.flatnonzero(drawn[:, slot] == s)
            if rows.size:
                for weight, (values, counts) in layer:
                    stats[rows] += weight * _cluster_resamples(values, counts, rows.size, rng)
    stats /= k
    means = np.mean(
        [
            sum(weight * _nested_mean(values, counts) for weight, (values, counts) in layer)
            for layer in layers
        ],
        axis=0,
    )
    diffs = stats[:, 0] - stats[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = stats[:, 2] / stats[:, 3]
    ratio = float(means[2] / means[3]) if means[3] > 0 else math.nan
    return PairedComparison(
        score_diff=float(means[0] - means[1]),
        score_diff_ci=_percentile_interval(diffs, alpha),
        p_le_zero=float(np.mean(diffs <= 0.0)),
        cost_ratio=ratio,
        cost_ratio_ci=_percentile_interval(ratios, alpha) if math.isfinite(ratio) else (math.nan, math.nan),
        seeds=k,
        variations=sum(len(counts) for layer in layers for _, (_, counts) in layer),
        episodes=int(sum(counts.sum() for layer in layers for _, (_, counts) in layer)),
    )


def _strata(
    groups: Sequence[Any], labels: Sequence[str], weights: Mapping[str, float], name: str, columns: int = 4
) -> list[tuple[float, tuple[np.ndarray, np.ndarray]]]:
    """One seed's variation groups split by stratum, each with its weight renormalised over the strata
    present (a quick subset or an unfinished run may lack some)."""
    present = sorted(set(labels))
    unknown = [t for t in present if t not in weights]
    if unknown:
        raise ValueError(f"{name}: stratum {unknown[0]!r} has no weight")
    total = sum(weights[t] for t in present)
    return [
        (
            weights[t] / total,
            _clusters(
                [g for g, label in zip(groups, labels, strict=True) if label == t], columns, f"{name}[{t}]"
            ),
        )
        for t in present
    ]
