"""Multi-objective tuning of a learned router family's operating points with Optuna.

A study maximises mean score and minimises mean cost per episode on the VAL split
(the orchestrator's ``evaluate`` only runs val episodes; test splits are never
seen while choosing). Its Pareto-optimal trials are the candidate operating points.

The sampler is multi-objective TPE: with the tens of trials a routing study
affords it models the front from the first trials on, where NSGA-II would still be
drawing its random first generation. Its draws for a trial are seeded from the
study's seed and the trial's place in the study (failed trials that were run again
do not count), never from a stream that a restart would reset: a one-process study
interrupted at any point (kill -9 included) and resumed runs the cut-off trial again
with its params, then proposes what it would have proposed uninterrupted, and picks
the same operating points. Lambda, the cost weight, is searched on a linear axis.
The default range starts at 0, the pure-quality end of the sweep, which a log axis
cannot reach; and the sampler is told the range's two ends first, so the front's
extremes are measured, not left to chance. Pass ``lam_log=True`` with a positive
lower bound when the interesting lambdas span orders of magnitude.

Lambda is an inference-time knob, so trials that differ only in lambda reuse one
trained network. ``extra_space`` may add training hyperparameters; the
orchestrator's ``evaluate`` then splits a trial's params with
:func:`training_params` and caches trained checkpoints under
``models/<family>/<training_key(...)>/``, retraining only for an unseen key.

The storage makes a study resumable: ``n_trials`` is the number of COMPLETE trials
wanted in total, so rerunning after an interrupt runs only the missing ones, and a
trial the interrupt cut off is run again first, with the same params.

Where a study lives is a storage URL. ``sqlite:///<file>`` (the default, a file in
the benchmark's results) serves one process: SQLite serialises writers, so parallel
workers would stall on its lock. There a trial that crashed (left RUNNING) or failed
is run again with its params when the study is resumed. ``postgresql://...`` and
``journal:///<file>`` are shared: several worker processes run one study at the same
time. A trial on a shared storage can no longer be presumed dead because it is
RUNNING (another worker may be running it), so its worker beats a heartbeat, any
worker fails a trial whose heartbeat went silent for the grace period, and Optuna's
own retry callback queues its params again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, Trial, TrialState

from harness.config import DEFAULT_LAM_RANGE
from harness.errors import ConfigError, HarnessError, MissingDependencyError
from harness.seeding import derive_seed
from harness.storage import create_atomically, guarded

BUDGET_CONSTRAINT = "budget"
SPACE_KINDS = ("float", "int", "categorical")
ENDS_QUEUED_ATTR = "lam_ends_queued"
STORAGE_SCHEMES = ("sqlite", "postgresql", "journal")
# A trial system attribute: wall-clock time (seconds) of its worker's last heartbeat on a journal storage.
JOURNAL_HEARTBEAT_ATTR = "harness:heartbeat"
# A trial user attribute: its evaluation gave non-finite values (a result, never run again).
NON_FINITE_ATTR = "harness:non_finite"
# Trial system attributes of Optuna's retries (its retry callbacks write them; so does a resume here).
RETRY_HISTORY_ATTR = "retry_history"
FIXED_PARAMS_ATTR = "fixed_params"
# Any fixed number: the advisory lock under which workers create Optuna's tables in a PostgreSQL database.
_SCHEMA_LOCK_KEY = 0x6F7074756E61
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*):[^@/]*@")


@dataclass(frozen=True)
class Heartbeat:
    """Liveness of trials on a shared storage.

    A worker beats every ``interval_s`` while its trial runs; a RUNNING trial silent
    for ``grace_s`` counts as dead. The grace must outlast a beat delayed by a busy
    database or a paused process, hence several intervals. A dead trial's params are
    queued again at most ``max_retry`` times, so a trial that kills its worker every
    time (out of memory, say) cannot starve the study.
    """

    interval_s: int = 60
    grace_s: int = 180
    max_retry: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.interval_s < self.grace_s:
            raise ConfigError(
                f"heartbeat: need 1 <= interval_s < grace_s, got {self.interval_s}, {self.grace_s}"
            )
        if self.max_retry < 0:
            raise ConfigError(f"heartbeat: max_retry must be >= 0, got {self.max_retry}")


def storage_uri(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def local_file(url: str) -> Path | None:
    """The file a SQLite or journal storage URL keeps the studies in; None for a database server (or
    SQLite in memory)."""
    scheme = storage_scheme(url)
    if scheme == "sqlite":
        path = url.removeprefix("sqlite:///")
        return Path(path) if path and path != url and path != ":memory:" else None
    if scheme == "journal":
        return Path(url.removeprefix("journal://"))
    return None


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for an error message or a log line."""
    return _PASSWORD_IN_URL.sub(r"\1:***@", url)


