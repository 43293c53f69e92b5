"""The paper's HLE table for a benchmark report: accuracy, total cost, OOD accuracy and cost, deltas to the
best single model, calibration error from the stated confidence, and the judge's cost in a column of its own."""

from __future__ import annotations

import math

import pandas as pd

from harness.benchmarks.hle.metrics import accuracy, calibration_error


def _split_stats(episodes: pd.DataFrame, point: str, split: str) -> dict | None:
    rows = episodes[(episodes["point"] == point) & (episodes["split"] == split)]
    if rows.empty:
        return None
    finished = rows[rows["status"] != "failed"]
    # Accuracy counts every question: a failed episode is a wrong answer.
    correct = [bool(s) and s > 0.5 for s in rows["score"].fillna(0.0)]
    details = [
        d if isinstance(d, dict) else {} for d in finished.get("score_details", pd.Series(dtype=object))
    ]
    confidence = [d.get("confidence") for d in details]
    judged = [(c, bool(d.get("correct"))) for c, d in zip(confidence, details, strict=True) if c is not None]
    calib = calibration_error([c for c, _ in judged], [k for _, k in judged]) if judged else None
    judge_cost = float(finished["judge_cost"].fillna(0.0).sum()) if "judge_cost" in finished else 0.0
    return {
        "acc": accuracy(correct),
        "total": float(finished["cost"].sum()),
        "calibration": calib,
        "judge": judge_cost,
    }


def _pct(value: float | None) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"
    )


def hle_section(episodes: pd.DataFrame, points: list[str], single: str | None) -> list[str]:
    """Rows for ``points`` in the paper's layout; deltas against ``single`` (the best single model on test_id)."""
    stats = {p: {s: _split_stats(episodes, p, s) for s in ("test_id", "test_ood")} for p in points}
    base = stats.get(single, {}).get("test_id") if single else None
    header = [
        "router", "test acc % [95% CI]", "test $ total", "OOD acc % [95% CI]", "OOD $ total",
        "Δ acc vs best single", "cost vs best single", "calibration error % (test)", "judge $ (test+OOD)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in points:
        test, ood = stats[point]["test_id"], stats[point]["test_ood"]
        cells = [f"`{point}`"]
        for split in (test, ood):
            if split is None:
                cells += ["n/a", "n/a"]
                continue
            acc = split["acc"]
            cells.append(f"{_pct(acc.value)} [{_pct(acc.low)}, {_pct(acc.high)}]")
            cells.append(f"{split['total']:.2f}")
        if base is not None and test is not None and base["acc"].value is not None:
            cells.append(f"{100 * (test['acc'].value - base['acc'].value):+.1f}")
            cells.append(f"{test['total'] / base['total']:.0%}" if base["total"] else "n/a")
        else:
            cells += ["", ""]
        calib = test["calibration"] if test else None
        cells.append(_pct(calib.value) if calib is not None and calib.value is not None else "undefined")
        cells.append(f"{sum(s['judge'] for s in (test, ood) if s):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines
