"""Training any learned router from run directories, and the fit report that says whether it learned.

The validation split is by task instance, never by turn. Besides the heads'
validation MSE, the report gives a per-decision ranking accuracy: on held-out
decisions, how often the router's top model equals the model with the best
observed outcome among *comparable* states. Comparable means the same task
and the same turn bucket; a group counts only where every model of the pool
was logged there at least ``min_per_model`` times, so that its IPW-weighted
mean outcome (score - lam * cost-to-go) can be estimated. Coverage is the share
of held-out decisions in such groups; chance is 1/n.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import to_plain
from harness.errors import ConfigError
from harness.pool import load_pool
from harness.trajectory import RunStore, write_json_atomic
from harness.types import ModelCard
from routers.learned.dataset import (
    DecisionSample,
    TargetOptions,
    TargetStats,
    TrainingSet,
    build_training_set,
    encode_histories,
    load_samples,
    split_episodes,
)
from routers.learned.encoder_spec import (
    DEFAULT_EMBEDDER,
    build_encoder,
    check_encoder,
    encoder_config,
    named_encoder,
)
from routers.learned.fitting import EnsembleOptions, fit_value_model
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.options import DEFAULT_TURN_BUCKETS, TrainOptions
from routers.learned.value_model import ValueModel, load_value_model

REPORT_FILE = "fit_report.json"


@dataclass(frozen=True)
class RankingScore:
    accuracy: float | None  # None when no held-out decision is covered
    single_best_accuracy: float | None  # the same measure for always choosing the best model overall
    coverage: float
    covered: int
    decisions: int
    groups: int
    models: int = 0  # the pool's models, each of which a comparable group must have logged ...
    min_per_model: int = 0  # ... at least this many times


@dataclass
class FitReport:
    kind: str
    checkpoint: str
    lam: float
    train_episodes: int
    val_episodes: int
    train_decisions: int
    val_decisions: int
    val_mse_score: float | None
    val_mse_cost: float | None
    # Predicting the training mean: what "learned something" is measured against.
    baseline_mse_score: float | None
    baseline_mse_cost: float | None
    ranking: RankingScore | None
    chance: float
    encode_seconds: float
    fit_seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # the TrainOptions used (the pool by name)

    def summary(self) -> str:
        def number(value: float | None, digits: int = 4) -> str:
            return "n/a" if value is None else f"{value:.{digits}f}"

        lines = [
            f"{self.kind} -> {self.checkpoint}",
            f"  data      {self.train_decisions} train / {self.val_decisions} val decisions "
            f"from {self.train_episodes} / {self.val_episodes} episodes",
            f"  val MSE   score {number(self.val_mse_score)} (mean baseline {number(self.baseline_mse_score)})"
            f"   cost {number(self.val_mse_cost)} (mean baseline {number(self.baseline_mse_cost)})",
        ]
        if self.ranking is not None and not self.ranking.covered:
            r = self.ranking
            lines.append(
                f"  ranking   not measured: none of the {r.decisions} val decisions is in a group (same task and"
                f" turn bucket) where each of the {r.models} models was logged at least {r.min_per_model} times"
            )
        elif self.ranking is not None:
            r = self.ranking
            lines.append(
                f"  ranking   top model = best observed in {number(r.accuracy, 3)} of {r.covered} comparable val "
                f"decisions at lam={self.lam:g} (coverage {r.coverage:.0%}, {r.groups} groups; "
                f"chance {self.chance:.3f}, best single model {number(r.single_best_accuracy, 3)})"
            )
        lines.append(
            f"  time      encode {self.encode_seconds:.1f} s, fit {self.fit_seconds:.1f} s  {self.details}"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def turn_bucket(turn: int, edges: Sequence[int] = DEFAULT_TURN_BUCKETS) -> int:
    return int(np.searchsorted(np.asarray(edges), turn, side="right")) - 1


def ranking_accuracy(
    samples: Sequence[DecisionSample],
    data: TrainingSet,
    predicted_q: np.ndarray,
    lam: float,
    single_best: int,
    edges: Sequence[int] = DEFAULT_TURN_BUCKETS,
    min_per_model: int = 2,
) -> RankingScore:
    """See the module docstring; ``predicted_q`` is (decisions, models) over ``data.cards``."""
    observed = data.score - lam * data.cost
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for row, sample in enumerate(samples):
        groups[(sample.task, turn_bucket(sample.turn, edges))].append(row)
    n_models = len(data.cards)
    hits = single_hits = covered = estimable = 0
    for rows in groups.values():
        chosen = data.model_index[rows]
        means = []
        for m in range(n_models):
            of_model = [r for r, c in zip(rows, chosen, strict=True) if c == m]
            if len(of_model) < min_per_model:
                break
            means.append(np.average(observed[of_model], weights=data.weight[of_model]))
        else:
            best = int(np.argmax(means))
            estimable += 1
            covered += len(rows)
            hits += int((predicted_q[rows].argmax(axis=1) == best).sum())
            single_hits += len(rows) * int(single_best == best)
    return RankingScore(
        accuracy=hits / covered if covered else None,
        single_best_accuracy=single_hits / covered if covered else None,
        coverage=covered / len(samples) if len(samples) else 0.0,
        covered=covered,
        decisions=len(samples),
        groups=estimable,
        models=n_models,
        min_per_model=min_per_model,
    )


def pool_cards(pool: str | Path | list[ModelCard] | None, run_dirs: Sequence[Path]) -> list[ModelCard]:
    """The pool to train for: given, or the one the runs name, checked against the prices the runs were billed at."""
    configs = {str(d): RunStore(d).config() for d in run_dirs}
    if pool is None:
        names = {c.get("run", {}).get("pool") for c in configs.values()}
        if None in names:
            raise ConfigError("a run directory does not name its pool; pass pool=")
        if len(names) > 1:
            raise ConfigError(f"runs use different pools ({', '.join(sorted(names))}); pass pool=")
        pool = names.pop()
    cards = load_pool(str(pool)).cards if isinstance(pool, str | Path) else list(pool)
    for run_dir, config in configs.items():
        billed = config.get("price_cards") or {}
        for card in cards:
            if card.name in billed and billed[card.name] != to_plain(card.price):
                raise ConfigError(
                    f"run {run_dir} billed model {card.name!r} with a different price card than the pool's"
                )
    return cards


def default_encoder(mode: str, cache_dir: str | Path | None, embedder: str | None = None) -> HistoryEncoder:
    return named_encoder(embedder or DEFAULT_EMBEDDER, mode, cache_dir, threads=2)  # type: ignore[arg-type]


def target_options(
    previous: ValueModel | None,
    error_weight: float | None,
    weight_clip: float | None,
    score_target: str | None = None,
    **targets: Any,
) -> TargetOptions:
    """The options given, else the defaults; a warm start keeps the checkpoint's (the network was fitted to
    exactly those) and refuses a different value. ``targets`` are TargetOptions' target fields
    (target, td_lambda, fqi_iterations, policy_lam); None means not given."""
    given = {
        "error_weight": error_weight,
        "weight_clip": weight_clip,
        "score_target": score_target,
        **targets,
    }
    if previous is None:
        return TargetOptions(**{name: value for name, value in given.items() if value is not None})
    for name, value in given.items():
        if value is not None and value != getattr(previous.options, name):
            raise ConfigError(
                f"{name}={value} differs from the warm-start checkpoint's {getattr(previous.options, name)}"
            )
    return previous.options


def weighted_mse(predicted: np.ndarray, actual: np.ndarray, weights: np.ndarray) -> float:
    return float(np.average((predicted - actual) ** 2, weights=weights))


def train_router(
    kind: str,
    run_dirs: Sequence[Path],
    out: Path,
    options: TrainOptions | None = None,
    *,
    pool: list[ModelCard] | None = None,
    encoder: HistoryEncoder | None = None,
    verbose: bool = False,
) -> FitReport:
    """Fit a ``kind`` router on the runs, save its checkpoint to ``out`` and report how well it fits.

    ``options`` default to :class:`TrainOptions`' defaults.
    ``pool`` gives the pool's cards directly (instead of ``options.pool``, a pool name or file);
    ``encoder`` replaces the history encoder the options describe (it must produce the same
    vectors as a warm start's).
    """
    from routers import router_class, trainable

    o = options if options is not None else TrainOptions()
    family = router_class(kind)
    model_cls = family.model_class
    if not family.trainable or model_cls is None:
        raise ConfigError(f"router {kind!r} is not trainable (trainable: {', '.join(trainable())})")
    unknown = sorted(set(o.hyperparams) - set(model_cls.param_names()))
    if unknown:
        raise ConfigError(
            f"router {kind!r} has no hyperparameter {unknown[0]!r} (its hyperparameters: "
            f"{', '.join(model_cls.param_names())})"
        )
    if o.init_from is not None and not family.warm_startable:
        raise ConfigError(f"router {kind!r} cannot warm-start from a checkpoint")
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ConfigError("no run directories given")
    cards = pool_cards(pool if pool is not None else o.pool, run_dirs)
    previous = None
    if o.init_from is not None:
        previous = load_value_model(o.init_from, pool_cards=cards, allow_new_models=True)
        if previous.kind != kind:
            raise ConfigError(
                f"cannot warm-start a {kind} router from {o.init_from}, which holds a {previous.kind} router"
            )
    if encoder is None:
        encoder = (
            build_encoder(previous.encoder, o.cache_dir, torch_threads=2, embedder=o.embedder)
            if previous
            else default_encoder(o.mode, o.cache_dir, o.embedder)
        )
    elif previous is not None:
        assert previous.encoder is not None
        check_encoder(previous.encoder, encoder)
    ensemble_options = EnsembleOptions(o.ensemble, o.ensemble_mode, o.defer_threshold)
    targets = target_options(
        previous,
        o.error_weight,
        o.weight_clip,
        o.score_target if o.score_target is not None else model_cls.score_target,
        target=o.target,
        td_lambda=o.td_lambda,
        fqi_iterations=o.fqi_iterations,
        policy_lam=o.lam if previous is None and o.target in ("fqi", "dr") else None,
    )

    samples = load_samples(run_dirs)
    if not samples:
        raise ConfigError(f"no finished episodes in {', '.join(map(str, run_dirs))}")
    train_samples, val_samples = split_episodes(
        samples, o.val_fraction, o.seed if o.split_seed is None else o.split_seed
    )
    stats = (
        previous.stats
        if previous is not None and previous.stats is not None
        else TargetStats.fit(train_samples, o.score_range)
    )

    started = time.perf_counter()
    embeddings = encode_histories(train_samples + val_samples, encoder)
    encode_seconds = time.perf_counter() - started
    config = encoder_config(encoder)
    train = build_training_set(train_samples, embeddings[: len(train_samples)], cards, stats, targets, config)
    val = build_training_set(val_samples, embeddings[len(train_samples) :], cards, stats, targets, config)

    def member(member_seed: int) -> ValueModel:
        try:
            return model_cls(**{**o.hyperparams, "seed": member_seed})
        except TypeError as exc:
            raise ConfigError(f"router {kind!r}: {exc}") from None

    member(o.seed)  # the hyperparameters' own checks, before fitting
    started = time.perf_counter()
    model = fit_value_model(
        member, train, val if len(val) else None, o.seed, ensemble_options, init_from=previous
    )
    fit_seconds = time.perf_counter() - started
    model.save(out)

    report = evaluate(
        model, kind, out, train_samples, val_samples, train, val, o.lam, o.turn_buckets, o.min_per_model
    )
    report.encode_seconds, report.fit_seconds = encode_seconds, fit_seconds
    report.options = {**to_plain(o), "pool": o.pool if pool is None else [c.name for c in cards]}
    write_json_atomic(Path(out) / REPORT_FILE, dataclasses.asdict(report))
    if verbose:
        print(report.summary())
    return report


def evaluate(
    model: ValueModel,
    kind: str,
    out: Path,
    train_samples: Sequence[DecisionSample],
    val_samples: Sequence[DecisionSample],
    train: TrainingSet,
    val: TrainingSet,
    lam: float,
    turn_buckets: Sequence[int],
    min_per_model: int,
) -> FitReport:
    n_models = len(train.cards)
    report = FitReport(
        kind=kind,
        checkpoint=str(out),
        lam=lam,
        train_episodes=len({s.episode for s in train_samples}),
        val_episodes=len({s.episode for s in val_samples}),
        train_decisions=len(train),
        val_decisions=len(val),
        val_mse_score=None,
        val_mse_cost=None,
        baseline_mse_score=None,
        baseline_mse_cost=None,
        ranking=None,
        chance=1.0 / n_models,
        encode_seconds=0.0,
        fit_seconds=0.0,
        details=model.fit_details(),
    )
    if not len(val):
        return report
    score, cost = model.predict(val.embeddings, val.cards)
    rows = np.arange(len(val))
    report.val_mse_score = weighted_mse(score[rows, val.model_index], val.score, val.weight)
    report.val_mse_cost = weighted_mse(cost[rows, val.model_index], val.cost, val.weight)
    report.baseline_mse_score = weighted_mse(
        np.average(train.score, weights=train.weight), val.score, val.weight
    )
    report.baseline_mse_cost = weighted_mse(
        np.average(train.cost, weights=train.weight), val.cost, val.weight
    )
    observed = train.score - lam * train.cost
    single_best = int(
        np.argmax(
            [
                np.average(observed[train.model_index == m], weights=train.weight[train.model_index == m])
                if (train.model_index == m).any()
                else -np.inf
                for m in range(n_models)
            ]
        )
    )
    report.ranking = ranking_accuracy(
        val_samples, val, score - lam * cost, lam, single_best, turn_buckets, min_per_model
    )
    return report
