"""The run directory has one writer at a time, a torn last line is repaired before a resume appends, and a
full disk is an infrastructure failure: one line, no store left half-made, the episodes played again.

Real processes throughout: the CLI in a subprocess, a second process holding the run, the real engine;
full disks are real ones (a small tmpfs, which needs root, as the suite runs), under the real MLflow
store and Optuna storage.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from services import unavailable

from harness.errors import HarnessError
from harness.layout import ResultsLayout
from harness.trajectory import RunStore

HARNESS = [sys.executable, "-m", "harness.cli"]
# Four short episodes (find-animal and find-plant of the quick train split), three turns each.
RUN_ARGS = ["--router", "random", "--split", "train", "--quick", "--tasks", "find", "--max-turns", "3"]

HOLDER = textwrap.dedent(
    """
    import sys, time
    from harness.batch import prepare
    from harness.config import Limits, RouterSpec, RunConfig

    config = RunConfig(router=RouterSpec("random"), split="train", quick=True, task_filter="find",
                       limits=Limits(max_turns=3))
    batch = prepare(config, sys.argv[1])
    print("ready", flush=True)
    time.sleep(120)
    """
)


def harness(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=timeout)


def start_holder(out) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready", holder.stderr
    return holder


def test_a_second_writer_is_refused_naming_the_holder_pid_or_waits_for_it(tmp_path):
    out = tmp_path / "run"
    holder = start_holder(out)
    try:
        refused = harness("run", "--out", str(out), *RUN_ARGS)
        assert refused.returncode == 2, refused.stderr
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and f"pid {holder.pid}" in lines[0], refused.stderr
        assert not (out / "episodes.jsonl").exists()

        waiting = subprocess.Popen(
            [*HARNESS, "run", "--out", str(out), "--wait", "120", *RUN_ARGS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        assert waiting.poll() is None, "it waits while the holder lives"
        holder.kill()  # the OS releases a killed holder's lock
        holder.wait()
        _, err = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, err
    finally:
        holder.kill()
        holder.wait()
    episodes = RunStore(out).episodes()
    keys = [e.episode for e in episodes]
    assert len(keys) == len(set(keys)) == 4
    for e in episodes:  # one writer: every turn file in order
        assert [t.turn for t in RunStore(out).turns(e.episode)] == list(range(e.turns))


def test_resume_cuts_a_torn_last_line_off_keeps_it_aside_and_warns_once(tmp_path):
    out = tmp_path / "run"
    first = harness("run", "--out", str(out), *RUN_ARGS)
    assert first.returncode == 0, first.stderr
    path = out / "episodes.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4
    torn_key = json.loads(lines[-1])["episode"]
    fragment = lines[-1][:37]
    path.write_bytes(b"".join(lines[:-1]) + fragment)  # a writer killed mid-line

    resumed = harness("run", "--out", str(out), *RUN_ARGS)
    assert resumed.returncode == 0, resumed.stderr
    assert sum("torn" in line for line in resumed.stderr.splitlines()) == 1, resumed.stderr
    text = path.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # every line is whole JSON
    keys = [r["episode"] for r in records]
    assert len(keys) == len(set(keys)) == 4 and keys[-1] == torn_key  # the torn episode was played again
    (aside,) = out.glob("episodes.torn-*.jsonl")
    assert aside.read_bytes() == fragment

    summary = harness("summarize", str(out))
    assert summary.returncode == 0 and "torn" not in summary.stderr, summary.stderr


# -- a full disk ------------------------------------------------------------------------------------------
FULL = re.compile(r"^error: disk full writing (/\S+) \((\d+(\.\d)? (B|KiB|MiB)) free\)$")


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a directory on a tmpfs of that size (e.g. ``"64k"``), unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            unavailable(f"a full disk is a small tmpfs, and mounting one needs root: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def resize(disk: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; delete the returned file to free them."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The run's one error line; besides it stderr holds only progress bars, no traceback."""
    assert "Traceback" not in result.stderr and "OSError" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


