"""A whole benchmark end to end with the reference encoder and with the default one: stage times and conclusions.

The learned routers' cost is the history encoder (embedding every logged decision for training,
every live decision for routing); everything else in a benchmark is the engine, the fixed routers,
tracking and the report. This runs one definition from empty results directories once per embedder,
every learned family trained with that embedder (``embedder`` in its training parameters; the
checkpoint carries it to routing; the default embedder's arm runs the definition unchanged), with the
same seeds, one after the other on the same machine, and
prints:

* the wall seconds of each pipeline stage (``stage_seconds`` of benchmark.json: collect, train with
  its embedding, Stage B, tune, select, evaluate, track, report) and the total, per embedder, and
  the ratio of each to the first embedder's;
* the conclusions: every router's mean test_id score and cost per episode, and each learned
  family's tuned or selected λ, so a faster encoder that changes what the benchmark says is seen.

The first embedder is the "before" (default: ``minilm``, the PyTorch reference the learned routers
used before the static distillation became the default), the second the "after". A cold start is
measured: each arm has its own empty results directory, so its embedding cache starts empty, as on a
fresh clone. Each arm's report is written to ``OUT/<embedder>/reports``.

Run (the quick definition is what ``make benchmark`` runs; a paper-scale definition takes hours per arm):
``PYTHONPATH=$PWD .venv/bin/python benchmarks/perf_pipeline.py quick --out /tmp/perf-pipeline``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from harness.config import BENCHMARKS_DIR
from harness.layout import ResultsLayout
from harness.summary import summarize_run
from routers.learned.encoder_spec import DEFAULT_EMBEDDER, EMBEDDERS, REFERENCE_EMBEDDER


def definition_with(name: str, embedder: str, dest: Path) -> Path:
    """The definition with every learned family trained with ``embedder``, written to ``dest``."""
    source = Path(name) if name.endswith((".yaml", ".yml")) else BENCHMARKS_DIR / f"{name}.yaml"
    data = yaml.safe_load(source.read_text())
    for family in data.get("learned") or []:
        family["params"] = {**(family.get("params") or {}), "embedder": embedder}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def run_arm(name: str, embedder: str, out: Path) -> dict:
    """One cold run of the definition with ``embedder``: its wall time, stage times and test_id rows."""
    arm = out / embedder
    if arm.exists():
        raise SystemExit(f"{arm} exists: each arm must start from an empty results directory")
    # The default embedder's arm runs the definition itself: exactly what `harness benchmark NAME` runs.
    definition = (
        name if embedder == DEFAULT_EMBEDDER else definition_with(name, embedder, arm / "definition.yaml")
    )
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "harness.cli", "benchmark", str(definition),
         "--results", str(arm / "results"), "--reports", str(arm / "reports")],
        check=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    manifest_path = next((arm / "results").glob("*/benchmark.json"))
    manifest = json.loads(manifest_path.read_text())
    rows = {}
    for run in ResultsLayout(manifest_path.parent).point_runs("test_id"):
        summary = summarize_run(run.path)
        rows[run.point.split("@")[0]] = (run.point, summary.mean_score, summary.mean_cost)
    selected = {k: v.get("lam") for k, v in (manifest.get("selected") or {}).items()}
    return {"wall": wall, "stages": manifest["stage_seconds"], "rows": rows, "selected": selected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("definition", nargs="?", default="quick")
    parser.add_argument("--out", type=Path, required=True, help="an empty directory for both arms")
    parser.add_argument(
        "--embedders", nargs="+", default=[REFERENCE_EMBEDDER, DEFAULT_EMBEDDER], choices=sorted(EMBEDDERS)
    )
    args = parser.parse_args()
    arms = {e: run_arm(args.definition, e, args.out) for e in args.embedders}
    first = args.embedders[0]

    print(f"\n{args.definition}: wall seconds per stage (ratio to {first})")
    stages = sorted({s for a in arms.values() for s in a["stages"]})
    print(f"{'stage':<10}" + "".join(f"{e:>28}" for e in args.embedders))
    for stage in [*stages, "total"]:
        cells = []
        for e in args.embedders:
            value = arms[e]["wall"] if stage == "total" else arms[e]["stages"].get(stage, 0.0)
            base = arms[first]["wall"] if stage == "total" else arms[first]["stages"].get(stage, 0.0)
            ratio = f"({value / base:.2f}x)" if base > 0 else ""
            cells.append(f"{value:>19.1f} {ratio:>8}")
        print(f"{stage:<10}" + "".join(cells))
    speedup = arms[first]["wall"] / arms[args.embedders[-1]]["wall"]
    print(f"end to end: {args.embedders[-1]} is {speedup:.2f}x faster than {first}")

    print(
        "\ntest_id mean score / $ per episode, per embedder (learned routers at their tuned or selected lambda)"
    )
    for router in sorted({r for a in arms.values() for r in a["rows"]}):
        cells = []
        for e in args.embedders:
            row = arms[e]["rows"].get(router)
            cells.append(
                f"{row[1]:>8.1f} / {row[2]:.4f} {row[0].partition('@')[2]:>12}" if row else f"{'-':>28}"
            )
        print(f"{router:<30}" + "".join(cells))
    for e in args.embedders:
        print(f"selected lambda with {e}: {arms[e]['selected']}")


if __name__ == "__main__":
    main()
