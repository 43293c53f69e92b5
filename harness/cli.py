"""Command line: run episodes and batches, summarise runs, calibrate the simulated pool."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.config import Limits, RouterSpec, RunConfig, from_dict, load_yaml
from harness.errors import ConfigError, HarnessError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


def one_line_errors(fn):
    """Turn user-facing errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HarnessError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def parse_params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"router parameter {pair!r} is not of the form key=value")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        params[key] = parsed
    return params


def episode_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("score {task.fields[score]:.1f}  ${task.fields[dollars]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def execute(config: RunConfig, out: Path, label: str | None = None, workers=None) -> list[dict]:
    """Run a batch with a progress bar; returns all episode records of the run directory.

    ``workers`` (a :class:`harness.batch.Workers`) lets a caller keep worker processes across batches.
    """
    from harness.batch import prepare, run_batch

    batch = prepare(config, out)
    pending = batch.pending
    done = len(batch.tasks) - len(pending)
    finished = [e for e in batch.store.episodes() if e["score"] is not None]
    scores: list[float] = [e["score"] for e in finished]
    dollars = [sum(e["cost"] for e in finished)]
    with episode_progress() as progress:
        bar = progress.add_task(
            label or config.router.label,
            total=len(batch.tasks),
            completed=done,
            score=sum(scores) / len(scores) if scores else 0.0,
            dollars=dollars[0],
        )

        def on_episode(record: dict) -> None:
            if record["score"] is not None:
                scores.append(record["score"])
                dollars[0] += record["cost"]
            progress.update(bar, advance=1, score=sum(scores) / max(1, len(scores)), dollars=dollars[0])

        run_batch(batch, on_episode, workers)
    return batch.store.episodes()


@app.command()
@one_line_errors
def run(
    out: Annotated[Path, typer.Option(help="Run directory (created; rerunning resumes it)")],
    router: Annotated[str, typer.Option(help="Router name (see `harness routers`)")] = "random",
    param: Annotated[list[str], typer.Option("--param", "-p", help="Router parameter key=value")] = [],  # noqa: B006
    pool: Annotated[str, typer.Option(help="Pool name under benchmarks/pools or a YAML path")] = "paper6",
    split: Annotated[str, typer.Option(help="train | val | test_id | test_ood")] = "test_id",
    quick: Annotated[bool, typer.Option(help="Use the quick subset of the split")] = False,
    tasks: Annotated[str | None, typer.Option(help="Regular expression on task type names")] = None,
    workers: Annotated[int, typer.Option(help="Parallel worker processes (one JVM each)")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    max_turns: Annotated[int, typer.Option()] = Limits.max_turns,
    budget: Annotated[float, typer.Option(help="Dollar budget per episode")] = Limits.budget_dollars,
    backend: Annotated[str, typer.Option(help="simulated | litellm")] = "simulated",
    config: Annotated[Path | None, typer.Option(help="RunConfig YAML; overrides the options above")] = None,
) -> None:
    """Run a batch of episodes of one router."""
    from harness.summary import RunSummary, render_table

    if config is not None:
        run_config = from_dict(RunConfig, load_yaml(config), str(config))
    else:
        run_config = RunConfig(
            router=RouterSpec(router, parse_params(param)),
            pool=pool,
            split=split,
            quick=quick,
            task_filter=tasks,
            workers=workers,
            seed=seed,
            limits=Limits(max_turns=max_turns, budget_dollars=budget),
            backend=backend,
        )
    records = execute(run_config, out)
    Console().print(render_table([RunSummary.of(records, run=str(out))], title=str(out)))


@app.command("episode")
@one_line_errors
def episode(
    task: Annotated[str, typer.Option(help="Task type, e.g. boil")],
    out: Annotated[Path, typer.Option(help="Run directory")],
    variation: Annotated[int, typer.Option()] = 0,
    router: Annotated[str, typer.Option()] = "single",
    param: Annotated[list[str], typer.Option("--param", "-p")] = ["model=gpt-5"],  # noqa: B006
    pool: Annotated[str, typer.Option()] = "paper6",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Run one episode and print its turns."""
    from harness.agent import run_episode
    from harness.batch import Worker
    from harness.trajectory import RunStore
    from harness.types import TaskInstance

    run_config = RunConfig(router=RouterSpec(router, parse_params(param)), pool=pool, split="any", seed=seed)
    worker = Worker()
    try:
        store = RunStore(out)
        store.open({"run": {"single_episode": task, "variation": variation, "router": router}})
        player = worker.player(run_config, out)
        instance = TaskInstance("scienceworld", task, variation, "any")
        result = run_episode(
            player.env, player.backends, player.router, instance, seed, run_config.limits, store
        )
        store.record_episode(result.record(run_config.router.label))
    finally:
        worker.close()
    for t in store.turns(instance.key):
        print(f"[{t['turn']:2d}] {t['model']:<22} {t['action'] or '<format error>':<40} score={t['score']:g}")
    print(
        f"status={result.status} score={result.score:g} cost=${result.ledger.total:.4f} turns={result.turns}"
    )


def table_console() -> Console:
    """Stdout; when it is not a terminal (a log, a pipe), wide enough that no router label is cut."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=160)


@app.command()
@one_line_errors
def summarize(runs: Annotated[list[Path], typer.Argument(help="Run directories")]) -> None:
    """Print score, cost, turns and switch rate of stored runs."""
    from harness.summary import render_table, summarize_run

    table_console().print(render_table([summarize_run(r) for r in runs]))


@app.command()
@one_line_errors
def calibrate(
    pool: Annotated[str, typer.Option()] = "paper6",
    work: Annotated[Path, typer.Option(help="Where the calibration runs are stored")] = Path(
        "results/calibration"
    ),
    workers: Annotated[int, typer.Option()] = 2,
    fit: Annotated[
        bool, typer.Option(help="Refit the simulated profiles and rewrite the pool file first")
    ] = False,
) -> None:
    """Print ours-vs-paper for the single-model baselines on test_id (optionally fit first)."""
    from rich.table import Table

    from harness.calibration import fit as fit_pool
    from harness.calibration import measure

    if fit:
        fit_pool(pool, work / "fit", workers)
    from harness.pool import load_pool

    rows = measure(pool, work / f"check-{load_pool(pool).sha256[:12]}", workers)
    table = Table(title=f"Calibration of pool {pool!r} on test_id (paper: MTRouter ScienceWorld table)")
    for column in ("model", "episodes", "score", "paper", "ok", "$/episode", "paper $/ep", "ok "):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(
            r.model,
            str(r.episodes),
            f"{r.score:.1f}",
            f"{r.target_score:.1f}",
            "yes" if r.score_ok else "NO",
            f"{r.cost:.4f}",
            f"{r.target_cost:.4f}",
            "yes" if r.cost_ok else "NO",
        )
    Console().print(table)
    if not all(r.score_ok and r.cost_ok for r in rows):
        raise typer.Exit(1)


@app.command()
@one_line_errors
def benchmark(
    name: Annotated[str, typer.Argument(help="Benchmark name under benchmarks/ or a YAML path")] = "quick",
    results: Annotated[Path, typer.Option(help="Results root; the benchmark writes results/<name>/")] = Path(
        "results"
    ),
    reports: Annotated[Path, typer.Option(help="Where the Markdown report goes")] = Path("reports"),
    track: Annotated[bool, typer.Option(help="Log to the MLflow store in the results directory")] = True,
) -> None:
    """Collect, train, tune, evaluate, log to MLflow and write the report."""
    from harness.benchmark import BenchmarkRun, load_benchmark
    from harness.summary import render_table, summarize_run

    definition = load_benchmark(name)
    outputs = BenchmarkRun(definition, results).execute(track=track, report_dir=reports)
    for split in definition.eval_splits:
        runs = sorted(p for p in (results / definition.name / "runs" / split).iterdir() if p.is_dir())
        table_console().print(
            render_table([summarize_run(r) for r in runs], title=f"{definition.name}: {split}")
        )
    for key, value in outputs.items():
        print(f"{key}: {value}")


@app.command()
@one_line_errors
def report(
    bench_dir: Annotated[Path, typer.Argument(help="A benchmark's results directory, e.g. results/quick")],
    reports: Annotated[Path, typer.Option()] = Path("reports"),
) -> None:
    """Regenerate a benchmark's report from its stored runs."""
    from harness.report import write_report

    print(write_report(bench_dir, reports))


@app.command()
@one_line_errors
def train(
    router: Annotated[str, typer.Argument(help="mtrouter | lgbm | ridge | cluster")],
    data: Annotated[list[Path], typer.Option("--data", help="Trajectory run directories")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory")],
    param: Annotated[list[str], typer.Option("--param", "-p", help="Hyperparameter key=value")] = [],  # noqa: B006
) -> None:
    """Train a learned router from logged trajectories and print its fit report."""
    from routers.learned.train import train_router

    print(train_router(router, data, out, **parse_params(param)))


@app.command()
@one_line_errors
def ui(
    results: Annotated[Path, typer.Option()] = Path("results"),
    bench: Annotated[str, typer.Option(help="Benchmark name")] = "quick",
    port: Annotated[int, typer.Option()] = 5000,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
) -> None:
    """Serve the MLflow UI (and its REST API) on a benchmark's store."""
    import os

    from harness.errors import UnknownNameError
    from harness.tracking import server_command

    bench_dir = (results / bench).resolve()
    if not (bench_dir / "mlflow.db").exists():
        raise UnknownNameError(f"no MLflow store in {bench_dir}; run `make benchmark` first")
    argv, env = server_command(bench_dir, port, host)
    print(f"MLflow UI on http://{host}:{port} (store {bench_dir / 'mlflow.db'})", flush=True)
    os.execve(argv[0], argv, env)


@app.command()
def routers() -> None:
    """List router names (built-in and plugins)."""
    from routers import available

    for name, target in sorted(available().items()):
        print(f"{name:<16} {target}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
