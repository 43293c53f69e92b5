"""What the incremental history encoder costs in routing, against the full (reference) encoder.

``perf_history_encoder.py`` compares the two encoders' vectors; this script
compares the routers trained on them. It collects (or takes) real logged
ScienceWorld runs, trains each learned router twice, once on each encoder's
vectors, with the same split, seed and hyperparameters, and prints for each:

* the fit report's validation MSE and ranking accuracy, per encoder;
* how often the two routers pick the same model on the held-out decisions,
  at a few lambdas (1.0 would mean the shortcut changes no decision), next
  to the same agreement between two full-encoder routers trained with
  different seeds on the same split: the disagreement that training noise
  alone produces;
* the encoding time of all decisions from a cold cache, per encoder.

Run: ``.venv/bin/python benchmarks/perf_encoder_routing.py [--data RUN_DIR ...] [--kinds ridge mtrouter]``
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
from routers.learned.dataset import encode_histories, load_samples, split_episodes
from routers.learned.train import KINDS, default_encoder, train_router
from routers.learned.value_model import load_value_model

MODES = ("full", "incremental")
LAMBDAS = (0.0, 0.05, 0.25)


def collect(out: Path, seeds: tuple[int, ...]) -> list[Path]:
    dirs = []
    with Workers(2) as workers:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="*", type=Path, help="Run directories (default: collect)")
    parser.add_argument("--kinds", nargs="*", default=["ridge", "mtrouter"], choices=KINDS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"load average before start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings need an idle machine)"
    )

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = args.data or collect(tmp / "runs", (0, 1, 2))
        samples = load_samples(data)
        _, val = split_episodes(samples, 0.2, args.seed)
        print(f"{len(samples)} decisions from {len(data)} run(s); {len(val)} held out")

        encoders = {}
        vectors = {}
        for mode in MODES:
            encoders[mode] = default_encoder(mode, tmp / f"cache-{mode}")  # cold caches: fair timing
            start = time.perf_counter()
            encode_histories(samples, encoders[mode])
            seconds = time.perf_counter() - start
            vectors[mode] = encode_histories(val, encoders[mode])  # from the warm cache
            print(
                f"encode all decisions, {mode:<11}: {seconds:7.1f} s ({1e3 * seconds / len(samples):.1f} ms each)"
            )

        print()
        header = ["router", "encoder", "val MSE score", "val MSE cost", "ranking acc (lam=0)"]
        header += [f"same choice lam={lam:g}" for lam in LAMBDAS]
        print(" | ".join(header))
        for kind in args.kinds:
            predicted = {}
            for label, mode, seed in (
                ("full", "full", args.seed),
                ("full, other seed", "full", args.seed + 1),
                ("incremental", "incremental", args.seed),
            ):
                out = tmp / f"{kind}-{mode}-{seed}"
                report = train_router(
                    kind, data, out, encoder=encoders[mode], lam=0.0, seed=seed, split_seed=args.seed
                )
                model = load_value_model(out)
                predicted[label] = model.predict(vectors[mode], model.cards)
                accuracy = report.ranking.accuracy if report.ranking else None
                cells = [
                    kind,
                    label,
                    f"{report.val_mse_score:.4f}",
                    f"{report.val_mse_cost:.4f}",
                    "n/a" if accuracy is None else f"{accuracy:.3f}",
                ]
                if label == "full":
                    cells += ["(reference)"] * len(LAMBDAS)
                for lam in LAMBDAS if label != "full" else ():
                    reference = (predicted["full"][0] - lam * predicted["full"][1]).argmax(axis=1)
                    choice = (predicted[label][0] - lam * predicted[label][1]).argmax(axis=1)
                    cells.append(f"{np.mean(reference == choice):.3f}")
                print(" | ".join(cells))


if __name__ == "__main__":
    main()
