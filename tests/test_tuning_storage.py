"""Tuning on shared storages: several worker processes on one study, and a worker killed mid-trial.

Real PostgreSQL (tests/services.py) and a real journal file; the workers are real
processes and the dead one is killed with SIGKILL, so nothing of it survives to
clean up: its trial must be failed by the heartbeat and retried by Optuna.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.errors import ConfigError, HarnessError
from harness.tuning import Heartbeat, open_storage, tune

# The fixtures, until the tests' conftest registers them for every module.
pytest_plugins = ("services",)
ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "tuning_worker.py"
N_TRIALS = 16
# The survivor's trials outlast the dead trial's grace period (2 s) by far: 15 x 0.4 s after the kill.
SURVIVOR_TRIAL_S = 0.4


@pytest.fixture(params=["postgresql", "journal"])
def shared_storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "journal":
        return f"journal://{tmp_path / 'study' / 'journal.log'}"
    return request.getfixturevalue("postgres_url")


def _worker(storage: str, worker: int, seconds: float, log: Path, hang_marker: Path | None = None):
    argv = [sys.executable, str(WORKER), storage, "shared", str(N_TRIALS), str(worker), str(seconds)]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv + ([str(hang_marker)] if hang_marker else []), cwd=ROOT, env=env, stdout=out, stderr=out
        )


def _wait_for(condition, process: subprocess.Popen, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, f"the worker exited while waiting for {what}"
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.1)


def _complete(storage: str) -> int:
    try:
        study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    except KeyError:  # not created yet
        return 0
    return sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


@pytest.mark.slow  # about 8 s: the survivor must outlive the dead trial's grace period
def test_a_killed_workers_trial_fails_by_heartbeat_and_is_retried(shared_storage: str, tmp_path: Path):
    marker = tmp_path / "hung-trial.json"
    doomed = _worker(shared_storage, 1, 0.0, tmp_path / "doomed.log", hang_marker=marker)
    survivor = None
    try:
        _wait_for(lambda: marker.exists(), doomed, "the doomed worker's trial to hang")
        survivor = _worker(shared_storage, 0, SURVIVOR_TRIAL_S, tmp_path / "survivor.log")
        # Kill only once both workers have run trials of the study side by side.
        _wait_for(lambda: _complete(shared_storage) >= 1, survivor, "the survivor's first trial")
        os.kill(doomed.pid, signal.SIGKILL)
        assert doomed.wait(timeout=10) == -signal.SIGKILL
        assert survivor.wait(timeout=120) == 0, (tmp_path / "survivor.log").read_text()[-2000:]
    finally:
        for process in (doomed, survivor):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    hung = json.loads(marker.read_text())["params"]
    study = optuna.load_study(study_name="shared", storage=open_storage(shared_storage))
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.params for t in failed] == [hung]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert [(t.params, t.state) for t in retries] == [(hung, TrialState.COMPLETE)]
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= N_TRIALS
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # The range's low end, queued once by worker 0, completed once (retried or not).
    assert [t.params["lam"] for t in trials if t.state == TrialState.COMPLETE].count(0.0) == 1


@pytest.mark.slow  # several seconds on PostgreSQL under load
def test_two_live_workers_share_one_study(shared_storage: str, tmp_path: Path):
    workers = [_worker(shared_storage, i, 0.05, tmp_path / f"w{i}.log") for i in range(2)]
    for i, process in enumerate(workers):
        assert process.wait(timeout=120) == 0, (tmp_path / f"w{i}.log").read_text()[-2000:]
    trials = optuna.load_study(study_name="shared", storage=open_storage(shared_storage)).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert N_TRIALS <= len(complete) <= N_TRIALS + 1  # the last round may overrun by the other worker's trial
    assert len({t.params["lam"] for t in complete}) == len(complete)  # workers do not repeat each other
    assert sorted(t.params["lam"] for t in complete)[:: len(complete) - 1] == [0.0, 5.0]


def test_a_study_on_a_url_resumes_like_one_on_a_file(shared_storage: str):
    calls: list = []

    def evaluate(params: dict) -> tuple[float, float]:
        calls.append(params["lam"])
        return -params["lam"], params["lam"]

    tune("toy", evaluate, None, "resume", n_trials=3, storage=shared_storage, seed=1)
    study = tune("toy", evaluate, None, "resume", n_trials=5, storage=shared_storage, seed=1)
    assert calls[:2] == [0.0, 5.0] and len(calls) == 5 and len(set(calls)) == 5
    assert study.user_attrs["family"] == "toy"


def test_sqlite_url_is_the_one_process_default(tmp_path: Path):
    study = tune("toy", lambda p: (1.0, p["lam"]), None, "s", 2, storage=f"sqlite:///{tmp_path / 'o.db'}")
    assert (tmp_path / "o.db").exists() and len(study.trials) == 2


def test_bad_storage_urls_are_one_line_errors_naming_them(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"'mysql://me:\*\*\*@db/x'.*sqlite:///") as bad:
        tune("toy", lambda p: (1.0, 1.0), None, "s", 1, storage="mysql://me:hunter2@db/x")
    assert "hunter2" not in str(bad.value) and "\n" not in str(bad.value)
    with pytest.raises(ConfigError, match="'journal://relative.log'.*absolute path"):
        tune("toy", lambda p: (1.0, 1.0), None, "s", 1, storage="journal://relative.log")
    with pytest.raises(ConfigError, match="storage URL or a storage_path"):
        tune("toy", lambda p: (1.0, 1.0), None, "s", 1)
    with socket.socket() as held:  # bound, not listening: nothing answers on it meanwhile
        held.bind(("127.0.0.1", 0))
        closed = f"postgresql://harness:hunter2@127.0.0.1:{held.getsockname()[1]}/nothing"
        with pytest.raises(
            HarnessError, match=r"'postgresql://harness:\*\*\*@127.0.0.1:\d+/nothing': cannot open"
        ) as down:
            tune("toy", lambda p: (1.0, 1.0), None, "s", 1, storage=closed)
        assert "hunter2" not in str(down.value) and "\n" not in str(down.value)
    with pytest.raises(ConfigError, match="serves one process"):
        tune("toy", lambda p: (1.0, 1.0), tmp_path / "o.db", "s", 1, worker=1)
    with pytest.raises(ConfigError, match="heartbeat"):
        Heartbeat(interval_s=5, grace_s=5)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_journal_heartbeat_fails_only_silent_trials(tmp_path: Path):
    storage = open_storage(f"journal://{tmp_path / 'j.log'}", Heartbeat(interval_s=1, grace_s=2))
    study = optuna.create_study(storage=storage, study_name="s")
    silent, beating, never_beat = study.ask(), study.ask(), study.ask()
    for trial in (silent, beating, never_beat):
        trial.suggest_float("x", 0, 1)
    storage.record_heartbeat(silent._trial_id)
    time.sleep(2.2)
    storage.record_heartbeat(beating._trial_id)
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[silent.number] == TrialState.FAIL
    assert states[beating.number] == states[never_beat.number] == TrialState.RUNNING
    (retry,) = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert retry.params == silent.params and retry.system_attrs["failed_trial"] == silent.number
