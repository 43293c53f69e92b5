"""Replay as a benchmark source: a definition that names logged trajectory directories instead of a pool to run.

Nothing is run: every router (and every λ of a learned one) is evaluated offline on the
logs, and the report marks every number as an offline estimate with the estimator that
produced it. The frontier (Pareto front and hypervolume, :mod:`harness.frontier`) is drawn
from one estimator's point estimates, the ``frontier_estimator``, and says so; untrusted
points are kept on it but flagged, since leaving them out would make a front look better
supported than it is.

A definition (YAML)::

    name: quick-offline
    data: [results/quick/runs/test_id/random, results/quick/runs/test_id/single:gpt-5]  # run directories
    pool: paper6                      # default: the pool the first run names
    routers:
      - {name: single, params: {model: gpt-5}}
      - {name: mtrouter, params: {checkpoint: results/quick/models/mtrouter}, lambdas: [0.0, 0.25]}
    estimators: [dm, wpdis, dr]       # default: these three
    frontier_estimator: dr            # default: the last estimator listed
    clip: null                        # cap on cumulative importance weights
    logging: auto                     # auto | as-logged | mixture
    bootstrap: 1000
    refit_resamples: 200              # resamples that refit FQE for the dm/dr intervals (0: model held fixed)
    min_ess: 30

``data`` entries may be globs (``results/quick/data/*``); relative paths are read from
the definition file's folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.benchmarks import get_benchmark
from harness.config import RouterSpec, from_dict, load_yaml
from harness.errors import ConfigError
from harness.frontier import OperatingPoint, hypervolume, pareto_front
from harness.layout import matching_runs
from harness.pool import load_pool
from harness.replay.agreement import write_text_atomic
from harness.replay.evaluate import RouterEvaluation, evaluate_router, load_logs, logging_episodes
from harness.replay.ope import ESTIMATORS, OPEConfig
from harness.replay.policies import StateVectors
from harness.trajectory import RunStore


def offline_split(estimator: str) -> str:
    """What offline operating points are called where live ones name their split (tables, plots, MLflow)."""
    return f"offline ({estimator})"


@dataclass(frozen=True)
class ReplayRouter:
    name: str
    params: dict = field(default_factory=dict)
    lambdas: list[float] | None = None  # a learned router's λ points; None: the params as given

    def specs(self) -> list[RouterSpec]:
        if self.lambdas is None:
            return [RouterSpec(self.name, dict(self.params))]
        return [
            RouterSpec(self.name, {**self.params, "lam": lam, "label": f"{self.name}@lam={lam:g}"})
            for lam in self.lambdas
        ]


@dataclass(frozen=True)
class ReplayBenchmarkDef:
    name: str
    data: list[str]
    routers: list[ReplayRouter]
    pool: str | None = None
    estimators: list[str] = field(default_factory=lambda: ["dm", "wpdis", "dr"])
    frontier_estimator: str | None = None
    clip: float | None = None
    logging: str = "auto"
    bootstrap: int = 1000
    refit_resamples: int = OPEConfig.refit_resamples
    min_ess: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [e for e in self.estimators if e not in ESTIMATORS]
        if unknown:
            raise ConfigError(f"replay benchmark {self.name!r}: unknown estimator {unknown[0]!r}")
        if self.frontier_estimator is not None and self.frontier_estimator not in self.estimators:
            raise ConfigError(
                f"replay benchmark {self.name!r}: frontier_estimator {self.frontier_estimator!r} "
                "is not among its estimators"
            )
        if not self.routers:
            raise ConfigError(f"replay benchmark {self.name!r} names no routers")

    @property
    def frontier(self) -> str:
        return self.frontier_estimator or self.estimators[-1]


def load_replay_benchmark(path: Path) -> tuple[ReplayBenchmarkDef, list[Path]]:
    """The definition and its run directories (globs expanded, relative to the file)."""
    path = Path(path)
    definition = from_dict(ReplayBenchmarkDef, load_yaml(path), str(path))
    runs: list[Path] = []
    for entry in definition.data:
        pattern = entry if Path(entry).is_absolute() else str(path.parent / entry)
        found = matching_runs(pattern)
        if not found:
            raise ConfigError(f"{path}: data entry {entry!r} matches no run directory")
        runs.extend(found)
    return definition, runs


@dataclass
class ReplayBenchmarkResult:
    definition: ReplayBenchmarkDef
    runs: list[Path]
    evaluations: list[RouterEvaluation]
    front: list[str]
    hypervolume: float | None
    reference: tuple[float, float]


def run_replay_benchmark(definition: ReplayBenchmarkDef, runs: list[Path]) -> ReplayBenchmarkResult:
    data = load_logs(runs)
    pool = definition.pool or (RunStore(runs[0]).config().get("run") or {}).get("pool")
    if not pool:
        raise ConfigError(f"replay benchmark {definition.name!r}: no pool given and {runs[0]} names none")
    cards = load_pool(pool).cards
    config = OPEConfig(
        clip=definition.clip,
        n_bootstrap=definition.bootstrap,
        min_ess=definition.min_ess,
        seed=definition.seed,
        refit_resamples=definition.refit_resamples,
    )
    vectors = StateVectors()
    logged = logging_episodes(data, cards, definition.logging, vectors)
    evaluations = [
        evaluate_router(spec, data, cards, definition.estimators, config, vectors=vectors, logged=logged)
        for router in definition.routers
        for spec in router.specs()
    ]
    name = definition.frontier
    points = [
        OperatingPoint(e.router, e.estimates[name].score.value, e.estimates[name].cost.value)
        for e in evaluations
        if math.isfinite(e.estimates[name].score.value) and math.isfinite(e.estimates[name].cost.value)
    ]
    benchmark = get_benchmark(data.episodes[0].benchmark)
    reference = (benchmark.reference_point["score"], benchmark.reference_point["cost"])
    front = [p.label for p in pareto_front(points)] if points else []
    volume = hypervolume(points, reference) if points else None
    return ReplayBenchmarkResult(definition, runs, evaluations, front, volume, reference)


def render_report(result: ReplayBenchmarkResult) -> str:
    d = result.definition
    first = result.evaluations[0]
    lines = [
        f"# {d.name}: offline replay benchmark",
        "",
        "**Every number in this report is an offline estimate** from logged trajectories, not a live run; "
        "each row names its estimator. Intervals are 95% bootstrap intervals over episodes; an untrusted "
        f"estimate (effective sample size below {d.min_ess:g}, or undefined) has its interval widened to the "
        "whole range the logs speak to.",
        "",
        f"- logged data: {len(result.runs)} run directories, {first.episodes} episodes, {first.turns} turns",
        f"- logging propensities: {first.logging}",
        f"- weight clip: {d.clip if d.clip is not None else 'none (unbiased)'}; bootstrap resamples: {d.bootstrap}",
        "",
        "| router | estimator | score (offline) [95%] | ESS | trusted | $/episode (offline) [95%] | ESS | trusted "
        "| P(logged) |",
        "|---|---|---:|---:|:-:|---:|---:|:-:|---:|",
    ]
    for e in result.evaluations:
        for name, estimate in e.estimates.items():
            s, c = estimate.score, estimate.cost
            lines.append(
                f"| {e.router} | {name} | {s.value:.2f} [{s.low:.2f}, {s.high:.2f}] | {s.ess:.3g} "
                f"| {'yes' if s.trusted else 'no'} | {c.value:.4f} [{c.low:.4f}, {c.high:.4f}] | {c.ess:.3g} "
                f"| {'yes' if c.trusted else 'no'} | {e.agreement.logged_probability:.3f} |"
            )
    value_models = sorted({e.value_model for e in result.evaluations if e.value_model})
    if value_models:
        lines += ["", "Value models behind dm and dr:", *(f"- {v}" for v in value_models)]
    kinds = sorted({(n, x.score.interval) for e in result.evaluations for n, x in e.estimates.items()})
    lines += ["", "Intervals:", *(f"- {name}: {kind}" for name, kind in kinds)]
    trusted = {
        e.router: e.estimates[d.frontier].score.trusted and e.estimates[d.frontier].cost.trusted
        for e in result.evaluations
    }
    lines += [
        "",
        f"## Offline frontier ({d.frontier} estimates)",
        "",
        "Pareto front, cheapest first: "
        + (
            ", ".join(f"{label}{'' if trusted[label] else ' (untrusted)'}" for label in result.front)
            or "none"
        ),
        "",
        f"Hypervolume against reference (score {result.reference[0]:g}, ${result.reference[1]:g}): "
        + (
            f"{result.hypervolume:.3f} (offline, {d.frontier})"
            if result.hypervolume is not None
            else "undefined"
        ),
        "",
    ]
    return "\n".join(lines)


def write_replay_benchmark(
    path: Path, reports: Path, results: Path | None = None, git_commit: str = "unknown"
) -> tuple[Path, ReplayBenchmarkResult]:
    """Evaluate, write ``REPORTS/<name>-offline.md``, and with ``results`` log it all to the MLflow store of
    ``RESULTS/<name>/`` (:func:`harness.tracking.log_replay_benchmark`)."""
    definition, runs = load_replay_benchmark(path)
    result = run_replay_benchmark(definition, runs)
    out = Path(reports) / f"{definition.name}-offline.md"
    report = render_report(result)
    write_text_atomic(out, report)
    if results is not None:
        from harness.layout import ResultsLayout
        from harness.tracking import log_replay_benchmark

        log_replay_benchmark(ResultsLayout.of(results, definition.name).root, result, git_commit, report)
    return out, result
