"""Worker processes and their JVMs under kill -9 and Ctrl-C: real processes and the real engine.

A killed worker is replaced and its episodes played again in the same batch; a killed parent takes its
workers and JVMs with it; Ctrl-C (SIGINT to the whole terminal process group) or SIGTERM stops a batch
cleanly with exit code 130 and one line, and a rerun resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from accounting import assert_every_dollar_accounted

from harness.procfs import alive, children, cmdline
from harness.trajectory import RunStore

HARNESS = [sys.executable, "-m", "harness.cli"]
# Four episodes (find-animal, find-plant of the quick train split), long enough to be caught mid-way.
RUN_ARGS = ["--router", "random", "--split", "train", "--quick", "--tasks", "find", "--max-turns", "40"]


def workers_with_jvms(parent: int, n: int, timeout: float = 120) -> dict[int, list[int]]:
    """Wait until ``parent`` has ``n`` worker processes, each running a JVM; worker pid -> JVM pids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [p for p in children(parent) if "spawn_main" in cmdline(p)]
        tree = {w: [j for j in children(w) if "GatewayServer" in cmdline(j)] for w in workers}
        if len(tree) >= n and all(tree.values()):
            return tree
        time.sleep(0.2)
    raise AssertionError(f"no {n} workers with JVMs under pid {parent}")