FULL_RUN = ["--router", "random", "--split", "train", "--quick", "--workers", "1", "--max-turns", "3"]


def test_a_disk_full_mid_batch_is_one_line_and_its_episodes_are_played_again_elsewhere(small_disk, tmp_path):
    disk = small_disk("48k")  # room for a few of the 26 episodes' turn files
    out = disk / "run"
    full = harness("run", "--out", str(out), *FULL_RUN)
    assert full.returncode == 1, full.stderr
    line = one_error_line(full)
    assert FULL.match(line) and str(out) in line, line
    records = RunStore(out).episodes()  # every line whole: a line the disk refused part-way was cut off
    assert 0 < len(records) < 26
    assert not [r for r in records if r.failure == "episode"], [r.error for r in records]
    for record in (r for r in records if r.failed):
        assert record.infrastructure_failure and "disk full writing" in (record.error or ""), record

    roomy = tmp_path / "roomy" / "run"
    shutil.copytree(out, roomy, symlinks=True)
    rerun = harness("run", "--out", str(roomy), *FULL_RUN)
    assert rerun.returncode == 0, rerun.stderr
    keys = [r.episode for r in RunStore(roomy).episodes()]
    assert len(keys) == len(set(keys)) == 26  # every episode once: the ones the disk cut short played again
    assert not [r for r in RunStore(roomy).episodes() if r.failed]


def test_a_disk_full_before_the_first_episode_leaves_no_run_behind_and_a_rerun_works(small_disk):
    disk = small_disk("64k")
    filler = fill(disk)
    out = disk / "run"
    args = ["--out", str(out), "--router", "random", "--split", "train", "--quick", "--tasks", "find"]
    full = harness("run", *args, "--max-turns", "3")
    assert full.returncode == 1, full.stderr
    assert FULL.match(one_error_line(full)), full.stderr
    assert not out.exists(), sorted(p.name for p in out.iterdir())  # no .lock, no turns/ left behind
    debug = harness("--debug", "run", *args, "--max-turns", "3")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "StorageError" in debug.stderr
    assert not out.exists()

    filler.unlink()
    rerun = harness("run", *args, "--max-turns", "3")
    assert rerun.returncode == 0, rerun.stderr
    assert len(RunStore(out).finished_keys()) == 4


def test_a_disk_full_while_the_mlflow_store_is_created_leaves_none_and_a_rerun_creates_it(small_disk):
    from harness.tracking import _scope

    disk = small_disk("256k")  # a fresh store takes about 1 MiB
    layout = ResultsLayout(disk / "bench")
    with pytest.raises(HarnessError, match=r"disk full writing \S*mlflow\.db \(\d"):
        with _scope(layout):
            pass
    assert not layout.mlflow_db.exists()
    assert not list(layout.root.glob("*mlflow.db*")), list(layout.root.iterdir())  # no half store aside

    resize(disk, "8m")
    with _scope(layout) as client:  # not "table ... already exists": a store is made afresh
        experiment = client.get_experiment_by_name("Default")
        assert experiment is not None and experiment.artifact_location.endswith("/bench/mlartifacts/0")


def test_a_disk_full_while_the_optuna_study_is_created_leaves_none_and_a_rerun_tunes(small_disk):
    from harness.tuning import tune

    disk = small_disk("32k")  # a fresh study storage takes about 110 KiB
    path = disk / "optuna.db"

    def evaluate(params):
        return params["lam"], 1.0

    with pytest.raises(HarnessError, match=r"disk full writing \S*optuna\.db \(\d"):
        tune("ridge", evaluate, storage_path=path, study_name="s", n_trials=2)
    assert not list(disk.glob("*optuna.db*")), list(disk.iterdir())

    resize(disk, "8m")
    study = tune("ridge", evaluate, storage_path=path, study_name="s", n_trials=2)
    assert len([t for t in study.trials if t.values]) == 2
