"""Frontier mathematics checked against small fronts worked out by hand.

Points are written P(score, cost); the arithmetic behind every expected number is
in the comment next to it.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.frontier import (
    OperatingPoint,
    aiq,
    bootstrap_ci,
    cost_at_matched_quality,
    cost_quality_hull,
    hypervolume,
    paired_bootstrap_point,
    pareto_front,
    score_at_matched_cost,
    summarize_front,
)


def P(score: float, cost: float, label: str = "") -> OperatingPoint:
    return OperatingPoint(label=label or f"s{score}c{cost}", score=score, cost=cost)


def pairs(points: list[OperatingPoint]) -> list[tuple[float, float]]:
    return [(p.score, p.cost) for p in points]


# A concave three-vertex hull used by several tests: (cost, score) = (1,2), (2,6), (4,8);
# slopes 4 then 1, so every point is a hull vertex.
CONCAVE = [P(2, 1, "A"), P(6, 2, "B"), P(8, 4, "C")]
# (2,1) at cost 2 is Pareto-optimal but lies under the chord from (0,0) to (4,4),
# whose height at cost 2 is 2 > 1, so the hull skips it.
NON_CONVEX = [P(0, 0, "lo"), P(1, 2, "dip"), P(4, 4, "hi")]


# --- pareto_front ------------------------------------------------------------


def test_pareto_front_drops_dominated_points_and_sorts_by_cost():
    # (score 2, cost 3) is beaten by (score 3, cost 2) on both axes.
    points = [P(2, 3), P(3, 2), P(1, 1)]
    assert pairs(pareto_front(points)) == [(1, 1), (3, 2)]


def test_pareto_front_keeps_one_of_identical_points():
    front = pareto_front([P(5, 1, "first"), P(5, 1, "second")])
    assert [p.label for p in front] == ["first"]


def test_pareto_front_drops_weakly_dominated_points():
    # Same cost, lower score: dropped. Same score, higher cost: dropped.
    points = [P(4, 2, "keep"), P(3, 2, "same cost worse"), P(4, 3, "same score dearer")]
    assert [p.label for p in pareto_front(points)] == ["keep"]


def test_pareto_front_rejects_empty_and_non_finite_input():
    with pytest.raises(ValueError, match="no operating points"):
        pareto_front([])
    with pytest.raises(ValueError, match="'bad'"):
        pareto_front([P(1, 1), OperatingPoint("bad", float("nan"), 1.0)])


@pytest.mark.parametrize("seed", range(40))
def test_pareto_front_properties_on_random_points(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    # A coarse integer grid makes ties on one or both axes common.
    points = [P(float(s), float(c)) for s, c in rng.integers(0, 8, size=(n, 2))]
    front = pareto_front(points)

    def weakly_dominates(a: OperatingPoint, b: OperatingPoint) -> bool:
        return a.score >= b.score and a.cost <= b.cost

    for i, a in enumerate(front):
        for j, b in enumerate(front):
            if i != j:
                assert not weakly_dominates(a, b), (a, b)
    for p in points:
        assert any(weakly_dominates(f, p) for f in front), p
    costs = [p.cost for p in front]
    assert costs == sorted(costs)


# --- hypervolume -------------------------------------------------------------

# Staircase (cost, score) = (1,1), (2,3), (4,4) with reference (score 0, cost 5).
# Vertical slabs: cost [1,2) height 1 -> 1; [2,4) height 3 -> 6; [4,5) height 4 -> 4; total 11.
# Horizontal check: score [0,1) width 5-1=4 -> 4; [1,3) width 5-2=3 -> 6; [3,4) width 1 -> 1; total 11.
STAIRCASE = [P(1, 1), P(3, 2), P(4, 4)]


def test_hypervolume_of_a_three_point_staircase():
    assert hypervolume(STAIRCASE, reference=(0, 5)) == pytest.approx(11.0)


def test_hypervolume_ignores_dominated_points_and_points_beyond_the_reference():
    extra = [
        P(2, 3),  # dominated by (3,2): inside the region already
        P(100, 6),  # cost beyond ref_cost 5
        P(100, 5),  # cost exactly ref_cost: zero-width rectangle
        P(-1, 0.5),  # score below ref_score 0
        P(0, 0.5),  # score exactly ref_score: zero-height rectangle
    ]
    assert hypervolume(STAIRCASE + extra, reference=(0, 5)) == pytest.approx(11.0)


def test_hypervolume_with_a_negative_reference_score():
    # ScienceWorld-style scores: one point (score -20, cost 1), reference (-100, 3):
    # rectangle width 3-1=2, height -20-(-100)=80 -> 160.
    assert hypervolume([P(-20, 1)], reference=(-100, 3)) == pytest.approx(160.0)


def test_hypervolume_is_zero_when_nothing_beats_the_reference():
    assert hypervolume([P(5, 10), P(-5, 1)], reference=(0, 5)) == 0.0


# --- hull and AIQ ------------------------------------------------------------


def test_hull_skips_a_point_under_the_chord_and_dominated_points():
    costs, scores = cost_quality_hull(NON_CONVEX + [P(3, 6)])  # (cost 6, score 3) dominated by (4,4)
    assert costs.tolist() == [0, 4]
    assert scores.tolist() == [0, 4]


def test_aiq_of_a_single_point_is_its_score():
    # Zero-width range: the average is the hull's value there.
    assert aiq([P(5, 2)]) == pytest.approx(5.0)
    # Flat to the right of the only point: mean of 5 over [2, 4] is 5.
    assert aiq([P(5, 2)], cost_range=(2, 4)) == pytest.approx(5.0)


def test_aiq_of_two_points_is_a_trapezoid():
    # (cost 1, score 1) to (cost 3, score 3): area (1+3)/2 * 2 = 4, over width 2 -> 2.
    two = [P(1, 1), P(3, 3)]
    assert aiq(two) == pytest.approx(2.0)
    # Over [1, 5]: trapezoid 4 plus flat 3 * 2 = 6 -> 10, over width 4 -> 2.5.
    assert aiq(two, cost_range=(1, 5)) == pytest.approx(2.5)


def test_aiq_uses_the_hull_not_the_dip():
    # Hull is the line score = cost on [0, 4]: area 4*4/2 = 8, over width 4 -> 2.
    # Joining the dip instead would give (0+1)/2*2 + (1+4)/2*2 = 6 -> 1.5.
    assert aiq(NON_CONVEX) == pytest.approx(2.0)
    # A dominated dearer point widens the default range to [0, 6] and is flat there:
    # 8 + 4*2 = 16, over width 6 -> 8/3.
    assert aiq(NON_CONVEX + [P(3, 6)]) == pytest.approx(16 / 6)


def test_aiq_of_a_concave_hull_and_a_sub_range():
    # (1,2)->(2,6): (2+6)/2*1 = 4; (2,6)->(4,8): (6+8)/2*2 = 14; total 18 over width 3 -> 6.
    assert aiq(CONCAVE) == pytest.approx(6.0)
    # Over [1.5, 3]: hull is 4 at 1.5, 6 at 2, 7 at 3; (4+6)/2*0.5 + (6+7)/2*1 = 2.5 + 6.5 = 9,
    # over width 1.5 -> 6.
    assert aiq(CONCAVE, cost_range=(1.5, 3)) == pytest.approx(6.0)


def test_aiq_refuses_a_range_left_of_the_cheapest_point_or_inverted():
    with pytest.raises(ValueError, match="below the cheapest"):
        aiq(CONCAVE, cost_range=(0.5, 4))
    with pytest.raises(ValueError, match="c_min <= c_max"):
        aiq(CONCAVE, cost_range=(3, 2))


# --- matched quality / matched cost -----------------------------------------


def test_cost_at_matched_quality_interpolates_between_hull_vertices():
    # Score 7 lies between (2,6) and (4,8): cost 2 + (7-6)/(8-6)*2 = 3.
    assert cost_at_matched_quality(CONCAVE, 7) == pytest.approx(3.0)
    # Score 4 between (1,2) and (2,6): cost 1 + (4-2)/(6-2)*1 = 1.5.
    assert cost_at_matched_quality(CONCAVE, 4) == pytest.approx(1.5)
    assert cost_at_matched_quality(CONCAVE, 8) == pytest.approx(4.0)
    # Already met by the cheapest point.
    assert cost_at_matched_quality(CONCAVE, 0) == pytest.approx(1.0)
    # Mixing lo and hi reaches score 1 at cost 1, cheaper than the dip point's cost 2.
    assert cost_at_matched_quality(NON_CONVEX, 1) == pytest.approx(1.0)


def test_cost_at_matched_quality_is_none_when_unreachable():
    assert cost_at_matched_quality(CONCAVE, 8.01) is None


def test_score_at_matched_cost():
    # Cost 1.5 between (1,2) and (2,6): 2 + 0.5*4 = 4. Cost 3: 6 + 1*1 = 7.
    assert score_at_matched_cost(CONCAVE, 1.5) == pytest.approx(4.0)
    assert score_at_matched_cost(CONCAVE, 3) == pytest.approx(7.0)
    assert score_at_matched_cost(CONCAVE, 1) == pytest.approx(2.0)
    # Flat beyond the dearest point.
    assert score_at_matched_cost(CONCAVE, 10) == pytest.approx(8.0)
    assert score_at_matched_cost(CONCAVE, 0.99) is None


# --- bootstrap ---------------------------------------------------------------


def test_bootstrap_ci_is_deterministic_under_a_seed_and_contains_the_mean():
    values = np.random.default_rng(1).normal(10.0, 3.0, size=200)
    ci = bootstrap_ci(values, seed=7)
    assert ci == bootstrap_ci(values, seed=7)
    assert ci != bootstrap_ci(values, seed=8)
    assert ci[0] < values.mean() < ci[1]
    # Standard error 3/sqrt(200) ~ 0.21, so a 95% interval is ~0.83 wide.
    assert 0.6 < ci[1] - ci[0] < 1.1


def test_bootstrap_ci_narrows_with_more_data():
    rng = np.random.default_rng(2)
    small = bootstrap_ci(rng.normal(0.0, 1.0, size=30))
    large = bootstrap_ci(rng.normal(0.0, 1.0, size=3000))
    # Width scales like 1/sqrt(n): a 10x smaller standard error.
    assert (large[1] - large[0]) < (small[1] - small[0]) / 5


def test_bootstrap_ci_of_constant_values_and_other_statistics():
    assert bootstrap_ci([4.0] * 10) == (4.0, 4.0)
    lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 100.0, 5.0], stat=np.median)
    assert 1.0 <= lo <= 3.0 <= hi <= 100.0


def test_bootstrap_ci_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one episode"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([1.0, 2.0], alpha=1.5)
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci([[1.0, 2.0]])


def test_paired_bootstrap_point_resamples_score_and_cost_together():
    rng = np.random.default_rng(3)
    scores = rng.uniform(-100, 100, size=150)
    costs = 0.01 * (scores + 100)  # perfectly correlated: cost = 0.01*score + 1
    point = paired_bootstrap_point(scores, costs, label="r", seed=5, params={"lam": 0.3})
    assert point.label == "r" and point.params == {"lam": 0.3}
    assert point.score == pytest.approx(scores.mean())
    assert point.cost == pytest.approx(costs.mean())
    # Same resamples for both: the cost interval is the score interval mapped through
    # the same affine function; independent resamples would break this equality.
    assert point.cost_ci == pytest.approx(tuple(0.01 * (s + 100) for s in point.score_ci))
    # And it matches the single-array bootstrap with the same seed.
    assert point.score_ci == pytest.approx(bootstrap_ci(scores, seed=5))


def test_paired_bootstrap_point_requires_matching_lengths():
    with pytest.raises(ValueError, match="episode count"):
        paired_bootstrap_point([1.0, 2.0], [0.1])


# --- summary -----------------------------------------------------------------


def test_summarize_front_against_the_best_single_model():
    points = CONCAVE + [P(5, 3, "D")]  # D dominated by B (score 6, cost 2)
    summary = summarize_front(points, reference=(0, 6), best_single=P(7, 5, "best"))
    assert summary["front"] == ["A", "B", "C"]
    # Slabs: cost [1,2) h 2 -> 2; [2,4) h 6 -> 12; [4,6) h 8 -> 16; total 30.
    assert summary["hypervolume"] == pytest.approx(30.0)
    assert summary["aiq"] == pytest.approx(6.0)  # as in test_aiq_of_a_concave_hull
    # Score 7 is reached at cost 3, i.e. 3/5 = 0.6 of the best single model's cost.
    assert summary["cost_at_best_single_score"] == pytest.approx(3.0)
    assert summary["cost_ratio_vs_best_single"] == pytest.approx(0.6)
    # On the best single model's budget 5 the hull is flat at 8: one point better.
    assert summary["score_at_best_single_cost"] == pytest.approx(8.0)
    assert summary["score_gain_vs_best_single"] == pytest.approx(1.0)


def test_summarize_front_reports_none_when_the_router_cannot_match():
    # Score 9 is out of reach; budget 0.5 is below the cheapest point (cost 1).
    summary = summarize_front(CONCAVE, reference=(0, 6), best_single=P(9, 0.5))
    assert summary["cost_at_best_single_score"] is None
    assert summary["cost_ratio_vs_best_single"] is None
    assert summary["score_at_best_single_cost"] is None
    assert summary["score_gain_vs_best_single"] is None
