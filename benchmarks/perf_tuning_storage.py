"""Parallel-trial throughput of Optuna on PostgreSQL, SQLite and the journal file, at 1 and 2 workers.

Each configuration runs one fresh study to ``--trials`` complete trials with a
cheap objective (``--objective-ms`` of sleep, standing in for an evaluation that
waits on something else), in worker processes that share the study. Storages are
opened by ``harness.tuning.open_storage``: PostgreSQL and the journal with their
heartbeat, SQLite without (as ``tune`` uses them); each worker runs the sampler and
stop rule ``tune`` runs (multivariate TPE with the constant liar, stop at N complete).
The clock starts when every worker has opened its storage (process start and
imports are not counted) and stops when the last one returns. SQLite at 2 workers
is measured although ``tune`` refuses it, to show what its one writer lock costs.

    eval "$(bash .ci/services.sh)"      # a PostgreSQL server; its URL in HARNESS_TEST_POSTGRES_URL
    .venv/bin/python benchmarks/perf_tuning_storage.py [--trials 60] [--objective-ms 20] [--postgres URL]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

STORAGES = ("sqlite", "postgresql", "journal")
WORKERS = (1, 2)


def _worker(url: str, study_name: str, n_trials: int, objective_s: float, seed: int, start, ready) -> None:
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from harness.tuning import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    study = optuna.create_study(
        storage=open_storage(url),
        study_name=study_name,
        directions=["maximize", "minimize"],
        sampler=sampler,
        load_if_exists=True,
    )

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        lam = trial.suggest_float("lam", 0.0, 5.0)
        time.sleep(objective_s)
        return 100.0 - 10.0 * lam, 1.0 / (1.0 + lam)

    ready.wait()
    start.wait()
    study.optimize(objective, callbacks=[MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,))])


def _fresh_postgres_database(admin_url: str) -> str:
    import psycopg

    name = f"perf_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _drop_postgres_database(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _url(storage: str, scratch: Path, postgres: str) -> str:
    if storage == "sqlite":
        return f"sqlite:///{scratch / 'optuna.db'}"
    if storage == "journal":
        return f"journal://{scratch / 'journal.log'}"
    return _fresh_postgres_database(postgres)


def measure(storage: str, workers: int, args: argparse.Namespace) -> tuple[float, int]:
    """Trials per second (complete trials over wall time) and the number of complete trials."""
    import optuna
    from optuna.trial import TrialState

    from harness.tuning import open_storage

    scratch = Path(tempfile.mkdtemp(prefix=f"perf-{storage}-"))
    url = _url(storage, scratch, args.postgres)
    ctx = multiprocessing.get_context("spawn")
    start, ready = ctx.Event(), ctx.Barrier(workers + 1)
    # The first worker creates the study (and Optuna's tables) before the others start, as a launcher would.
    optuna.create_study(storage=open_storage(url), study_name="perf", directions=["maximize", "minimize"])
    procs = [
        ctx.Process(
            target=_worker, args=(url, "perf", args.trials, args.objective_ms / 1000, i, start, ready)
        )
        for i in range(workers)
    ]
    try:
        for proc in procs:
            proc.start()
        ready.wait()
        began = time.perf_counter()
        start.set()
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - began
        if any(proc.exitcode for proc in procs):
            raise SystemExit(
                f"{storage} x{workers}: a worker failed (exit codes {[p.exitcode for p in procs]})"
            )
        trials = optuna.load_study(study_name="perf", storage=open_storage(url)).get_trials(deepcopy=False)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        return complete / elapsed, complete
    finally:
        if storage == "postgresql":
            _drop_postgres_database(args.postgres, url)
        shutil.rmtree(scratch, ignore_errors=True)


def add_postgres_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres",
        default=os.environ.get("HARNESS_TEST_POSTGRES_URL"),
        help="URL of a PostgreSQL database whose role may create databases (default: $HARNESS_TEST_POSTGRES_URL)",
    )


def parse_with_postgres(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, refused at once without a PostgreSQL server to measure on."""
    args = parser.parse_args()
    if not args.postgres:
        raise SystemExit('no PostgreSQL server: run `eval "$(bash .ci/services.sh)"` or pass --postgres URL')
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60, help="complete trials per study")
    parser.add_argument("--objective-ms", type=float, default=20.0, help="sleep per trial")
    add_postgres_option(parser)
    args = parse_with_postgres(parser)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rate: dict[tuple[str, int], float] = {}
    print(
        f"{args.trials} complete trials per study, objective {args.objective_ms:g} ms, TPE (multivariate, liar)"
    )
    print(f"{'storage':<11} {'workers':>7} {'trials':>6} {'trials/s':>9}")
    for storage in STORAGES:
        for workers in WORKERS:
            rate[storage, workers], complete = measure(storage, workers, args)
            print(f"{storage:<11} {workers:>7} {complete:>6} {rate[storage, workers]:>9.1f}")
    print("\nratios")
    for storage in STORAGES:
        print(f"  {storage:<11} 2 workers / 1 worker: {rate[storage, 2] / rate[storage, 1]:.2f}x")
    for workers in WORKERS:
        for storage in ("postgresql", "journal"):
            ratio = rate[storage, workers] / rate["sqlite", workers]
            print(
                f"  {storage:<11} / sqlite at {workers} worker{'s' if workers > 1 else '':<1}: {ratio:.2f}x"
            )
    best = max(rate, key=rate.get)
    print(
        f"  fastest: {best[0]} at {best[1]} workers, {rate[best] / rate['sqlite', 1]:.2f}x sqlite at 1 worker"
    )


if __name__ == "__main__":
    main()
