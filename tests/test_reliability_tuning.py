"""Tuning under kill -9, Ctrl-C and failed trials: exactly once, the same choices as uninterrupted, one line.

Real SQLite Optuna storages (the one-process default); the tuning runs in real worker
processes (tests/tuning_worker.py) killed with SIGKILL or interrupted with SIGINT mid-trial.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from harness.tuning import best_points, open_storage, tune

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "tuning_worker.py"
# Past TPE's 10 random start-up trials, so a resume must reproduce the model's proposals too.
N_TRIALS = 16


def _worker(storage: str, log: Path, hang_marker: Path | None = None, hang_at: int = 0) -> subprocess.Popen:
    argv = [sys.executable, str(WORKER), storage, "study", str(N_TRIALS), "0", "0"]
    if hang_marker is not None:
        argv += [str(hang_marker), str(hang_at)]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    }
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)


def _hang(storage: str, log: Path, marker: Path, hang_at: int) -> tuple[subprocess.Popen, dict]:
    """A worker stopped inside its evaluation number ``hang_at``; the params of that trial."""
    process = _worker(storage, log, marker, hang_at)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "the worker's trial never started"
        time.sleep(0.1)
    marker_params = json.loads(marker.read_text())["params"]
    marker.unlink()
    return process, marker_params


def _finish(storage: str, log: Path) -> None:
    process = _worker(storage, log)
    assert process.wait(timeout=300) == 0, log.read_text()[-2000:]


def _trials(storage: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name="study", storage=open_storage(storage)).get_trials(deepcopy=False)


def _complete(trials: list[FrozenTrial]) -> list[tuple[dict, list[float]]]:
    return [(t.params, t.values) for t in trials if t.state == TrialState.COMPLETE]


def test_kill_9_mid_trial_then_resume_tunes_exactly_as_uninterrupted(tmp_path: Path):
    undisturbed = f"sqlite:///{tmp_path / 'undisturbed.db'}"
    _finish(undisturbed, tmp_path / "undisturbed.log")

    storage = f"sqlite:///{tmp_path / 'killed.db'}"
    marker = tmp_path / "hung.json"
    hung = []
    # Killed in a queued range end, among the random start-up trials, and where TPE models the front.
    for session, hang_at in enumerate((0, 3, 9)):
        process, params = _hang(storage, tmp_path / f"killed-{session}.log", marker, hang_at)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
        hung.append(params)
    _finish(storage, tmp_path / "resumed.log")

    trials = _trials(storage)
    # The same trials with the same results (a cut-off queued range end runs after the other end).
    assert sorted(_complete(trials), key=str) == sorted(_complete(_trials(undisturbed)), key=str)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.params for t in failed] == hung
    for trial in failed:  # each cut-off trial ran again exactly once, with its params
        assert [t.params for t in trials if trial.number in t.system_attrs.get("retry_history", ())] == [
            trial.params
        ]
    assert best_points(optuna.load_study(study_name="study", storage=open_storage(storage))) == best_points(
        optuna.load_study(study_name="study", storage=open_storage(undisturbed))
    )


def test_ctrl_c_mid_trial_prints_one_line_and_the_resume_runs_that_trial_once(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    marker = tmp_path / "hung.json"
    log = tmp_path / "interrupted.log"
    process, params = _hang(storage, log, marker, 2)
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=90) == 130
    assert log.read_text() == "interrupted\n"
    _finish(storage, tmp_path / "resumed.log")
    complete = [p for p, _ in _complete(_trials(storage))]
    assert len(complete) == N_TRIALS and complete.count(params) == 1


def analytic(calls: list) -> callable:
    def evaluate(params: dict) -> tuple[float, float]:
        calls.append(params["lam"])
        return 100.0 - 10.0 * params["lam"], 1.0 / (1.0 + params["lam"])

    return evaluate


def test_a_failed_trial_is_queued_once_however_often_the_study_resumes(tmp_path: Path):
    storage = tmp_path / "optuna.db"
    calls: list = []

    def flaky(params: dict) -> tuple[float, float]:
        if params["lam"] == 5.0:
            raise RuntimeError("engine died")
        return analytic(calls)(params)

    with pytest.raises(RuntimeError, match="engine died"):
        tune("toy", flaky, storage, "study", n_trials=3)
    for _ in range(2):  # resumes that find enough trials complete: they only queue the failed one
        tune("toy", analytic(calls), storage, "study", n_trials=1)
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{storage}")
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert [t.params for t in waiting] == [{"lam": 5.0}]
    tune("toy", analytic(calls), storage, "study", n_trials=3)
    assert calls.count(5.0) == 1 and len(calls) == 3


def test_a_trial_with_non_finite_values_is_a_result_and_not_run_again(tmp_path: Path):
    storage = tmp_path / "optuna.db"
    calls: list = []

    def evaluate(params: dict) -> tuple[float, float]:
        calls.append(params["lam"])
        return (math.nan if params["lam"] == 5.0 else 1.0), params["lam"]

    tune("toy", evaluate, storage, "study", n_trials=3)
    tune("toy", evaluate, storage, "study", n_trials=4)
    assert calls.count(5.0) == 1 and len(calls) == 5


def test_a_queued_trial_killed_before_it_asked_for_its_params_is_queued_again(tmp_path: Path):
    """Found by the soak: the tuner killed between a queued trial's start and its first suggest left a trial
    with fixed params only; the rerun sampled a new lambda instead of playing that one."""
    from harness.tuning import _requeue_unfinished

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="study", storage=storage, directions=["maximize", "minimize"])
    study.enqueue_trial({"lam": 0.0})
    study.ask()  # started, then the process died: RUNNING, no params yet
    _requeue_unfinished(study)
    states = [(t.state, t.system_attrs.get("fixed_params")) for t in study.get_trials(deepcopy=False)]
    assert states == [(TrialState.FAIL, {"lam": 0.0}), (TrialState.WAITING, {"lam": 0.0})]
