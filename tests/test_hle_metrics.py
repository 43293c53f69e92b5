"""Accuracy intervals and calibration error against values computed by hand."""

from __future__ import annotations

import math

import pytest

from harness.benchmarks.hle.metrics import MetricError, accuracy, calibration_error, wilson_interval


def test_wilson_interval_matches_hand_computation() -> None:
    # 7/10, z = 1.96: centre (0.7 + 0.19208) / 1.38415 = 0.64452, half 1.96 * sqrt(0.021 + 0.0096040) / 1.38415
    low, high = wilson_interval(7, 10, z=1.96)
    assert low == pytest.approx(0.39677, abs=1e-5)
    assert high == pytest.approx(0.89222, abs=1e-5)


def test_wilson_interval_at_the_edges() -> None:
    # k = 0: upper bound z^2 / (n + z^2) = 3.8416 / 13.8416
    assert wilson_interval(0, 10, z=1.96) == pytest.approx((0.0, 0.27754), abs=1e-5)
    assert wilson_interval(10, 10, z=1.96) == pytest.approx((0.72246, 1.0), abs=1e-5)


def test_accuracy_counts_all_questions() -> None:
    result = accuracy([True] * 7 + [False] * 3)
    assert (result.correct, result.total, result.value) == (7, 10, 0.7)
    assert result.low == pytest.approx(0.39677, abs=2e-5) and result.high == pytest.approx(0.89222, abs=2e-5)
    assert str(result) == "70.0% [39.7, 89.2] (7/10)"
    empty = accuracy([])
    assert empty.value is None and empty.low is None and str(empty) == "accuracy undefined (no questions)"


def test_calibration_error_two_bins_by_hand() -> None:
    # sorted by confidence: bin 1 = 100 items at 0.2 with 20 right (gap 0), bin 2 = 100 at 0.9 with 60 right (gap 0.3)
    confidence = [0.9] * 100 + [0.2] * 100
    correct = [i < 60 for i in range(100)] + [i < 20 for i in range(100)]
    result = calibration_error(confidence, correct)
    assert result.bins == 2 and result.items == 200 and result.reason is None
    assert result.value == pytest.approx(math.sqrt(0.5 * 0.3**2))


def test_calibration_error_remainder_joins_the_last_bin() -> None:
    # 250 items -> 2 bins: the lowest 100 (confidence 0.5, 50 right: gap 0) and the other 150:
    # 100 at 1.0 all wrong and 50 at 0.8 all right, mean confidence 0.9333, accuracy 0.3333, gap 0.6
    confidence = [0.5] * 100 + [1.0] * 100 + [0.8] * 50
    correct = [i % 2 == 0 for i in range(100)] + [False] * 100 + [True] * 50
    result = calibration_error(confidence, correct)
    assert result.bins == 2
    assert result.value == pytest.approx(math.sqrt(150 / 250 * 0.6**2))
    assert str(result) == f"{100 * result.value:.1f}% over 2 bins of 250 items"


def test_perfectly_calibrated_is_zero_and_sorting_matters() -> None:
    confidence = [0.0] * 100 + [1.0] * 100
    correct = [False] * 100 + [True] * 100
    assert calibration_error(confidence, correct).value == 0.0
    # the same outcomes against reversed confidence: both bins off by 1
    assert calibration_error(confidence[::-1], correct).value == pytest.approx(1.0)


def test_calibration_error_is_undefined_below_one_bin() -> None:
    result = calibration_error([0.5] * 99, [True] * 99)
    assert result.value is None and result.bins == 0
    assert result.reason == "needs at least 100 items, got 99"
    assert str(result) == "calibration error undefined (needs at least 100 items, got 99)"
    assert calibration_error([], []).value is None
    assert calibration_error([0.5] * 3, [True, False, True], bin_size=2).value == pytest.approx(
        math.sqrt((0.5 - 2 / 3) ** 2)
    )


def test_calibration_error_rejects_bad_input() -> None:
    with pytest.raises(MetricError, match="3 confidences but 2"):
        calibration_error([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(MetricError, match="outside"):
        calibration_error([85.0], [True], bin_size=1)
