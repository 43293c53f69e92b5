"""Replay against live: each learned operating point's offline estimate beside its live result.

A benchmark results directory (:mod:`harness.layout`) holds, per evaluation split, one run
directory per operating point. For every learned point, its router is evaluated offline on
the benchmark's logged data and the estimate with its interval is put beside the point's
live mean over its own episodes; the table says how often the live value falls inside the
offline interval. Two sources of logged data, reported separately:

* ``fixed``: the fixed routers' runs on the same split (the same task instances the point
  was run on), as one sample from their balance-heuristic mixture
  (:func:`harness.replay.evaluate.mixture_episodes`);
* ``data``: the exploration runs under ``data/`` (the training split: other task instances
  than the live episodes, so agreement there also asks the estimate to transfer), with their
  logged propensities.

An untrusted estimate's interval is widened to the whole range the logs speak to (see
:mod:`harness.replay.ope`), so "inside" is then close to automatic; the table counts inside
among trusted estimates separately. The direct method's bootstrap interval holds the value
model fixed, so it excludes the model's own error: when every episode starts from the same
state features it is a point.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.config import RouterSpec
from harness.errors import ConfigError
from harness.layout import RUNS_DIR, ResultsLayout
from harness.pool import load_pool
from harness.replay.evaluate import LoggedData, evaluate_router, load_logs, logging_episodes
from harness.replay.ope import Estimate, OPEConfig
from harness.replay.policies import StateVectors
from harness.trajectory import RunStore
from routers import router_class

SOURCES = ("fixed", "data")
DEFAULT_ESTIMATORS = ("dm", "wpdis", "dr")


@dataclass(frozen=True)
class OperatingPoint:
    split: str
    label: str
    path: Path
    router: RouterSpec
    pool: str
    learned: bool


def _is_learned(name: str) -> bool:
    try:
        cls = router_class(name)
    except ConfigError:
        return False
    return bool(cls.trainable) or name == "beta-mix"


def operating_points(bench_dir: Path) -> list[OperatingPoint]:
    """Every run directory under runs/<split>/ with the router its config names."""
    if not (Path(bench_dir) / RUNS_DIR).is_dir():
        raise ConfigError(f"{bench_dir} is not a benchmark results directory (no {RUNS_DIR}/)")
    points = []
    for found in ResultsLayout(Path(bench_dir)).point_runs():
        run = RunStore(found.path).config().get("run") or {}
        router = run.get("router") or {}
        if not router.get("name"):
            continue
        spec = RouterSpec(router["name"], dict(router.get("params") or {}))
        points.append(
            OperatingPoint(
                found.split, found.point, found.path, spec, run.get("pool"), _is_learned(spec.name)
            )
        )
    return points


@dataclass(frozen=True)
class Live:
    episodes: int
    score: float
    cost: float  # model dollars per episode (what the estimators estimate)


def live_result(run_dir: Path) -> Live:
    finished = [e for e in RunStore(run_dir).episodes() if not e.failed and e.score is not None]
    if not finished:
        return Live(0, math.nan, math.nan)
    cost = [float(e.model_cost) for e in finished]
    return Live(len(finished), float(np.mean([e.score for e in finished])), float(np.mean(cost)))


@dataclass(frozen=True)
class AgreementRow:
    point: OperatingPoint
    source: str
    logging: str
    estimator: str
    score: Estimate
    cost: Estimate
    live: Live
    agreement: float  # the router's probability of the logged model, mean over logged states

    @property
    def score_inside(self) -> bool:
        return self.score.low <= self.live.score <= self.score.high

    @property
    def cost_inside(self) -> bool:
        return self.cost.low <= self.live.cost <= self.cost.high


def _sources(
    bench_dir: Path, points: list[OperatingPoint], split: str, wanted: Sequence[str]
) -> dict[str, LoggedData]:
    sources = {}
    if "fixed" in wanted:
        fixed = [
            p.path for p in points if p.split == split and not p.learned and live_result(p.path).episodes
        ]
        if fixed:
            sources["fixed"] = load_logs(fixed)
    if "data" in wanted:
        data = ResultsLayout(Path(bench_dir)).data_runs()
        if data:
            sources["data"] = load_logs(data)
    return sources


def replay_agreement(
    bench_dir: Path,
    estimators: Sequence[str] = DEFAULT_ESTIMATORS,
    sources: Sequence[str] = SOURCES,
    config: OPEConfig | None = None,
) -> list[AgreementRow]:
    """Offline estimate vs live result for every learned point with finished episodes, per source and estimator."""
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ConfigError(f"replay source {unknown[0]!r} is not one of {', '.join(SOURCES)}")
    points = operating_points(bench_dir)
    learned = [p for p in points if p.learned and live_result(p.path).episodes]
    if not learned:
        raise ConfigError(f"{bench_dir} has no learned operating point with finished episodes")
    vectors = StateVectors()
    rows = []
    by_source: dict[tuple[str, str], LoggedData] = {}
    logged_cache: dict[tuple[str, str], tuple] = {}
    for point in learned:
        cards = load_pool(point.pool).cards
        for source in sources:
            key = ("data", "") if source == "data" else (source, point.split)
            if key not in by_source:
                found = _sources(bench_dir, points, point.split, [source])
                if source not in found:
                    continue
                by_source[key] = found[source]
                logged_cache[key] = logging_episodes(found[source], cards, "auto", vectors)
            evaluation = evaluate_router(
                point.router,
                by_source[key],
                cards,
                estimators,
                config,
                vectors=vectors,
                logged=logged_cache[key],
            )
            live = live_result(point.path)
            for name, estimate in evaluation.estimates.items():
                rows.append(
                    AgreementRow(
                        point,
                        source,
                        evaluation.logging,
                        name,
                        estimate.score,
                        estimate.cost,
                        live,
                        evaluation.agreement.logged_probability,
                    )
                )
    return rows


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _interval(e: Estimate, digits: int) -> str:
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def render_markdown(bench: str, rows: Sequence[AgreementRow], clip: float | None) -> str:
    lines = [
        f"# {bench}: offline replay estimates vs live results",
        "",
        "Every offline number below is an **offline estimate** (estimator named per row) from logged data, "
        "with a 95% bootstrap interval; an untrusted estimate (ESS below the threshold, or undefined) has its "
        "interval widened to the whole range the logs speak to. Live: the operating point's own episodes "
        "(mean score; mean model dollars per episode). "
        f"Weight clip: {clip if clip is not None else 'none'}. The direct method's (dm) interval resamples "
        "episodes with the value model held fixed, so it omits the model's own bias: read its 'inside' "
        "count as a test of that model, not of the interval's width.",
        "",
    ]
    for source in dict.fromkeys(r.source for r in rows):
        subset = [r for r in rows if r.source == source]
        loggings = sorted({r.logging for r in subset})
        lines += [f"## Source: {source}", ""]
        lines += [f"Logging: {text}" for text in loggings]
        if source == "data":
            lines.append(
                "Exploration runs on the training split: other task instances than the live episodes."
            )
        lines += [
            "",
            "| split | point | estimator | P(logged) | offline score [95%] | ESS | trusted | live score | inside "
            "| offline $/ep [95%] | ESS | trusted | live $/ep | inside |",
            "|---|---|---|---:|---:|---:|:-:|---:|:-:|---:|---:|:-:|---:|:-:|",
        ]
        for r in subset:
            lines.append(
                f"| {r.point.split} | {r.point.label} | {r.estimator} | {r.agreement:.3f} | {_interval(r.score, 1)} "
                f"| {r.score.ess:.3g} | {'yes' if r.score.trusted else 'no'} | {r.live.score:.1f} "
                f"| {'yes' if r.score_inside else 'no'} | {_interval(r.cost, 4)} | {r.cost.ess:.3g} "
                f"| {'yes' if r.cost.trusted else 'no'} | {r.live.cost:.4f} | {'yes' if r.cost_inside else 'no'} |"
            )
        lines += [
            "",
            "| estimator | score inside | of them trusted | cost inside | of them trusted |",
            "|---|---:|---:|---:|---:|",
        ]
        for estimator in dict.fromkeys(r.estimator for r in subset):
            mine = [r for r in subset if r.estimator == estimator]
            trusted_s = [r for r in mine if r.score.trusted]
            trusted_c = [r for r in mine if r.cost.trusted]
            lines.append(
                f"| {estimator} | {sum(r.score_inside for r in mine)}/{len(mine)} "
                f"| {sum(r.score_inside for r in trusted_s)}/{len(trusted_s)} "
                f"| {sum(r.cost_inside for r in mine)}/{len(mine)} "
                f"| {sum(r.cost_inside for r in trusted_c)}/{len(trusted_c)} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_agreement_report(
    bench_dir: Path,
    reports: Path,
    estimators: Sequence[str] = DEFAULT_ESTIMATORS,
    sources: Sequence[str] = SOURCES,
    config: OPEConfig | None = None,
) -> tuple[Path, list[AgreementRow]]:
    """``reports/<bench>-replay.md``; the rows too, for callers that print them."""
    bench_dir = Path(bench_dir)
    rows = replay_agreement(bench_dir, estimators, sources, config)
    layout = ResultsLayout(bench_dir)
    path = Path(reports) / f"{layout.root.name}-replay.md"
    write_text_atomic(path, render_markdown(layout.root.name, rows, (config or OPEConfig()).clip))
    return path, rows
