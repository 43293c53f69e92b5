"""Learning curves of the learned router families: held-out ranking accuracy and MSE against training size.

Each family is trained on growing, nested subsets of the logged training
episodes (the first n of one seeded permutation of the episodes; 20% of each
subset's episodes are its own early-stopping split) and evaluated on logged
episodes of another split (val): MSE of the score and cost heads (beside
predicting the training mean, the fit report's measure) and the diagnostics'
ranking accuracy of the router's top model among comparable states, beside the
best single model's and chance, with the observed value of the picks
(:mod:`routers.learned.diagnostics`). Histories are encoded once.

    python benchmarks/learning_curves.py --train runs/explore-train-s0 --val runs/explore-val \\
        --sizes 25,50,100,200 --families mtrouter,ridge --embedder minilm-static --cache-dir runs/cache
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routers.learned.dataset import (  # noqa: E402
    DecisionSample,
    TargetOptions,
    TargetStats,
    TrainingSet,
    build_training_set,
    encode_histories,
    load_samples,
    split_episodes,
)
from routers.learned.diagnostics import diagnose_model  # noqa: E402
from routers.learned.encoder_spec import encoder_config  # noqa: E402
from routers.learned.fitting import EnsembleOptions, fit_value_model  # noqa: E402
from routers.learned.train import (  # noqa: E402
    DEFAULT_TURN_BUCKETS,
    default_encoder,
    evaluate,
    pool_cards,
)
from routers.learned.value_model import model_class  # noqa: E402


def episode_subset(samples, keys: set[tuple[str, str]]):
    return [s for s in samples if (s.run, s.episode) in keys]


class EncodedSamples:
    """Decisions whose histories are encoded once, and the training set of any part of them: a learning
    curve fits many subsets of one collection (also :mod:`branching_curve`)."""

    def __init__(self, samples: list[DecisionSample], encoder: Any, cards: list):
        self.vectors = encode_histories(samples, encoder)
        self.row_of = {id(s): i for i, s in enumerate(samples)}
        self.cards, self.config = cards, encoder_config(encoder)

    def training_set(
        self, part: list[DecisionSample], stats: TargetStats, options: TargetOptions
    ) -> TrainingSet:
        rows = self.vectors[[self.row_of[id(s)] for s in part]]
        return build_training_set(part, rows, self.cards, stats, options, self.config)


@dataclass
class PointFit:
    """One curve point's fitted model, with what it was fit on (for evaluating it the same way)."""

    model: Any
    stats: TargetStats
    fit_samples: list[DecisionSample]
    fit: TrainingSet
    stop: TrainingSet
    seconds: float  # the fit's alone


def fit_point(
    encoded: EncodedSamples, part: list[DecisionSample], family: str, options: TargetOptions, seed: int,
    ensemble: int = 1,
) -> PointFit:  # fmt: skip
    """``family`` fit on ``part``'s decisions; 20% of its episodes are its own early-stopping split."""
    fit_samples, stop_samples = split_episodes(part, 0.2, seed)
    stats = TargetStats.fit(fit_samples)
    fit, stop = (
        encoded.training_set(fit_samples, stats, options),
        encoded.training_set(stop_samples, stats, options),
    )
    cls = model_class(family)
    started = time.perf_counter()
    model = fit_value_model(
        lambda seed, cls=cls: cls(seed=seed),
        fit,
        stop if len(stop) else None,
        seed,
        EnsembleOptions(ensemble),
    )
    return PointFit(model, stats, fit_samples, fit, stop, time.perf_counter() - started)


def num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--train", nargs="+", type=Path, required=True, help="logged training run directories"
    )
    parser.add_argument("--val", nargs="+", type=Path, required=True, help="logged held-out run directories")
    parser.add_argument("--sizes", default="25,50,100,200", help="training episodes per point")
    parser.add_argument("--families", default="mtrouter,ridge,lgbm,cluster")
    parser.add_argument("--target", default="mc", help="training target (routers.learned.targets)")
    parser.add_argument("--ensemble", type=int, default=1)
    parser.add_argument("--lam", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedder", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    cards = pool_cards(None, [*args.train, *args.val])
    encoder = default_encoder("incremental", args.cache_dir, args.embedder)
    train_all, val_samples = load_samples(args.train), load_samples(args.val)
    started = time.perf_counter()
    encoded = EncodedSamples(train_all + val_samples, encoder, cards)
    print(
        f"encoded {len(encoded.vectors)} decisions in {time.perf_counter() - started:.1f} s", file=sys.stderr
    )

    keys = sorted({(s.run, s.episode) for s in train_all})
    order = [keys[i] for i in np.random.default_rng(args.seed).permutation(len(keys))]
    sizes = [int(n) for n in args.sizes.split(",")]
    rows = []
    header = (
        f"{'family':<10} {'episodes':>8} {'decisions':>9} {'mse score':>9} {'(mean)':>7} {'mse cost':>9} "
        f"{'(mean)':>7} {'rank acc':>8} {'single':>7} {'chance':>6} {'value':>7} {'single':>7} {'fit s':>6}"
    )
    print(header)
    for family in args.families.split(","):
        for n in sizes:
            if n > len(order):
                print(f"{family:<10} {n:>8}  (only {len(order)} training episodes)")
                continue
            subset = episode_subset(train_all, set(order[:n]))
            options = TargetOptions(target=args.target, policy_lam=args.lam)
            point = fit_point(encoded, subset, family, options, args.seed, args.ensemble)
            model, fit, seconds = point.model, point.fit, point.seconds
            val = encoded.training_set(val_samples, point.stats, options)
            report = evaluate(
                model,
                family,
                Path("-"),
                point.fit_samples,
                val_samples,
                fit,
                val,
                args.lam,
                DEFAULT_TURN_BUCKETS,
                2,
            )
            r = diagnose_model(model, val_samples, val, args.lam).ranking
            row = {
                "family": family,
                "target": args.target,
                "ensemble": args.ensemble,
                "episodes": n,
                "decisions": len(fit) + len(point.stop),
                "val_mse_score": report.val_mse_score,
                "baseline_mse_score": report.baseline_mse_score,
                "val_mse_cost": report.val_mse_cost,
                "baseline_mse_cost": report.baseline_mse_cost,
                "ranking_accuracy": r.accuracy,
                "single_best_accuracy": r.single_best_accuracy,
                "chance": r.chance,
                "router_value": r.router_value,
                "single_value": r.single_value,
                "covered": r.decisions,
                "fit_seconds": seconds,
            }
            rows.append(row)
            print(
                f"{family:<10} {n:>8} {row['decisions']:>9} {num(row['val_mse_score']):>9} "
                f"{num(row['baseline_mse_score']):>7} {num(row['val_mse_cost']):>9} "
                f"{num(row['baseline_mse_cost']):>7} {num(row['ranking_accuracy'], 3):>8} "
                f"{num(row['single_best_accuracy'], 3):>7} {num(row['chance'], 3):>6} "
                f"{num(row['router_value'], 3):>7} {num(row['single_value'], 3):>7} {seconds:>6.1f}",
                flush=True,
            )
    print(
        f"val: {len({(s.run, s.episode) for s in val_samples})} episodes, {len(val_samples)} decisions; lam={args.lam:g}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
