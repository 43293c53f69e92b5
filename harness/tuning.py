"""Multi-objective tuning of a learned router family's operating points with Optuna.

A study maximises mean score and minimises mean cost per episode on the VAL split
(the orchestrator's ``evaluate`` only runs val episodes; test splits are never
seen while choosing). Its Pareto-optimal trials are the candidate operating points.

The sampler is multi-objective TPE, seeded: with the tens of trials a routing
study affords it models the front from the first trials on, where NSGA-II would
still be drawing its random first generation. Lambda, the cost weight, is searched
on a linear axis. The default range starts at
0, the pure-quality end of the sweep, which a log axis cannot reach; and the sampler
is told the range's two ends first, so the front's extremes are measured, not left
to chance. Pass ``lam_log=True`` with a positive lower bound when the interesting
lambdas span orders of magnitude.

Lambda is an inference-time knob, so trials that differ only in lambda reuse one
trained network. ``extra_space`` may add training hyperparameters; the
orchestrator's ``evaluate`` then splits a trial's params with
:func:`training_params` and caches trained checkpoints under
``models/<family>/<training_key(...)>/``, retraining only for an unseen key.

The SQLite storage makes a study resumable: ``n_trials`` is the number of COMPLETE
trials wanted in total, so rerunning after an interrupt runs only the missing ones,
and a trial that crashed (left RUNNING) or failed is run again with its params.
One process tunes a study at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from harness.errors import ConfigError, HarnessError
from harness.seeding import derive_seed

BUDGET_CONSTRAINT = "budget"
SPACE_KINDS = ("float", "int", "categorical")


def storage_uri(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial INFO lines for the duration of a call only."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
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


def _trial_count(storage: str, study_name: str) -> int:
    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False))
    except KeyError:
        return 0


def _requeue_unfinished(study: optuna.Study) -> None:
    """Fail trials a crash left RUNNING, and queue every failed trial's params again.

    A failed trial whose params a later trial already completed, or that is queued
    already, is not queued twice.
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    settled = [
        t.params for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING))
    ]
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.params and trial.params not in settled:
            study.enqueue_trial(trial.params)
            settled.append(trial.params)


def tune(
    family: str,
    evaluate: Callable[[dict[str, Any]], tuple[float, float]],
    storage_path: Path,
    study_name: str,
    n_trials: int,
    lam_range: tuple[float, float] = (0.0, 5.0),
    budget_per_episode: float | None = None,
    extra_space: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    lam_log: bool = False,
) -> optuna.Study:
    """Run (or resume) the study until it holds ``n_trials`` complete trials.

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
        if budget_per_episode is not None:
            # Optuna 5 takes constraints from the trial (its constraints_func argument is deprecated).
            trial.set_constraint(BUDGET_CONSTRAINT, float(cost) - budget_per_episode)
        return float(score), float(cost)

    with _quiet_optuna():
        storage = storage_uri(storage_path)
        existing = _trial_count(storage, study_name)
        # Reseed by history length: a resumed study must not replay the first session's random draws.
        sampler = optuna.samplers.TPESampler(
            seed=derive_seed(seed, study_name, existing) % 2**32, multivariate=True
        )
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=["maximize", "minimize"],
            sampler=sampler,
            load_if_exists=True,
        )
        study.set_user_attr("family", family)
        study.set_user_attr("lam_range", [lo, hi])
        study.set_user_attr("budget_per_episode", budget_per_episode)
        if existing == 0:
            for lam in dict.fromkeys((lo, hi)):
                study.enqueue_trial({"lam": lam}, skip_if_exists=True)
        _requeue_unfinished(study)
        # Trials whose values are not finite end FAIL without raising; retry them, but not forever.
        while (missing := n_trials - len(_complete(study))) > 0:
            study.optimize(objective, n_trials=missing)
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