def storage_scheme(url: str) -> str:
    """``sqlite``, ``postgresql`` or ``journal``; the driver suffix (``postgresql+psycopg``) is dropped."""
    scheme = url.partition("://")[0].partition("+")[0] if "://" in url else ""
    if scheme not in STORAGE_SCHEMES:
        raise ConfigError(
            f"tuning storage {redact_url(url)!r}: not a storage URL; use sqlite:///<file>, "
            "postgresql://<user>@<host>:<port>/<db> or journal:///<file>"
        )
    return scheme


def is_shared(url: str) -> bool:
    """Whether several worker processes may run trials of one study on this storage at once."""
    return storage_scheme(url) != "sqlite"


class _HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage, speaking Optuna's heartbeat protocol.

    Optuna gives its RDB storage a heartbeat but not its journal storage. Implementing
    the heartbeat interface here lets Optuna's optimize loop do the rest exactly as on
    PostgreSQL: beat while a trial runs, fail stale trials before each new one, and
    hand them to the retry callback. A beat is a trial system attribute holding the
    beating worker's wall-clock time, so the workers of one journal must share a clock
    (one machine, or hosts kept in sync by NTP). A retried trial inherits its
    predecessor's last beat, so the trial's own start bounds its silence from below.
    """

    def __init__(self, backend: JournalFileBackend, heartbeat: Heartbeat) -> None:
        super().__init__(backend)
        self._heartbeat = heartbeat
        self._retry = RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, JOURNAL_HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(JOURNAL_HEARTBEAT_ATTR)
            # Like the RDB storage: a trial that never beat (run without a heartbeat) is not judged.
            if beat is None:
                continue
            last_sign_of_life = max(float(beat), trial.datetime_start.timestamp())
            if now - last_sign_of_life > self._heartbeat.grace_s:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int:
        return self._heartbeat.interval_s

    def get_heartbeat_stale_trial_callback(self) -> RetryHeartbeatStaleTrialCallback:
        return self._retry


@contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock while Optuna creates or checks its tables.

    Workers opening a fresh database at once would race to create the tables and to
    stamp the schema version, and all but one would fail.
    """
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


def _rdb_storage(url: str, shown: str, **kwargs: Any) -> RDBStorage:
    import sqlalchemy.exc

    try:
        with _schema_lock(url) if url.startswith("postgresql") else contextlib.nullcontext():
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **kwargs)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"tuning storage {redact_url(shown)!r}: needs the database driver {exc.name!r}; "
            "pip install 'psycopg[binary]'"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise HarnessError(f"tuning storage {redact_url(shown)!r}: cannot open: {reason}") from None


def open_storage(url: str, heartbeat: Heartbeat = Heartbeat()) -> BaseStorage:
    """The Optuna storage a URL names; shared storages come with a heartbeat and a retry of dead trials."""
    scheme = storage_scheme(url)
    with warnings.catch_warnings():
        # Optuna flags its heartbeat and retry callback as experimental; they are what a shared study needs.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _open_storage(url, scheme, heartbeat)


