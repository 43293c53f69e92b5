"""HLE's two scores: accuracy with a Wilson 95% interval, and RMS calibration error.

Accuracy counts every question in the denominator (a failed episode is a wrong answer).
Calibration error follows HLE's definition (items sorted by stated confidence, cut into
bins of 100, RMS of confidence minus accuracy per bin, bins weighted by size) with two
deliberate differences from the official script: no bin is skipped (the items left over
after the last full bin join it, so every item counts) and fewer items than one bin give
an explicit "undefined" with the reason instead of an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import HarnessError

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
CALIBRATION_BIN_SIZE = 100


class MetricError(HarnessError):
    """Inputs a metric cannot be computed from (mismatched lengths, confidences outside [0, 1])."""


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int
    value: float | None  # None when there are no questions
    low: float | None
    high: float | None

    def __str__(self) -> str:
        if self.value is None:
            return "accuracy undefined (no questions)"
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] ({self.correct}/{self.total})"


def accuracy(correct: Sequence[bool], z: float = Z_95) -> Accuracy:
    """Share correct with the Wilson score interval, which stays inside [0, 1] and is sane at 0 or n."""
    n = len(correct)
    k = sum(1 for c in correct if c)
    if n == 0:
        return Accuracy(0, 0, None, None, None)
    low, high = wilson_interval(k, n, z)
    return Accuracy(k, n, k / n, low, high)


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class CalibrationError:
    value: float | None  # RMS calibration error in [0, 1]; None when undefined
    bins: int
    items: int
    reason: str | None = None  # why it is undefined

    def __str__(self) -> str:
        if self.value is None:
            return f"calibration error undefined ({self.reason})"
        return f"{100 * self.value:.1f}% over {self.bins} bins of {self.items} items"


def calibration_error(
    confidence: Sequence[float], correct: Sequence[bool], bin_size: int = CALIBRATION_BIN_SIZE
) -> CalibrationError:
    """RMS over bins of ``bin_size`` items sorted by confidence; the remainder joins the last bin."""
    n = len(confidence)
    if len(correct) != n:
        raise MetricError(f"calibration error: {n} confidences but {len(correct)} correctness values")
    if bin_size <= 0:
        raise MetricError(f"calibration error: bin size must be > 0, got {bin_size}")
    outside = [c for c in confidence if not 0.0 <= c <= 1.0]
    if outside:
        raise MetricError(f"calibration error: confidence {outside[0]!r} is outside [0, 1]")
    if n < bin_size:
        return CalibrationError(None, 0, n, f"needs at least {bin_size} items, got {n}")
    order = sorted(range(n), key=lambda i: confidence[i])  # stable: ties keep input order
    bins = n // bin_size
    total = 0.0
    for b in range(bins):
        members = order[b * bin_size : n if b == bins - 1 else (b + 1) * bin_size]
        mean_confidence = sum(confidence[i] for i in members) / len(members)
        mean_correct = sum(1 for i in members if correct[i]) / len(members)
        total += len(members) / n * (mean_confidence - mean_correct) ** 2
    return CalibrationError(math.sqrt(total), bins, n)
