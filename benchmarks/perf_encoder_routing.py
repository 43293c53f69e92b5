"""What each fast embedder costs in routing quality, against the reference PyTorch MiniLM.

``perf_router_latency.py`` measures what the embedders save per decision; this
script measures what they change in the routers trained on their vectors. It
collects (or takes) real logged ScienceWorld runs and trains each learned
router kind on each embedder's history vectors (incremental mode, the
default), with the same validation split and hyperparameters, and prints:

* the time to encode every logged decision from a cold cache, per embedder;
* the fit report's validation MSE and ranking accuracy;
* how often the router picks the same model as the reference-trained router
  (model seed 0) on the held-out decisions, at a few lambdas, next to the
  same agreement for reference routers trained with other model seeds: the
  disagreement training noise alone produces (an embedder inside that band
  changes routing no more than retraining does);
* with ``--live`` (slow: hours for all embedders), for each embedder and each
  of ``--seeds`` model seeds: the lambda selected on the quick ``val`` split
  (best mean score, then lowest cost, over ``--live-lambdas``), and the live
  mean score and cost on the full ``test_id`` split at that lambda; then
  whether each embedder's mean score and cost fall inside the
  [min, max] spread of the reference's seeds.

Run: ``.venv/bin/python benchmarks/perf_encoder_routing.py [--data RUN_DIR ...] [--kinds ridge mtrouter] [--live]``
Without ``--data`` it first logs sticky-random exploration on the quick train subset (three seeds).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.batch import Workers, prepare, run_batch
from harness.config import RouterSpec, RunConfig
from routers import trainable
from routers.learned.dataset import encode_histories, load_samples, split_episodes
from routers.learned.encoder_spec import EMBEDDERS, REFERENCE_EMBEDDER, named_encoder
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.train import TrainOptions, train_router
from routers.learned.value_model import load_value_model

LAMBDAS = (0.0, 0.05, 0.25)
LIVE_LAMBDAS = (0.0, 0.01, 0.025, 0.05, 0.1, 0.25)


def collect(out: Path, seeds: tuple[int, ...], workers: Workers) -> list[Path]:
    dirs = []
    for seed in seeds:
        config = RunConfig(
            router=RouterSpec("sticky-random", {"switch_prob": 0.03}),
            split="train",
            quick=True,
            seed=seed,
            workers=2,
        )
        batch = prepare(config, out / f"stage-a-s{seed}")
        run_batch(batch, workers=workers)
        dirs.append(batch.store.root)
    return dirs


def live_mean(
    kind: str, checkpoint: Path, lam: float, split: str, quick: bool, out: Path, cache: Path, workers: Workers
) -> tuple[float, float]:
    """Mean score and cost of the router over the split's episodes, run like any harness batch."""
    params = {"checkpoint": str(checkpoint), "lam": lam, "cache_dir": str(cache)}
    config = RunConfig(router=RouterSpec(kind, params), split=split, quick=quick, seed=0, workers=2)
    batch = prepare(config, out)
    run_batch(batch, workers=workers)
    finished = [e for e in batch.store.episodes() if e.score is not None]
    return float(np.mean([e.score for e in finished])), float(np.mean([e.cost for e in finished]))


def select_and_test(
    kind: str, checkpoint: Path, out: Path, cache: Path, workers: Workers, lambdas: tuple[float, ...]
) -> tuple[float, float, float]:
    """(val-selected lambda, test_id score, test_id cost); selection never sees test_id."""
    on_val = {
        lam: live_mean(kind, checkpoint, lam, "val", True, out / f"val-lam{lam:g}", cache, workers)
        for lam in lambdas
    }
    lam = max(on_val, key=lambda x: (on_val[x][0], -on_val[x][1]))
    score, cost = live_mean(
        kind, checkpoint, lam, "test_id", False, out / f"test_id-lam{lam:g}", cache, workers
    )
    return lam, score, cost


