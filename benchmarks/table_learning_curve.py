"""How much exploration the per-task table needs: its val-realised choice against Stage A's size.

Why: ``episode-task`` and ``mtrouter-task`` route on a (task, model) table of the episodes each model
opened in Stage A. With three sticky collections of paper6's train split a cell holds about five
episodes, whose scores spread over 200 points, so the table's pick per task is mostly noise. This
script measures that on a finished benchmark, without playing an episode: for each seed replicate it
fits :class:`routers.learned.task_table.TaskTable` on ``k`` of the benchmark's Stage A collections
(every subset drawn from the collections of all replicates, several draws per ``k``), lets it pick
one model per val task at each λ, and reads what that pick scored and cost in the replicate's own
single-model val runs (the same val episodes every model played). Val only: nothing here reads a
test split, so what it shows may size Stage A.

    python benchmarks/table_learning_curve.py results/verdict --sizes 1,3,6,9 --draws 10
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.benchmarks import get_benchmark  # noqa: E402
from harness.layout import ResultsLayout  # noqa: E402
from harness.records import TurnRecord  # noqa: E402
from harness.trajectory import RunStore, episode_file_name  # noqa: E402
from routers.learned.task_table import TaskTable  # noqa: E402


def openings(run_dir: Path) -> list[tuple[str, str, float, float]]:
    """(task, opening model, score in [0, 1], cost in dollars) of each finished episode of a logged run."""
    out = []
    store = RunStore(run_dir)
    for record in store.episodes():
        if record.score is None:
            continue
        with open(store.turns_dir / episode_file_name(record.episode)) as turns:
            first = turns.readline()  # the opening decision is all this needs of a long turn file
        if first.strip():
            low, high = get_benchmark(record.benchmark).score_range
            score = (float(record.score) - low) / (high - low)
            opening = TurnRecord.from_line(json.loads(first), store.format_version, str(turns.name))
            out.append((record.task, opening.model, score, float(record.cost)))
    return out


def single_model_val(replicate: ResultsLayout) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, int]]:
    """Mean (score, cost) of each (task, model) over the replicate's single-model val runs, and each
    task's number of val episodes."""
    cells: dict[tuple[str, str], list] = defaultdict(list)
    for run in replicate.point_runs("val"):
        if not run.point.startswith("single:"):
            continue
        model = run.point.split(":", 1)[1]
        for record in RunStore(run.path).episodes():
            cells[(record.task, model)].append((record.score, record.cost))
    tasks: dict[str, int] = defaultdict(int)
    first = min(m for _, m in cells)
    for (task, model), rows in cells.items():
        if model == first:
            tasks[task] = len(rows)
    return {k: np.mean(v, axis=0) for k, v in cells.items()}, dict(tasks)


def realised(choice: dict[str, str], truth, tasks: dict[str, int]) -> tuple[float, float]:
    n = sum(tasks.values())
    score = sum(tasks[t] * truth[(t, choice[t])][0] for t in tasks) / n
    cost = sum(tasks[t] * truth[(t, choice[t])][1] for t in tasks) / n
    return score, cost


def table_choices(
    rows, models: list[str], tasks, lambdas: list[float], weight: float
) -> list[dict[str, str]]:
    """The table's pick per task at each λ, from one fit."""
    task = np.array([r[0] for r in rows])
    model_index = np.array([models.index(r[1]) for r in rows])
    outcomes = np.array([(r[2], r[3]) for r in rows])
    table = TaskTable.fit(task, model_index, outcomes, len(models), weight)
    labels = np.array(sorted(tasks))
    values = table.lookup(table.rows_of(labels), list(range(len(models))))
    # The learned families' units: score in [0, 1], cost over the training episodes' mean cost.
    cost = values[..., 1] / outcomes[:, 1].mean()
    return [
        {t: models[int(np.argmax(u))] for t, u in zip(labels, values[..., 0] - lam * cost, strict=True)}
        for lam in lambdas
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_dir", type=Path, help="a finished benchmark's results directory")
    parser.add_argument("--sizes", default="1,3,6,9", help="Stage A collections per point")
    parser.add_argument("--draws", type=int, default=10, help="random subsets of collections per size")
    parser.add_argument("--lambdas", default="0,0.05,0.25")
    parser.add_argument("--weights", default="2,8", help="table prior weights (episodes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    replicates = ResultsLayout(args.bench_dir).replicates()
    if not replicates:
        parser.error(f"{args.bench_dir} has no seed replicates (seeds/s*)")
    collections = [openings(d) for r in replicates for d in r.data_runs() if (d / "episodes.jsonl").exists()]
    models = sorted({row[1] for c in collections for row in c})
    sizes = [int(x) for x in args.sizes.split(",")]
    if max(sizes) > len(collections):
        parser.error(f"--sizes asks for {max(sizes)} collections; {args.bench_dir} holds {len(collections)}")
    lambdas = [float(x) for x in args.lambdas.split(",")]
    weights = [float(x) for x in args.weights.split(",")]
    rng = np.random.default_rng(args.seed)
    print(
        f"{len(collections)} Stage A collections of {len(collections[0])} episodes; models: {', '.join(models)}"
    )
    print(
        "score and cost ratio realised on val, mean over draws; the best single model is each replicate's val-best"
    )
    for replicate in replicates:
        truth, tasks = single_model_val(replicate)
        singles = {m: realised({t: m for t in tasks}, truth, tasks) for m in models}
        best = max(singles, key=lambda m: singles[m][0])
        best_score, best_cost = singles[best]
        print(
            f"\n{replicate.root.name}: best single {best} {best_score:.1f} at ${best_cost:.4f}; {len(tasks)} val tasks"
        )
        header = "  ".join(f"w={w:g} λ={lam:g}".ljust(15) for w in weights for lam in lambdas)
        print(f"  {'k':>3}  {header}")
        for k in sizes:
            cells = defaultdict(list)
            for _ in range(args.draws):
                drawn = rng.choice(len(collections), size=k, replace=False)
                rows = [row for i in drawn for row in collections[i]]
                for w in weights:
                    for lam, choice in zip(
                        lambdas, table_choices(rows, models, tasks, lambdas, w), strict=True
                    ):
                        cells[(w, lam)].append(realised(choice, truth, tasks))
            line = "  ".join(
                f"{np.mean([s for s, _ in v]) - best_score:+5.1f} @{np.mean([c for _, c in v]) / best_cost:.2f}".ljust(
                    15
                )
                for v in cells.values()
            )
            print(f"  {k:>3}  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
