"""The run directory has one writer at a time, and a torn last line is repaired before a resume appends.

Real processes throughout: the CLI in a subprocess, a second process holding the run, the real engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

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