def wait_for_turns(out: Path, timeout: float = 120) -> None:
    """Until some episode is being played (a turn file has a line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.stat().st_size for p in (out / "turns").glob("*.jsonl")) if (out / "turns").exists() else 0:
            return
        time.sleep(0.1)
    raise AssertionError("no episode started")


def assert_complete(out: Path, n: int) -> list[dict]:
    episodes = RunStore(out).episodes()
    keys = [e.episode for e in episodes]
    assert len(keys) == len(set(keys)) == n, keys
    assert all(e.status != "failed" for e in episodes), [e.error for e in episodes]
    for e in episodes:
        assert [t.turn for t in RunStore(out).turns(e.episode)] == list(range(e.turns))
    return episodes


def test_a_killed_worker_is_replaced_and_its_episodes_played_again_in_the_same_batch(tmp_path):
    out = tmp_path / "run"
    cli = subprocess.Popen(
        [*HARNESS, "run", "--out", str(out), "--workers", "2", *RUN_ARGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    tree = workers_with_jvms(cli.pid, 2)
    wait_for_turns(out)
    victim = next(iter(tree))
    os.kill(victim, signal.SIGKILL)
    _, err = cli.communicate(timeout=600)
    assert cli.returncode == 0, err
    assert "worker process died" in err
    assert_complete(out, 4)
    # The replayed episodes' records carry the earlier attempts and what the dead worker's turns charged.
    attempts = assert_every_dollar_accounted(out)
    assert max(attempts.values()) >= 2, attempts
    for jvm in [j for jvms in tree.values() for j in jvms]:
        assert not alive(jvm), "the old pool's JVMs were closed"


def test_a_worker_killed_between_batches_is_replaced_before_the_next_one(tmp_path):
    from harness.batch import Workers, execute
    from harness.config import Limits, RouterSpec, RunConfig

    config = RunConfig(
        router=RouterSpec("random"),
        split="train",
        quick=True,
        task_filter="find-animal",
        workers=2,
        limits=Limits(max_turns=3),
    )
    with Workers(2) as workers:
        execute(config, tmp_path / "first", workers=workers)
        pool = workers._pool
        assert pool is not None
        victim = next(iter(pool._processes))
        os.kill(victim, signal.SIGKILL)  # the pool is idle: the next submit finds it broken
        deadline = time.monotonic() + 30
        while alive(victim) and time.monotonic() < deadline:
            time.sleep(0.1)
        execute(config, tmp_path / "second", workers=workers)
    first = [json.loads(line) for line in (tmp_path / "first" / "episodes.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (tmp_path / "second" / "episodes.jsonl").read_text().splitlines()]
    assert len(second) == len(first) > 0 and all(r["failure"] is None for r in second)


PARENT = textwrap.dedent(
    """
    import sys
    from harness.batch import execute
    from harness.config import Limits, RouterSpec, RunConfig

    config = RunConfig(router=RouterSpec("random"), split="train", quick=True, task_filter="find",
                       workers=2, limits=Limits(max_turns=40))
    execute(config, sys.argv[1])
    """
)


def test_kill_9_of_the_parent_takes_its_workers_and_jvms_along(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "run")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    survivors: list[int] = []
    try:
        tree = workers_with_jvms(parent.pid, 2)
        survivors = [*tree, *(j for jvms in tree.values() for j in jvms)]
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(p) for p in survivors):
            time.sleep(0.2)
        assert not [p for p in survivors if alive(p)], [cmdline(p)[:80] for p in survivors if alive(p)]
    finally:
        for pid in [parent.pid, *survivors]:  # never leave orphans behind, even when the check fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_stops_cleanly_with_one_line_and_130_then_resumes(tmp_path, how):
    out = tmp_path / "run"
    cli = subprocess.Popen(
        [*HARNESS, "run", "--out", str(out), "--workers", "2", *RUN_ARGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives a foreground job
    )
    tree = workers_with_jvms(cli.pid, 2)
    wait_for_turns(out)
    if how == "ctrl-c":
        os.killpg(cli.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    else:
        os.kill(cli.pid, signal.SIGTERM)
    _, err = cli.communicate(timeout=60)
    processes = [*tree, *(j for jvms in tree.values() for j in jvms)]
    try:
        assert cli.returncode == 130, err
        assert "Traceback" not in err and "py4j" not in err, err
        progress = ("random ", "━")  # the progress bar's last frame
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith(progress)]
        assert len(lines) == 1 and "rerun the same command to resume" in lines[0], err
        for pid in processes:
            deadline = time.monotonic() + 30  # a loaded machine reaps slowly
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not alive(pid), cmdline(pid)[:80]
    finally:
        for pid in processes:  # never leave orphans behind, even when the check fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    for line in (
        (out / "episodes.jsonl").read_text().splitlines() if (out / "episodes.jsonl").exists() else []
    ):
        json.loads(line)  # the store is consistent: whole lines only

    resumed = subprocess.run(
        [*HARNESS, "run", "--out", str(out), "--workers", "2", *RUN_ARGS],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_complete(out, 4)


def test_a_recovered_jvm_crash_prints_no_py4j_traceback(tmp_path):
    out = tmp_path / "run"
    cli = subprocess.Popen(
        [*HARNESS, "run", "--out", str(out), "--workers", "1", *RUN_ARGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    jvms: list[int] = []
    while not jvms and time.monotonic() < deadline:
        jvms = [p for p in children(cli.pid) if "GatewayServer" in cmdline(p)]
        time.sleep(0.1)
    wait_for_turns(out)
    os.kill(jvms[0], signal.SIGKILL)
    _, err = cli.communicate(timeout=600)
    assert cli.returncode == 0, err
    assert "restarting the engine" in err
    assert "Traceback" not in err, err
    assert_complete(out, 4)
    assert max(assert_every_dollar_accounted(out).values()) == 2


def test_ctrl_c_with_one_worker_stops_even_though_the_jvm_dies_of_it_too(tmp_path):
    """In-process episodes: the JVM is in the terminal's group, dies of the same Ctrl-C, and py4j may
    swallow the KeyboardInterrupt; the batch must stop all the same and record nothing the interrupt broke."""
    out = tmp_path / "run"
    cli = subprocess.Popen(
        [*HARNESS, "run", "--out", str(out), "--workers", "1", *RUN_ARGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_turns(out)
    jvms = [p for p in children(cli.pid) if "GatewayServer" in cmdline(p)]
    os.killpg(cli.pid, signal.SIGINT)
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == 130, err
    assert "Traceback" not in err and "restarting the engine" not in err, err
    assert err.strip().splitlines()[-1].endswith("rerun the same command to resume"), err
    assert all(e.status != "failed" for e in RunStore(out).episodes())
    time.sleep(1)
    assert not [p for p in jvms if alive(p)]
