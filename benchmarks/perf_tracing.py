"""What tracing episodes costs when a benchmark is logged to MLflow: time and disk, with and without traces.

Copies a finished benchmark's results (without its MLflow store) twice into a temporary
directory, logs one copy with ``trace_episodes="none"`` and the other with ``"all"``, then logs
the traced copy again (nothing new: the idempotent path a resumed benchmark takes). Prints the
seconds of each, the store sizes and the number of traces.

    python benchmarks/perf_tracing.py results/quick
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from harness.layout import ARTIFACTS_DIR, MLFLOW_DB, ResultsLayout
from harness.tracking import log_benchmark, tracking_uri
from harness.trajectory import RunStore


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(MLFLOW_DB, f"{MLFLOW_DB}-*", ARTIFACTS_DIR))
    return target


def _log(bench: Path, trace_episodes: str) -> float:
    started = time.perf_counter()
    log_benchmark(bench, "perf", log_models=False, trace_episodes=trace_episodes)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_dir", type=Path, help="a finished benchmark's results, e.g. results/quick")
    args = parser.parse_args()
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        plain = _copy(args.bench_dir, Path(tmp) / "plain" / args.bench_dir.name)
        traced = _copy(args.bench_dir, Path(tmp) / "traced" / args.bench_dir.name)
        untraced_s = _log(plain, "none")
        traced_s = _log(traced, "all")
        again_s = _log(traced, "all")
        client = mlflow.MlflowClient(tracking_uri(traced))
        experiment = client.get_experiment_by_name(args.bench_dir.name)
        traces = len(client.search_traces(locations=[experiment.experiment_id], max_results=50_000))
        plain_mb = _size_mb(plain / MLFLOW_DB) + _size_mb(plain / ARTIFACTS_DIR)
        traced_mb = _size_mb(traced / MLFLOW_DB) + _size_mb(traced / ARTIFACTS_DIR)
        turns = sum(
            1
            for run in ResultsLayout(args.bench_dir).point_runs()
            for _ in RunStore(run.path).turns_dir.glob("*.jsonl")
        )
        print(f"traces: {traces} (from {turns} episode turn files)")
        print(f"log_benchmark without traces: {untraced_s:.1f} s, store {plain_mb:.1f} MiB")
        print(f"log_benchmark with traces:    {traced_s:.1f} s, store {traced_mb:.1f} MiB")
        print(
            f"added by tracing: {traced_s - untraced_s:.1f} s, {traced_mb - plain_mb:.1f} MiB "
            f"({1000 * (traced_s - untraced_s) / max(traces, 1):.1f} ms and "
            f"{1024 * (traced_mb - plain_mb) / max(traces, 1):.1f} KiB per trace)"
        )
        print(f"logging again (nothing new, as on resume): {again_s:.1f} s")


if __name__ == "__main__":
    main()
