"""The calibration fit's arithmetic: logit shifts keep the specialisation pattern, bracketing converges."""

import math

import pytest

from harness.calibration import _next_delta, _shifted, targets


def test_logit_shift_keeps_the_order_of_topics():
    skill = {"default": 0.3, "biology": 0.9}
    up, down = _shifted(skill, 0.5), _shifted(skill, -0.5)
    assert up["default"] > 0.3 and down["biology"] < 0.9
    assert up["biology"] > up["default"] and down["biology"] > down["default"]
    # logit(0.3) + 0.5 = -0.347 -> sigmoid = 0.4141
    assert up["default"] == pytest.approx(1 / (1 + math.exp(-(math.log(0.3 / 0.7) + 0.5))), abs=1e-4)


def test_next_delta_steps_towards_the_target_then_interpolates_inside_the_bracket():
    assert _next_delta([(0.0, 70.0)], 48.4) == -0.75  # too high: step down
    assert _next_delta([(0.0, 20.0)], 48.4) == 0.75  # too low: step up
    # bracket (-1, 30) .. (0, 70): t = (48.4 - 30) / 40 = 0.46 -> -1 + 0.46 = -0.54
    assert _next_delta([(0.0, 70.0), (-1.0, 30.0)], 48.4) == pytest.approx(-0.54)
    # t is kept in [0.2, 0.8] so a jumpy score cannot pin the search to one end
    # bracket (-1, 48) .. (0, 70): t = 0.4 / 22 = 0.018 -> 0.2 -> -1 + 0.2 = -0.8
    assert _next_delta([(0.0, 70.0), (-1.0, 48.0)], 48.4) == pytest.approx(-0.8)
    # both above the target: no bracket yet, step down from the lowest shift tried
    assert _next_delta([(0.0, 70.0), (-1.0, 69.0)], 48.4) == pytest.approx(-1.75)


def test_targets_are_per_episode_dollars_from_the_pool_file():
    goal, tolerance = targets("paper6")
    assert goal["gpt-5"] == pytest.approx((48.4, 13.9 / 74))
    assert tolerance == {"score_points": 5.0, "cost_fraction": 0.25}