def _open_storage(url: str, scheme: str, heartbeat: Heartbeat) -> BaseStorage:
    if scheme == "sqlite":
        path = local_file(url)
        if path is not None:  # created whole or not at all: a rerun after a failed creation starts afresh
            create_atomically(
                path, lambda tmp: _rdb_storage(f"sqlite:///{tmp.resolve()}", url).engine.dispose()
            )
        return _rdb_storage(url, url)
    if scheme == "postgresql":
        # Name the driver this project installs; SQLAlchemy's default driver differs between its versions.
        driven = (
            url.replace("postgresql://", "postgresql+psycopg://", 1)
            if url.startswith("postgresql://")
            else url
        )
        return _rdb_storage(
            driven,
            url,
            heartbeat_interval=heartbeat.interval_s,
            grace_period=heartbeat.grace_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry),
        )
    path = url.removeprefix("journal://")
    if not path.startswith("/") or path.endswith("/"):
        raise ConfigError(f"tuning storage {url!r}: a journal URL names a file by its absolute path")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return _HeartbeatJournalStorage(JournalFileBackend(path), heartbeat)


class _NoRaisedTrialFailures(logging.Filter):
    """Drops Optuna's report of a trial that raised (Ctrl-C included): the exception itself reaches the
    caller, which reports it in one line; Optuna would add its traceback and a "failed with value
    None" line. Failures without an exception (non-finite values) are still reported."""

    def __init__(self) -> None:
        super().__init__()
        self._raised: str | None = None  # "Trial <n>" of the last trial that raised

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info is not None:
            self._raised = message.split(" failed", 1)[0]
            return False
        return self._raised is None or not message.startswith(f"{self._raised} failed with value")


# The logger of Optuna's optimize loop, which reports failed trials.
_OPTIMIZE_LOGGER = "optuna.study._optimize"


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial INFO lines and its tracebacks for the duration of a call only."""
    logger = logging.getLogger("optuna")
    level = logger.level
    no_tracebacks = _NoRaisedTrialFailures()
    logger.setLevel(logging.WARNING)
    logging.getLogger(_OPTIMIZE_LOGGER).addFilter(no_tracebacks)
    try:
        yield
    finally:
        logging.getLogger(_OPTIMIZE_LOGGER).removeFilter(no_tracebacks)
        logger.setLevel(level)


def _check_space(extra_space: dict[str, dict[str, Any]]) -> None:
    for name, spec in extra_space.items():
        where = f"tuning space {name!r}"
        if name == "lam":
            raise ConfigError(f"{where}: lambda is searched already; set lam_range instead")
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_KINDS:
            raise ConfigError(f"{where}: needs type one of {', '.join(SPACE_KINDS)}")
        if spec["type"] == "categorical" and not spec.get("choices"):
            raise ConfigError(f"{where}: a categorical needs a non-empty 'choices' list")
        if spec["type"] != "categorical" and not (
            "low" in spec and "high" in spec and spec["low"] <= spec["high"]
        ):
            raise ConfigError(f"{where}: needs 'low' <= 'high'")


def _suggest(trial: Trial, name: str, spec: dict[str, Any]) -> Any:
    kind = spec["type"]
    if kind == "categorical":
        return trial.suggest_categorical(name, spec["choices"])
    if kind == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], log=spec.get("log", False))
    return trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


class _PlaceSeededSampler(optuna.samplers.BaseSampler):
    """Multi-objective TPE whose draws for a trial depend on the study's seed and the trial's place only.

    A sampler holding one random stream draws differently after a restart (a new stream) or
    after a trial was cut off (the stream moved on). Here each trial gets a fresh TPE seeded
    by its place: the number of earlier trials, not counting failed ones that were run
    again. A resumed study's trials thus get the places, history and seeds they would have
    had uninterrupted. Workers of a shared study mix their number into the seed so that
    concurrent trials draw apart; worker 0 keeps the seeds of a study tuned by one process.
    """

    def __init__(self, seed: int, study_name: str, worker: int, constant_liar: bool):
        self._seed_parts = (seed, study_name)
        self._worker = (worker,) if worker else ()
        self._constant_liar = constant_liar
        self._current: tuple[int, optuna.samplers.TPESampler] | None = None

    def _for(self, study: optuna.Study, trial: FrozenTrial) -> optuna.samplers.TPESampler:
        if self._current is None or self._current[0] != trial.number:
            place = _place(study.get_trials(deepcopy=False), trial.number)
            sampler = optuna.samplers.TPESampler(
                seed=derive_seed(*self._seed_parts, place, *self._worker) % 2**32,
                multivariate=True,
                # A worker treats trials running elsewhere as bad results, so workers do not all probe one spot.
                constant_liar=self._constant_liar,
            )
            self._current = (trial.number, sampler)
        return self._current[1]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._for(study, trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return self._for(study, trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._for(study, trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(study, trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._for(study, trial).after_trial(study, trial, state, values)


def _retried(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the failed trials that a later trial runs (or ran) again."""
    return {number for t in trials for number in t.system_attrs.get(RETRY_HISTORY_ATTR, ())}


