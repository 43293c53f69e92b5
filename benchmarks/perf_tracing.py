"""What tracing episodes costs when a benchmark is logged to MLflow: time and disk, with and without traces.

Copies a finished benchmark's results (without its MLflow store) twice into a temporary
directory, logs one copy with ``trace_episodes="none"`` and the other at ``--trace-episodes``
(every episode unless given), then logs the traced copy again (nothing new: the idempotent path a
resumed benchmark takes). Prints the seconds of each, the store sizes, the number of traces and
where the traced store's bytes go (per table and index, and the spans' JSON per span type).

``--compare`` names a store the same results were logged to by another version of the harness
at the same fraction (a results directory holding ``mlflow.db``, e.g. one logged by an older
checkout with ``PYTHONPATH`` pointing at it); the script then prints how many times smaller this
version's store is, whole and counting only what tracing added.

    python benchmarks/perf_tracing.py results/quick
    python benchmarks/perf_tracing.py results/quick --trace-episodes 0.2 --compare /tmp/old/quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness.layout import ARTIFACTS_DIR, MLFLOW_DB, ResultsLayout
from harness.tracking import log_benchmark, tracking_uri
from harness.trajectory import RunStore

TOP_TABLES = 8


def _size_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def _store_mb(bench: Path) -> float:
    """A results directory's MLflow store: the SQLite file and the artifacts beside it."""
    return _size_mb(bench / MLFLOW_DB) + _size_mb(bench / ARTIFACTS_DIR)


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(MLFLOW_DB, f"{MLFLOW_DB}-*", ARTIFACTS_DIR))
    return target


def _log(bench: Path, trace_episodes: str) -> float:
    started = time.perf_counter()
    log_benchmark(bench, "perf", log_models=False, trace_episodes=trace_episodes)
    return time.perf_counter() - started


def _where_bytes_go(db: Path) -> None:
    """The largest tables and indexes (SQLite's dbstat, where compiled in) and span JSON per span type."""
    with sqlite3.connect(db) as conn:
        try:
            tables = conn.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT ?", (TOP_TABLES,)
            ).fetchall()
        except sqlite3.OperationalError:  # SQLite built without dbstat
            tables = []
        free = (
            conn.execute("PRAGMA freelist_count").fetchone()[0]
            * conn.execute("PRAGMA page_size").fetchone()[0]
        )
        spans: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        events = 0
        for span_type, content in conn.execute("SELECT type, content FROM spans"):
            spans[span_type] += len(content)
            counts[span_type] += 1
            events += len(json.dumps(json.loads(content)["events"]))
    if tables:
        print(
            "largest tables and indexes: "
            + ", ".join(f"{name} {size / 2**20:.2f}" for name, size in tables)
            + " MiB"
        )
    print(f"free pages: {free / 2**20:.1f} MiB")
    print(
        "span JSON by type: "
        + ", ".join(f"{t} {counts[t]} spans {b / 2**20:.1f} MiB" for t, b in spans.most_common())
        + f" (events {events / 2**20:.1f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_dir", type=Path, help="a finished benchmark's results, e.g. results/quick")
    parser.add_argument("--trace-episodes", default="all", help="all, none or a fraction (default: all)")
    parser.add_argument(
        "--compare", type=Path, help="the same results logged by another harness version at the same fraction"
    )
    args = parser.parse_args()
    import mlflow

    if args.compare is not None and not (args.compare / MLFLOW_DB).is_file():
        parser.error(f"--compare {args.compare}: no {MLFLOW_DB} there")
    with tempfile.TemporaryDirectory() as tmp:
        plain = _copy(args.bench_dir, Path(tmp) / "plain" / args.bench_dir.name)
        traced = _copy(args.bench_dir, Path(tmp) / "traced" / args.bench_dir.name)
        untraced_s = _log(plain, "none")
        traced_s = _log(traced, args.trace_episodes)
        again_s = _log(traced, args.trace_episodes)
        client = mlflow.MlflowClient(tracking_uri(traced))
        experiment = client.get_experiment_by_name(args.bench_dir.name)
        traces = len(client.search_traces(locations=[experiment.experiment_id], max_results=50_000))
        plain_mb, traced_mb = _store_mb(plain), _store_mb(traced)
        turns = sum(
            1
            for run in ResultsLayout(args.bench_dir).point_runs()
            for _ in RunStore(run.path).turns_dir.glob("*.jsonl")
        )
        print(f"traces: {traces} (from {turns} episode turn files, trace_episodes {args.trace_episodes})")
        print(f"log_benchmark without traces: {untraced_s:.1f} s, store {plain_mb:.1f} MiB")
        print(f"log_benchmark with traces:    {traced_s:.1f} s, store {traced_mb:.1f} MiB")
        print(
            f"added by tracing: {traced_s - untraced_s:.1f} s, {traced_mb - plain_mb:.1f} MiB "
            f"({1000 * (traced_s - untraced_s) / max(traces, 1):.1f} ms and "
            f"{1024 * (traced_mb - plain_mb) / max(traces, 1):.1f} KiB per trace)"
        )
        print(f"logging again (nothing new, as on resume): {again_s:.1f} s")
        _where_bytes_go(traced / MLFLOW_DB)
        if args.compare is not None:
            other_mb = _store_mb(args.compare)
            print(
                f"compared store {args.compare}: {other_mb:.1f} MiB; this version's is "
                f"{other_mb / traced_mb:.2f}x smaller, {(other_mb - plain_mb) / max(traced_mb - plain_mb, 1e-9):.2f}x "
                "counting only what tracing added (both over this version's untraced store)"
            )


if __name__ == "__main__":
    main()
