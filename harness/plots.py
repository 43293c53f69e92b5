"""Figures of a benchmark: the score-cost plane and which model each router pays for.

Figures are built as bare ``matplotlib.figure.Figure`` objects, never through
``pyplot``: they render with the Agg canvas, need no display, leave no global
figure registry behind in long processes, and can be handed to MLflow as they are.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.errors import TrajectoryError
from harness.frontier import pareto_front
from harness.results import episodes, is_learned, operating_points
from harness.trajectory import RunStore

FIXED_MARKERS = {"single": "s", "random": "X", "round-robin": "P", "heuristic": "D"}


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(tmp, dpi=130)
    tmp.replace(path)
    return path


def _error_bars(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        "xerr": np.clip([rows["mean_cost"] - rows["cost_lo"], rows["cost_hi"] - rows["mean_cost"]], 0, None),
        "yerr": np.clip(
            [rows["mean_score"] - rows["score_lo"], rows["score_hi"] - rows["mean_score"]], 0, None
        ),
    }


def pareto_figure(points: pd.DataFrame, split: str, title: str | None = None) -> Figure:
    """All routers of one split in the score-cost plane, with 95% intervals on both axes.

    Fixed routers are single markers; each learned family's lambda sweep is one
    connected line in lambda order; points on the overall Pareto front are ringed.
    """
    rows = points[(points["split"] == split) & (points["n"] > 0)]
    if rows.empty:
        raise TrajectoryError(f"no finished operating points in split {split!r}")
    figure = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = figure.add_subplot()
    colors = iter(f"C{i}" for i in range(100))
    labels: list[tuple[str, float, float, int]] = []
    for family, group in rows[~is_learned(rows)].groupby("family", sort=True):
        color = "0.35" if family == "single" else next(colors)
        ax.errorbar(
            group["mean_cost"],
            group["mean_score"],
            **_error_bars(group),
            fmt=FIXED_MARKERS.get(family, "o"),
            color=color,
            ecolor=color,
            elinewidth=0.8,
            capsize=2,
            label=family,
        )
        labels += [(row.label, row.mean_cost, row.mean_score, 7) for row in group.itertuples()]
    for family, group in rows[is_learned(rows)].groupby("family", sort=True):
        group = group.sort_values("lam")
        ax.errorbar(
            group["mean_cost"],
            group["mean_score"],
            **_error_bars(group),
            fmt="o-",
            color=next(colors),
            elinewidth=0.8,
            capsize=2,
            label=f"{family} (λ sweep)",
        )
        labels += [(f"λ={row.lam:g}", row.mean_cost, row.mean_score, 6) for row in group.itertuples()]
    front = pareto_front(operating_points(rows))
    ax.plot(
        [p.cost for p in front],
        [p.score for p in front],
        linestyle="--",
        color="black",
        linewidth=0.8,
        marker="o",
        markersize=13,
        markerfacecolor="none",
        markeredgecolor="black",
        label="Pareto front",
    )
    costs = rows["mean_cost"].to_numpy()
    if (costs > 0).all():
        ax.set_xscale("log")
    else:  # a free router cannot sit on a log axis; stay linear up to the cheapest paid point
        paid = costs[costs > 0]
        ax.set_xscale("symlog", linthresh=float(paid.min()) if paid.size else 1e-4)
    ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
    ax.set_xlabel("mean cost per episode ($)")
    ax.set_ylabel("mean score")
    ax.set_title(title or f"Score vs cost, {split}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    _place_labels(figure, ax, labels)
    return figure


# Where a point's label may go, in points from the point, nearest first: (dx, dy, alignment).
LABEL_SPOTS = [
    (dx * r, dy * r, ha)
    for r in (1, 2, 3, 4)
    for dx, dy, ha in ((5, 4, "left"), (5, -11, "left"), (-5, 4, "right"), (-5, -11, "right"),
                       (0, 9, "center"), (0, -16, "center"))
]  # fmt: skip


def _place_labels(figure: Figure, ax, labels: list[tuple[str, float, float, int]]) -> None:
    """Annotate each point with its label at the nearest spot that overlaps no other label, no marker
    and stays inside the axes (the least-overlapping spot if none is free), with a leader line when
    the label sits away from its point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw_without_rendering()  # settles the layout, so display coordinates are final
    frame = ax.get_window_extent(renderer)
    markers = [ax.transData.transform((x, y)) for _, x, y, _ in labels]
    radius = 5.0 * figure.dpi / 72  # a marker's half width in pixels
    placed: list[Any] = []

    def overlap(box) -> float:
        area = 0.0
        for other in placed:
            w = min(box.x1, other.x1) - max(box.x0, other.x0)
            h = min(box.y1, other.y1) - max(box.y0, other.y0)
            area += max(w, 0) * max(h, 0)
        for mx, my in markers:
            w = min(box.x1, mx + radius) - max(box.x0, mx - radius)
            h = min(box.y1, my + radius) - max(box.y0, my - radius)
            area += max(w, 0) * max(h, 0)
        outside = box.width * box.height - max(min(box.x1, frame.x1) - max(box.x0, frame.x0), 0) * max(
            min(box.y1, frame.y1) - max(box.y0, frame.y0), 0
        )
        return area + 10 * outside

    for text, x, y, size in labels:
        best = None
        for dx, dy, ha in LABEL_SPOTS:
            note = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=size, ha=ha
            )
            box = note.get_window_extent(renderer)
            cost = overlap(box)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, note, box, (dx, dy))
            else:
                note.remove()
            if cost == 0:
                break
        _, note, box, (dx, dy) = best
        if abs(dx) > 5 or abs(dy) > 16:
            note.arrow_patch = None
            note.remove()
            note = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=size, ha=note.get_ha(),
                arrowprops={"arrowstyle": "-", "color": "0.5", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 3},
            )  # fmt: skip
        placed.append(box)