def inside(value: float, spread: list[float]) -> str:
    return "inside" if min(spread) <= value <= max(spread) else "OUTSIDE"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="*", type=Path, help="Run directories (default: collect)")
    parser.add_argument("--kinds", nargs="*", default=["ridge", "mtrouter"], choices=trainable())
    parser.add_argument("--embedders", nargs="*", default=list(EMBEDDERS), choices=list(EMBEDDERS))
    parser.add_argument("--seeds", type=int, default=3, help="model seeds of the reference (noise band)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--live", action="store_true", help="also run live on full test_id (slow)")
    parser.add_argument("--live-lambdas", nargs="*", type=float, default=list(LIVE_LAMBDAS))
    parser.add_argument("--keep", type=Path, help="keep checkpoints and runs here instead of a temp dir")
    args = parser.parse_args()
    embedders = [REFERENCE_EMBEDDER] + [name for name in args.embedders if name != REFERENCE_EMBEDDER]
    seeds = list(range(args.seeds))
    print(
        f"load average before start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings need an idle machine)"
    )

    with tempfile.TemporaryDirectory() as tmp_name, Workers(2) as workers:
        tmp = args.keep or Path(tmp_name)
        data = args.data or collect(tmp / "runs", (0, 1, 2), workers)
        samples = load_samples(data)
        _, val = split_episodes(samples, 0.2, args.split_seed)
        print(f"{len(samples)} decisions from {len(data)} run(s); {len(val)} held out")

        encoders: dict[str, HistoryEncoder] = {}
        vectors = {}
        for name in embedders:
            encoders[name] = named_encoder(name, cache_dir=tmp / f"cache-{name}", threads=2)  # cold caches
            start = time.perf_counter()
            encode_histories(samples, encoders[name])
            seconds = time.perf_counter() - start
            vectors[name] = encode_histories(val, encoders[name])  # from the warm cache
            print(
                f"encode all decisions, {name:<17}: {seconds:7.1f} s ({1e3 * seconds / len(samples):.2f} ms each)"
            )

        print()
        header = ["router", "embedder", "model seed", "val MSE score", "val MSE cost", "ranking acc (lam=0)"]
        header += [f"same choice lam={lam:g}" for lam in LAMBDAS]
        print(" | ".join(header))
        checkpoints: dict[tuple[str, str, int], Path] = {}
        for kind in args.kinds:
            predicted = {}
            runs = [(REFERENCE_EMBEDDER, seed) for seed in seeds] + [(name, 0) for name in embedders[1:]]
            for name, seed in runs:
                out = tmp / "models" / f"{kind}-{name}-s{seed}"
                report = train_router(
                    kind,
                    data,
                    out,
                    TrainOptions(lam=0.0, seed=seed, split_seed=args.split_seed),
                    encoder=encoders[name],
                )
                checkpoints[kind, name, seed] = out
                model = load_value_model(out)
                predicted[name, seed] = model.predict(vectors[name], model.cards)
                accuracy = report.ranking.accuracy if report.ranking else None
                cells = [
                    kind,
                    name,
                    str(seed),
                    f"{report.val_mse_score:.4f}",
                    f"{report.val_mse_cost:.4f}",
                    "n/a" if accuracy is None else f"{accuracy:.3f}",
                ]
                reference = predicted[REFERENCE_EMBEDDER, 0]
                for lam in LAMBDAS:
                    if (name, seed) == (REFERENCE_EMBEDDER, 0):
                        cells.append("(reference)")
                        continue
                    same = (reference[0] - lam * reference[1]).argmax(1) == (
                        predicted[name, seed][0] - lam * predicted[name, seed][1]
                    ).argmax(1)
                    cells.append(f"{np.mean(same):.3f}")
                print(" | ".join(cells))

        if not args.live:
            return
        print("\nLive on full test_id at the val-selected lambda (quick val subset for the selection)")
        print(" | ".join(["router", "embedder", "model seed", "lambda", "test_id score", "test_id cost"]))
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for kind in args.kinds:
            for name in embedders:
                for seed in seeds:
                    checkpoint = checkpoints.get((kind, name, seed))
                    if checkpoint is None:
                        checkpoint = tmp / "models" / f"{kind}-{name}-s{seed}"
                        train_router(
                            kind,
                            data,
                            checkpoint,
                            TrainOptions(lam=0.0, seed=seed, split_seed=args.split_seed),
                            encoder=encoders[name],
                        )
                    lam, score, cost = select_and_test(
                        kind,
                        checkpoint,
                        tmp / "live" / f"{kind}-{name}-s{seed}",
                        tmp / f"cache-{name}",
                        workers,
                        tuple(args.live_lambdas),
                    )
                    results.setdefault((kind, name), []).append((score, cost))
                    print(" | ".join([kind, name, str(seed), f"{lam:g}", f"{score:.2f}", f"{cost:.4f}"]))
        print(f"\nMean over seeds against the spread of {REFERENCE_EMBEDDER}'s seeds")
        print(" | ".join(["router", "embedder", "score mean", "score", "cost mean", "cost"]))
        for kind in args.kinds:
            band_scores = [s for s, _ in results[kind, REFERENCE_EMBEDDER]]
            band_costs = [c for _, c in results[kind, REFERENCE_EMBEDDER]]
            for name in embedders:
                score = float(np.mean([s for s, _ in results[kind, name]]))
                cost = float(np.mean([c for _, c in results[kind, name]]))
                print(
                    " | ".join(
                        [
                            kind,
                            name,
                            f"{score:.2f}",
                            f"{inside(score, band_scores)} [{min(band_scores):.2f}, {max(band_scores):.2f}]",
                            f"{cost:.4f}",
                            f"{inside(cost, band_costs)} [{min(band_costs):.4f}, {max(band_costs):.4f}]",
                        ]
                    )
                )


if __name__ == "__main__":
    main()