def _place(trials: list[FrozenTrial], number: int) -> int:
    retried = _retried(trials)
    return sum(1 for t in trials if t.number < number and t.number not in retried)


def _queued_params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's params; a WAITING trial queued by ``enqueue_trial`` holds them as fixed params only."""
    return trial.params or trial.system_attrs.get(FIXED_PARAMS_ATTR, {})


def _trial_count(storage: BaseStorage, study_name: str) -> int:
    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False))
    except KeyError:
        return 0


def _requeue_unfinished(study: optuna.Study) -> None:
    """Fail trials a crash left RUNNING, and queue every failed trial's params again, as Optuna's retries.

    Only on a one-process storage, where a RUNNING trial at start-up is certainly dead.

    A failed trial that was queued again already, whose params a trial completed or
    holds queued, or whose evaluation gave non-finite values (a result, which would
    only fail again) is not queued.
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    settled = [_queued_params(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.WAITING)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Optuna's own retry (a WAITING trial with the params, its retry history in system attrs).
        retry = RetryHeartbeatStaleTrialCallback(max_retry=None)
    for trial in trials:
        # A queued trial killed before its evaluation asked for its params has them as fixed params only.
        params = _queued_params(trial)
        if (
            trial.state == TrialState.FAIL
            and params
            and trial.number not in retried
            and params not in settled
            and not trial.user_attrs.get(NON_FINITE_ATTR)
        ):
            retry(study, trial)
            settled.append(params)


def tune(
    family: str,
    evaluate: Callable[[dict[str, Any]], tuple[float, float]],
    storage_path: Path | None,
    study_name: str,
    n_trials: int,
    lam_range: tuple[float, float] = DEFAULT_LAM_RANGE,
    budget_per_episode: float | None = None,
    extra_space: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    lam_log: bool = False,
    storage: str | None = None,
    worker: int = 0,
    heartbeat: Heartbeat = Heartbeat(),
) -> optuna.Study:
    """Run (or resume) the study until it holds ``n_trials`` complete trials.

    The study lives in the ``storage`` URL, else in the SQLite file ``storage_path``.
    On a shared storage, start one ``tune`` per worker process with the same
    arguments and a distinct ``worker`` number: it seeds that worker's sampler apart
    from the others', and worker 0 alone queues the lambda range's two ends. Each
    worker returns once the study holds ``n_trials`` complete trials, whoever ran
    them; trials still running elsewhere at that moment may add up to one more per
    worker.

    ``evaluate(params)`` gets ``{"lam": ..., **extra}`` and returns the val split's
    (mean score, mean cost per episode). With ``budget_per_episode`` a trial is
    feasible only if its mean cost is within it (constraint ``cost - budget <= 0``);
    infeasible trials stay in the study but never reach :func:`best_points`.
    ``extra_space`` maps a parameter name to ``{"type": "float"|"int"|"categorical",
    "low", "high", "log", "choices"}``.
    """
    lo, hi = map(float, lam_range)
    if not 0.0 <= lo <= hi:
        raise ConfigError(f"lam_range {lam_range} must satisfy 0 <= low <= high")
    if lam_log and lo <= 0.0:
        raise ConfigError(f"lam_range {lam_range} must start above 0 on a log axis")
    if n_trials < 1:
        raise ConfigError(f"n_trials must be >= 1, got {n_trials}")
    extra_space = dict(extra_space or {})
    _check_space(extra_space)

    def objective(trial: Trial) -> tuple[float, float]:
        params = {"lam": trial.suggest_float("lam", lo, hi, log=lam_log)}
        params |= {name: _suggest(trial, name, spec) for name, spec in extra_space.items()}
        score, cost = evaluate(params)
        if not (math.isfinite(score) and math.isfinite(cost)):
            trial.set_user_attr(NON_FINITE_ATTR, True)  # Optuna fails the trial on these values
        if budget_per_episode is not None:
            # Optuna 5 takes constraints from the trial (its constraints_func argument is deprecated).
            trial.set_constraint(BUDGET_CONSTRAINT, float(cost) - budget_per_episode)
        return float(score), float(cost)

    if storage is None:
        if storage_path is None:
            raise ConfigError(f"study {study_name!r}: give a storage URL or a storage_path")
        storage = storage_uri(storage_path)
    shared = is_shared(storage)
    if worker and not shared:
        raise ConfigError(
            f"tuning storage {redact_url(storage)!r} serves one process; "
            "parallel workers need postgresql:// or journal://"
        )
    where = local_file(storage)
    with _quiet_optuna(), guarded(where) if where is not None else contextlib.nullcontext():
        backend = open_storage(storage, heartbeat)
        existing = _trial_count(backend, study_name)
        sampler = _PlaceSeededSampler(seed, study_name, worker, constant_liar=shared)
        study = optuna.create_study(
            storage=backend,
            study_name=study_name,
            directions=["maximize", "minimize"],
            sampler=sampler,
            load_if_exists=True,
        )
        study.set_user_attr("family", family)
        study.set_user_attr("lam_range", [lo, hi])
        study.set_user_attr("budget_per_episode", budget_per_episode)
        # Worker 0 queues the range's ends once per study; on one process only into a new study, as ever.
        if worker == 0 and not study.user_attrs.get(ENDS_QUEUED_ATTR) and (shared or existing == 0):
            for lam in dict.fromkeys((lo, hi)):
                study.enqueue_trial({"lam": lam}, skip_if_exists=True)
            study.set_user_attr(ENDS_QUEUED_ATTR, True)
        if not shared:
            _requeue_unfinished(study)
        # Stops this worker as soon as the study, filled by any worker, holds n_trials complete trials.
        enough = MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,))
        # Trials whose values are not finite end FAIL without raising; retry them, but not forever.
        while (missing := n_trials - len(_complete(study))) > 0:
            study.optimize(objective, n_trials=missing, callbacks=[enough])
            if n_trials - len(_complete(study)) == missing:
                raise HarnessError(
                    f"study {study_name!r}: no trial of {missing} completed; evaluate gave non-finite values"
                )
    return study


def best_points(study: optuna.Study) -> list[dict[str, Any]]:
    """Params of the feasible Pareto-optimal trials, cheapest first."""
    return [t.params for t in sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0]))]


def training_params(params: dict[str, Any], training_names: set[str]) -> dict[str, Any]:
    """The part of a trial's params that changes the trained network (lambda never does)."""
    return {k: v for k, v in params.items() if k in training_names}


def training_key(family: str, training: dict[str, Any]) -> str:
    """Cache key of a trained checkpoint: same family and training params, same network."""
    canonical = json.dumps({"family": family, **training}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