def pareto_plot(points: pd.DataFrame, split: str, path: Path, title: str | None = None) -> Path:
    return _save(pareto_figure(points, split, title), path)


def _pool_order(run_dir: str) -> list[str]:
    """The pool's models cheapest first, as priced in the run's config snapshot."""
    cards = RunStore(Path(run_dir)).config().get("price_cards", {})
    return sorted(cards, key=lambda m: (cards[m]["input_per_mtok"] + cards[m]["output_per_mtok"], m))


def usage_table(
    source: Path | pd.DataFrame, point: str, split: str = "test_id", measure: str = "dollars"
) -> pd.DataFrame:
    """Share of a router's dollars (or turns) going to each model, one row per task type.

    ``source`` is a benchmark directory or the frame of :func:`harness.results.episodes`.
    Dollar shares come from the episode records' ``cost_by_model``; turn shares are
    counted from the turn files. Failed episodes are left out.
    """
    if measure not in ("dollars", "turns"):
        raise ValueError(f"measure must be 'dollars' or 'turns', got {measure!r}")
    frame = source if isinstance(source, pd.DataFrame) else episodes(Path(source))
    rows = frame[(frame["point"] == point) & (frame["split"] == split) & (frame["status"] != "failed")]
    if rows.empty:
        raise TrajectoryError(f"no finished episodes of point {point!r} in split {split!r}")
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for record in rows.itertuples():
        if measure == "dollars":
            by_model = record.cost_by_model if isinstance(record.cost_by_model, dict) else {}
            for model, dollars in by_model.items():
                totals[record.task][model] += dollars
        else:
            for turn in RunStore(Path(record.run_dir)).turns(record.episode):
                totals[record.task][turn.model] += 1
    models = _pool_order(rows["run_dir"].iloc[0])
    models += sorted({m for by_model in totals.values() for m in by_model} - set(models))
    table = pd.DataFrame(
        [[totals[task].get(m, 0.0) for m in models] for task in sorted(totals)],
        index=sorted(totals),
        columns=models,
    )
    sums = table.sum(axis=1).replace(0.0, math.nan)
    return table.div(sums, axis=0).fillna(0.0)


def usage_figure(
    source: Path | pd.DataFrame, point: str, split: str = "test_id", measure: str = "dollars"
) -> Figure:
    """Heatmap of :func:`usage_table`: the router's specialization by task type."""
    table = usage_table(source, point, split, measure)
    figure = Figure(figsize=(1.2 + 0.9 * len(table.columns), 1.4 + 0.32 * len(table)), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(table.to_numpy(), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(table)), table.index, fontsize=7)
    for (i, j), share in np.ndenumerate(table.to_numpy()):
        if share >= 0.005:
            ax.text(
                j,
                i,
                f"{share:.0%}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if share > 0.6 else "black",
            )
    figure.colorbar(image, ax=ax, label=f"share of {measure}")
    ax.set_title(f"{point}: share of {measure} per model ({split})", fontsize=9)
    return figure


def usage_heatmap(
    source: Path | pd.DataFrame, point: str, path: Path, split: str = "test_id", measure: str = "dollars"
) -> Path:
    return _save(usage_figure(source, point, split, measure), path)
