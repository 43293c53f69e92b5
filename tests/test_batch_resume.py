"""Batches through the real CLI: parallel workers, one-line errors, resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from accounting import assert_every_dollar_accounted

from harness.trajectory import RunStore

HARNESS = [sys.executable, "-m", "harness.cli"]


def harness(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=600, **kwargs)


def test_unknown_names_are_one_line_errors_before_any_work(tmp_path):
    for args, needle in [
        (["--router", "oracle"], "unknown router 'oracle'"),
        (["--router", "single", "-p", "model=gpt-6"], "'gpt-6'"),
        (["--pool", "nope"], "unknown pool 'nope'"),
        (["--split", "holdout"], "holdout"),
        (["--budget", "-1"], "budget_dollars must be positive"),
    ]:
        out = tmp_path / "run"
        result = harness("run", "--out", str(out), *args)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], result.stderr
        assert not (out / "episodes.jsonl").exists()


def test_batch_resumes_after_kill_without_rerunning_or_losing_episodes(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--router", "random", "--split", "train", "--quick", "--workers", "2"]
    proc = subprocess.Popen(
        [*HARNESS, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    episodes = out / "episodes.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if episodes.exists() and len(episodes.read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its workers and their JVMs
    proc.wait()
    before = RunStore(out).episodes()
    assert 4 <= len(before) < 26, "kill the batch mid-way"

    result = harness(*args)
    assert result.returncode == 0, result.stderr
    after = RunStore(out).episodes()
    keys = [e.episode for e in after]
    assert len(keys) == len(set(keys)) == 26  # every quick train episode exactly once
    assert after[: len(before)] == before  # finished episodes were kept, not rerun
    frame = pd.read_json(episodes, lines=True)
    assert set(frame["status"]) <= {"done", "submitted", "max_turns", "budget"}
    # Every finished episode has its complete turn file.
    for e in after:
        assert len(RunStore(out).turns(e.episode)) == e.turns
    # The episodes the kill cut short carry their first attempt's charges as abandoned.
    attempts = assert_every_dollar_accounted(out)
    assert max(attempts.values()) >= 2, attempts


def test_two_workers_give_the_same_results_as_one(tmp_path):
    def run(workers: int) -> pd.DataFrame:
        out = tmp_path / f"w{workers}"
        result = harness(
            "run",
            "--out",
            str(out),
            "--router",
            "random",
            "--split",
            "test_id",
            "--quick",
            "--tasks",
            "find|power",
            "--workers",
            str(workers),
        )
        assert result.returncode == 0, result.stderr
        frame = pd.read_json(Path(out) / "episodes.jsonl", lines=True)
        return frame.sort_values("episode")[["episode", "score", "cost", "turns"]].reset_index(drop=True)

    pd.testing.assert_frame_equal(run(1), run(2))
