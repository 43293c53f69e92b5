"""Fault injection: a batch that must lose nothing and count nothing twice while its processes are killed.

Runs ``harness run`` (real ScienceWorld engine, simulated pool, 2 workers) into one run directory for a
fixed number of rounds. During each round, at random moments, it SIGKILLs a random worker process or a
random JVM; a round may also end with a SIGKILL of the parent, after which the last line of
``episodes.jsonl`` is torn (cut mid-line, as a writer killed mid-``write`` would leave it). Then one
clean rerun finishes the batch, and the checks run:

* every episode of the split is in ``episodes.jsonl`` exactly once, none failed, with its complete turns;
* every dollar is accounted for: each episode's cost equals the model and router charges on the turn
  lines of its final attempt, and so do their sums;
* no worker or JVM outlived a killed parent.

    PYTHONPATH=. python benchmarks/fault_injection.py --rounds 8 --seed 0

Exit code 0 when every check passes. Uses two cores for a few minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness.benchmarks import get_benchmark
from harness.procfs import alive, children, cmdline
from harness.trajectory import RETRIED_FILE, RunStore

HARNESS = [sys.executable, "-m", "harness.cli"]
ORPHAN_GRACE_S = 10.0


def workers_and_jvms(parent: int) -> tuple[list[int], list[int]]:
    workers = [p for p in children(parent) if "spawn_main" in cmdline(p)]
    jvms = [j for w in workers for j in children(w) if "GatewayServer" in cmdline(j)]
    return workers, jvms


def tear_last_line(path: Path, rng: random.Random) -> bool:
    """Cut the last line of ``path`` somewhere inside it; False if there is no line to tear."""
    if not path.exists():
        return False
    data = path.read_bytes()
    if not data.endswith(b"\n") or len(data) < 2:
        return False
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    cut = rng.randrange(start + 1, len(data) - 1)
    path.write_bytes(data[:cut])
    return True


def play_round(
    args: argparse.Namespace, run_args: list[str], rng: random.Random, faults: Counter, orphans: list[int]
) -> int:
    """One ``harness run`` under fire; returns its exit code (negative: killed by us)."""
    cli = subprocess.Popen(
        [*HARNESS, "run", *run_args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    err_lines: list[str] = []
    try:
        while cli.poll() is None:
            deadline = time.monotonic() + rng.uniform(args.min_gap, args.max_gap)
            while cli.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if cli.poll() is not None:
                break
            workers, jvms = workers_and_jvms(cli.pid)
            kind = rng.choices(["worker", "jvm", "parent"], weights=[3, 3, 1])[0]
            if kind == "worker" and workers:
                os.kill(rng.choice(workers), signal.SIGKILL)
            elif kind == "jvm" and jvms:
                os.kill(rng.choice(jvms), signal.SIGKILL)
            elif kind == "parent":
                os.kill(cli.pid, signal.SIGKILL)
                cli.wait()
                deadline = time.monotonic() + ORPHAN_GRACE_S
                while time.monotonic() < deadline and any(alive(p) for p in workers + jvms):
                    time.sleep(0.2)
                orphans.extend(p for p in workers + jvms if alive(p))
                for pid in workers + jvms:  # never leave them behind, even if the check fails
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)
                if tear_last_line(args.out / "episodes.jsonl", rng):
                    faults["torn last line"] += 1
            else:
                continue
            faults[f"killed {kind}"] += 1
    finally:
        if cli.poll() is None:
            cli.kill()
        _, err = cli.communicate()
        err_lines = err.splitlines()
    faults["worker deaths seen by the parent"] += sum("a worker process died" in line for line in err_lines)
    faults["engine restarts"] += sum("restarting the engine" in line for line in err_lines)
    faults["torn tails repaired"] += sum("ended in a torn line" in line for line in err_lines)
    faults["py4j tracebacks printed"] += sum("Traceback" in line for line in err_lines)
    return cli.returncode


def check(out: Path, expected: set[str]) -> list[str]:
    """Every episode exactly once, none failed, every dollar on the turn lines of its final attempt."""
    problems = []
    store = RunStore(out)
    episodes = store.episodes()
    keys = [e.episode for e in episodes]
    duplicates = sorted(k for k, n in Counter(keys).items() if n > 1)
    if duplicates:
        problems.append(f"{len(duplicates)} episode(s) recorded more than once, e.g. {duplicates[0]}")
    missing = sorted(expected - set(keys))
    if missing:
        problems.append(f"{len(missing)} episode(s) missing, e.g. {missing[0]}")
    failed = [e for e in episodes if e.failed]
    if failed:
        problems.append(f"{len(failed)} episode(s) failed, e.g. {failed[0].error}")
    episode_total = turn_total = 0.0
    for e in episodes:
        turns = store.turns(e.episode)
        charged = sum(c["dollars"] for t in turns for c in t.charges if c["kind"] in ("model", "router"))
        charged += sum(c["dollars"] for c in e.unrecorded_charges if c["kind"] != "judge")
        if len(turns) != e.turns:
            problems.append(f"{e.episode}: {len(turns)} turn lines for {e.turns} turns")
        if not math.isclose(e.cost, charged, rel_tol=1e-9, abs_tol=1e-12):
            problems.append(f"{e.episode}: cost {e.cost} but its turn lines charge {charged}")
        episode_total += e.cost
        turn_total += charged
    if not math.isclose(episode_total, turn_total, rel_tol=1e-9, abs_tol=1e-12):
        problems.append(f"episode costs sum to {episode_total} but turn lines to {turn_total}")
    print(f"episodes: {len(episodes)} recorded, {len(set(keys))} distinct, {len(expected)} expected")
    print(f"dollars: episodes ${episode_total:.6f}, turn lines of final attempts ${turn_total:.6f}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="Run directory (default: a new temporary one)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--tasks", default=None, help="Task filter (default: the whole quick split)")
    parser.add_argument("--max-turns", type=int, default=30)
    parser.add_argument("--min-gap", type=float, default=2.0, help="Seconds between faults, at least")
    parser.add_argument("--max-gap", type=float, default=8.0, help="Seconds between faults, at most")
    args = parser.parse_args()
    logging.getLogger("harness.trajectory").setLevel(logging.ERROR)  # our reads between rounds see torn tails
    args.out = args.out or Path(tempfile.mkdtemp(prefix="fault-injection-")) / "run"
    rng = random.Random(args.seed)
    run_args = ["--out", str(args.out), "--router", "random", "--split", args.split, "--quick"]
    run_args += ["--workers", "2", "--max-turns", str(args.max_turns), "--seed", str(args.seed)]
    if args.tasks:
        run_args += ["--tasks", args.tasks]
    split = get_benchmark("scienceworld").load_split(None)
    expected = {t.key for t in split.tasks(args.split, quick=True, task_filter=args.tasks)}

    faults: Counter = Counter()
    orphans: list[int] = []
    started = time.monotonic()
    for number in range(1, args.rounds + 1):
        code = play_round(args, run_args, rng, faults, orphans)
        recorded = len(RunStore(args.out).episodes()) if (args.out / "episodes.jsonl").exists() else 0
        print(f"round {number}: exit {code}, {recorded} episode line(s)", flush=True)
    final = subprocess.run([*HARNESS, "run", *run_args], capture_output=True, text=True)
    print(f"clean rerun: exit {final.returncode}")
    faults["torn tails repaired"] += final.stderr.count("ended in a torn line")
    faults["py4j tracebacks printed"] += final.stderr.count("Traceback")
    retried = RunStore(args.out).root / RETRIED_FILE
    faults["infrastructure failures played again"] = (
        len(retried.read_text().splitlines()) if retried.exists() else 0
    )
    faults["interrupted attempts kept aside"] = len(list((args.out / "turns").glob("*.interrupted-*.jsonl")))
    for name, count in sorted(faults.items()):
        print(f"  {name}: {count}")
    print(f"  orphans surviving a killed parent: {len(orphans)}")
    problems = check(args.out, expected)
    if final.returncode != 0:
        problems.append(
            f"the clean rerun exited {final.returncode}: {final.stderr.strip().splitlines()[-1:]}"
        )
    if orphans:
        problems.append(f"{len(orphans)} worker/JVM process(es) outlived a killed parent")
    print(f"run directory: {args.out} ({time.monotonic() - started:.0f} s)")
    print(json.dumps({"ok": not problems, "problems": problems}))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
