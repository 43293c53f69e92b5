"""Fault-injection soak: a batch and a tiny benchmark that must lose nothing and count nothing twice under fire.

Each cycle runs ``harness run`` (real ScienceWorld engine, simulated pool, two workers) and then ``harness
benchmark`` on a tiny definition (a Stage A collection, a random router, ridge trained and tuned by Optuna
over two trials, logged to a real ``mlflow server``), each in fresh directories. While they run, at random
moments, the soak injects one fault at a time, of these kinds:

* ``parent``: SIGKILL of the harness process (its workers and JVMs must follow it);
* ``worker``: SIGKILL of a worker process;
* ``jvm``: SIGKILL of a ScienceWorld JVM;
* ``tuner``: SIGKILL of the benchmark process while an Optuna trial is RUNNING in its study;
* ``mlflow``: SIGKILL of the ``mlflow server`` (started again a few seconds later, on the same store);
* ``tear``: after a kill of the harness process, the last line of a file it was writing (``episodes.jsonl``
  or an unfinished episode's turn file) is cut mid-line, as a writer killed inside ``write`` leaves it;
* ``disk-full`` (only with ``--disk-full``; the results then live on a small tmpfs, which needs root):
  the file system is filled for a few seconds, then freed.

A command that ends (killed or not) before its work is done is run again, until it exits 0; after a few
faults a command is left to finish undisturbed. Then the checks, against an undisturbed reference run
of the same batch and benchmark:

* every episode of every run directory exactly once, none failed, with the undisturbed run's results;
* every dollar accounted: each episode's turn-line charges (current file and every
  ``*.interrupted-N`` file of its earlier attempts) plus the charges no line holds equal its
  record's ``cost`` plus ``abandoned_cost``, and ``attempts`` counts the files;
* the benchmark's report byte-identical to the undisturbed one's;
* every output of a command that survived a fault or exited by itself was one line per fault: no
  traceback, and a failed exit ends in one ``error:`` (or ``interrupted``) line;
* no worker or JVM outlived a killed parent.

    PYTHONPATH=. python benchmarks/fault_injection.py --minutes 10 --seed 0

It prints the faults injected per kind, the resumes and the mismatches (each kind of problem with its
count), and exits 0 when there are none. Uses two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.benchmarks import get_benchmark
from harness.layout import runs_under
from harness.procfs import alive, children, cmdline

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness.cli"]
KINDS = ("parent", "worker", "jvm", "tuner", "mlflow", "tear", "disk-full")
ORPHAN_GRACE_S = 10.0
SERVER_START_S = 120.0
# Fields of an episode record that say how it was played rather than what it gave.
PLAY_FIELDS = ("duration_s", "attempts", "abandoned_cost", "unrecorded_charges", "retries")


def env() -> dict[str, str]:
    return os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "COLUMNS": "200",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def workers_of(pid: int) -> list[int]:
    return [p for p in children(pid) if "spawn_main" in cmdline(p)]


def jvms_of(pid: int) -> list[int]:
    return [p for p in descendants(pid) if "GatewayServer" in cmdline(p)]


# ---- the tiny benchmark and its tracking server ------------------------------------------------


def write_definition(where: Path) -> Path:
    """Two variations of find-animal and find-plant per split; ridge tuned over two Optuna trials."""
    split = json.loads(get_benchmark("scienceworld").split_file.read_text())
    for name, per_task in split["splits"].items():
        types = [t for t in ("find-animal", "find-plant") if t in per_task] or sorted(per_task)[:1]
        split["quick"][name] = {task: per_task[task][:2] for task in types}
    split["version"] = "soak"
    (where / "split.json").write_text(json.dumps(split))
    definition = {
        "name": "soak",
        "pool": "paper6",
        "split_file": str((where / "split.json").resolve()),
        "quick": True,
        "workers": 2,
        "seed": 0,
        "limits": {"max_turns": 8},
        "collect": {"router": {"name": "sticky-random"}, "split": "train", "quick": True, "seeds": [0]},
        "eval_splits": ["test_id"],
        "fixed_routers": [{"name": "random"}],
        "learned": [{"name": "ridge", "lambdas": [0.0]}],
        "tune": {"trials": 2, "lam_range": [0.0, 0.5], "split": "val", "quick": True},
    }
    path = where / "soak.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrackingServer:
    """An ``mlflow server`` on a SQLite store, killed with SIGKILL and started again on the same port."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"),
            *("--artifacts-destination", str(self.root / "artifacts")),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
        ]
        server_env = env()
        server_env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=server_env, start_new_session=True
            )
        deadline = time.monotonic() + SERVER_START_S
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "server.log").read_text()[-2000:]
                raise RuntimeError(f"mlflow server did not come up on {self.url}: {tail}")
            time.sleep(0.3)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.poll() is None


# ---- faults ------------------------------------------------------------------------------------


def tear_last_line(path: Path, rng: random.Random) -> bool:
    """Cut the last line of ``path`` somewhere inside it; False if there is no line to tear."""
    data = path.read_bytes() if path.exists() else b""
    if not data.endswith(b"\n") or len(data) < 3:
        return False
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    if len(data) - 1 - start < 2:
        return False
    path.write_bytes(data[: rng.randrange(start + 1, len(data) - 1)])
    return True


def finished_keys(run_dir: Path) -> set[str]:
    keys = set()
    path = run_dir / "episodes.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(json.JSONDecodeError):
            keys.add(json.loads(line)["episode"])
    return keys


def tear_candidates(root: Path, since: float) -> list[Path]:
    """Files a process killed after ``since`` (when it started) was writing: the episode lists it
    appended to and the turn files of episodes it left unfinished."""
    found = []
    for run_dir in runs_under(root):
        episodes = run_dir / "episodes.jsonl"
        if episodes.exists() and episodes.stat().st_mtime >= since:
            found.append(episodes)
        done = finished_keys(run_dir)
        for turns in (run_dir / "turns").glob("*.jsonl") if (run_dir / "turns").exists() else []:
            if ".interrupted-" in turns.name or ".torn-" in turns.name:
                continue
            if turns.stat().st_mtime >= since and turns.stem.replace("__", "/") not in done:
                found.append(turns)
    return found


def trial_running(root: Path) -> bool:
    """Whether an Optuna trial is RUNNING in a study under ``root`` (read-only; the tuner holds it)."""
    for db in root.rglob("optuna.db"):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
                if conn.execute("SELECT 1 FROM trials WHERE state = 'RUNNING' LIMIT 1").fetchone():
                    return True
        except sqlite3.Error:
            continue
    return False


def fill_disk(root: Path) -> Path:
    """Write a file until the file system of ``root`` is full; the caller deletes it."""
    filler = root / ".soak-filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 4096)
    return filler


@dataclass
class Soak:
    args: argparse.Namespace
    rng: random.Random
    server: TrackingServer | None = None
    faults: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    bags: dict[str, list[str]] = field(default_factory=dict)
    resumes: int = 0
    started: float = 0.0  # when the command under fire started

    def problem(self, kind: str, example: str) -> None:
        """Count a mismatch and print it at once: a long soak's evidence may be cleaned away by its end."""
        self.problems[kind] += 1
        self.examples.setdefault(kind, example)
        print(f"mismatch {kind}: {example}", flush=True)

    def kinds_enabled(self, job: str | None = None) -> list[str]:
        """The fault kinds to draw from (for ``job``: those that apply to it)."""
        kinds = [k for k in KINDS if k not in self.args.without]
        kinds = [k for k in kinds if k != "disk-full" or self.args.disk_full]
        return [k for k in kinds if job != "run" or k not in ("tuner", "mlflow")]

    def draw(self, job: str) -> str:
        """The next fault kind for ``job``: each kind once, in random order, then again, so every
        kind is injected even in a short soak. A benchmark's first round starts with the kinds that only
        apply at some moments (a tuning trial running) or to the benchmark (its tracking server), and a
        batch's with the parent kill (a batch can end before its round is drawn), so that one cycle
        injects every kind however fast the machine is."""
        bag = self.bags.setdefault(job, [])
        if not bag:
            bag += [k for k in self.kinds_enabled(job) if k != "tear"]  # a tear follows a parent kill
            self.rng.shuffle(bag)
            if job == "benchmark" and not self.faults["tuner"]:
                bag.sort(key=lambda k: {"tuner": 0, "mlflow": 1}.get(k, 2))
            elif job == "run" and not self.faults["parent"]:
                bag.sort(key=lambda k: k != "parent")
        return bag.pop(0)

    def fresh_server(self, where: Path) -> None:
        """A new tracking server on a store of its own: each benchmark logs anew."""
        if self.server is not None:
            self.server.kill()
        self.server = TrackingServer(where)

    def run_to_completion(self, argv: list[str], cwd: Path, job: str, disturb: bool = True) -> None:
        """Run ``argv`` under fire, then again (a resume) until it exits 0."""
        injected = 0
        for _ in range(self.args.max_resumes + 1):
            if self.server is not None and not self.server.up:
                self.server.start()
            budget = self.args.faults_per_command - injected if disturb else 0
            code, injected_now, output, ours = self.one_run(argv, cwd, job, budget)
            injected += injected_now
            self.check_output(output, code, ours, job)
            if code == 0:
                return
            self.resumes += 1
        self.problem("commands never finished", f"{job} after {self.args.max_resumes} resumes")

    def one_run(self, argv: list[str], cwd: Path, job: str, budget: int) -> tuple[int, int, str, bool]:
        """One run of ``argv``; returns its exit code, the faults injected, its output, and whether we
        killed it (its output then need not end in a line of its own)."""
        with tempfile.TemporaryFile() as err:
            self.started = time.time()
            process = subprocess.Popen(
                [*HARNESS, *argv], cwd=cwd, env=env(), stdout=err, stderr=subprocess.STDOUT
            )
            injected, killed = 0, False
            try:
                while process.poll() is None and injected < budget:
                    deadline = time.monotonic() + self.rng.uniform(self.args.min_gap, self.args.max_gap)
                    while process.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.1)
                    if process.poll() is not None:
                        break
                    kind = self.draw(job)
                    done = self.inject(kind, process, cwd, job)
                    if not done:  # it did not apply yet (no trial running, no worker): drawn again later
                        self.bags[job].append(kind)
                    injected += done
                    killed = killed or (done and kind in ("parent", "tuner"))
                process.wait()
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            err.seek(0)
            return process.returncode, injected, err.read().decode(errors="replace"), killed

    def inject(self, kind: str, process: subprocess.Popen, cwd: Path, job: str) -> bool:
        """One fault of ``kind`` if it applies now; whether it was injected."""
        pid = process.pid
        if kind == "worker" and (workers := workers_of(pid)):
            os.kill(self.rng.choice(workers), signal.SIGKILL)
        elif kind == "jvm" and (jvms := jvms_of(pid)):
            os.kill(self.rng.choice(jvms), signal.SIGKILL)
        elif kind == "parent":
            self.kill_parent(process, cwd)
        elif kind == "tuner" and job == "benchmark":
            # The first tuner fault waits for the tuning stage however long the stages before it take.
            deadline = time.monotonic() + (self.args.max_gap if self.faults["tuner"] else math.inf)
            while not trial_running(cwd) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if process.poll() is not None or not trial_running(cwd):
                return False
            self.kill_parent(process, cwd)
        elif kind == "mlflow" and job == "benchmark" and self.server is not None and self.server.up:
            self.server.kill()
            self.faults[kind] += 1
            time.sleep(self.rng.uniform(1.0, 5.0))
            self.server.start()
            return True
        elif kind == "disk-full":
            filler = fill_disk(cwd)
            self.faults[kind] += 1
            try:
                time.sleep(self.rng.uniform(1.0, 4.0))
            finally:
                filler.unlink()
            return True
        else:
            return False
        self.faults[kind] += 1
        return True

    def kill_parent(self, process: subprocess.Popen, cwd: Path) -> None:
        """SIGKILL the harness process; its workers and JVMs must follow; maybe tear what it was writing."""
        family = workers_of(process.pid) + jvms_of(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while time.monotonic() < deadline and any(alive(p) for p in family):
            time.sleep(0.2)
        for pid in family:
            if alive(pid):
                self.problem("orphans outliving a killed parent", cmdline(pid)[:80])
                os.kill(pid, signal.SIGKILL)
        if "tear" in self.kinds_enabled() and self.rng.random() < self.args.tear_chance:
            candidates = tear_candidates(cwd, self.started)
            if candidates and tear_last_line(self.rng.choice(candidates), self.rng):
                self.faults["tear"] += 1

    def check_output(self, output: str, code: int, killed: bool, job: str) -> None:
        lines = [line for line in output.splitlines() if line.strip()]
        if "Traceback" in output:
            at = next(i for i, line in enumerate(lines) if "Traceback" in line)
            self.problem("outputs with a traceback", f"{job}: " + " | ".join(lines[at : at + 3] + lines[-1:]))
        if not killed and code not in (0, -signal.SIGKILL):
            last = lines[-1] if lines else ""
            if not (last.startswith("error:") or last.startswith("interrupted")):
                self.problem("failed exits without a one-line error", f"{job} exit {code}: {last[:200]}")
            self.faults[f"(failed exits: {job} exit {code})"] += 1


# ---- checks ------------------------------------------------------------------------------------


def complete_lines(path: Path) -> list[dict]:
    """A JSONL file's complete lines (a torn last line is dropped, as the harness's readers do)."""
    lines = []
    for text in path.read_text().split("\n") if path.exists() else []:
        with contextlib.suppress(json.JSONDecodeError):
            lines.append(json.loads(text))
    return lines


def run_dirs(root: Path) -> dict[str, Path]:
    """The run directories under ``root`` by their relative path."""
    return {str(d.relative_to(root)): d for d in runs_under(root) if (d / "turns").is_dir()}


def check_run(soak: Soak, run_dir: Path, reference: Path, name: str) -> tuple[int, float]:
    """One run directory against its undisturbed twin; returns its episodes and dollars."""
    records = complete_lines(run_dir / "episodes.jsonl")
    wanted = {r["episode"]: r for r in complete_lines(reference / "episodes.jsonl")}
    keys = Counter(r["episode"] for r in records)
    for key, n in keys.items():
        if n > 1:
            soak.problem("episodes recorded more than once", f"{name}: {key} x{n}")
    for key in sorted(set(wanted) - set(keys)):
        soak.problem("episodes lost", f"{name}: {key}")
    dollars = 0.0
    for record in records:
        key = record["episode"]
        if record["status"] == "failed":
            soak.problem("episodes failed", f"{name}: {key}: {record.get('error')}")
        stem = key.replace("/", "__")
        earlier = sorted((run_dir / "turns").glob(f"{stem}.interrupted-*.jsonl"))
        files = [run_dir / "turns" / f"{stem}.jsonl", *earlier]
        on_lines = sum(c["dollars"] for f in files for t in complete_lines(f) for c in t.get("charges", []))
        not_on_lines = sum(c["dollars"] for c in record.get("unrecorded_charges") or [])
        recorded = record["cost"] + (record.get("abandoned_cost") or 0.0)
        dollars += recorded
        if not math.isclose(on_lines + not_on_lines, recorded, rel_tol=1e-9, abs_tol=1e-12):
            soak.problem(
                "episodes with dollars unaccounted",
                f"{name}: {key}: files ${on_lines + not_on_lines:.6f}, record ${recorded:.6f} "
                f"(attempts {record.get('attempts')}, {len(earlier)} earlier file(s))",
            )
        if record.get("attempts") != len(earlier) + 1:
            soak.problem(
                "episodes whose attempts miscount",
                f"{name}: {key}: attempts {record.get('attempts')} but {len(earlier)} earlier file(s)",
            )
        if key in wanted:
            mine = {k: v for k, v in record.items() if k not in PLAY_FIELDS}
            theirs = {k: v for k, v in wanted[key].items() if k not in PLAY_FIELDS}
            if mine != theirs:
                differing = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                soak.problem("episodes differing from the undisturbed run", f"{name}: {key}: {differing}")
    return len(records), dollars


def check_cycle(soak: Soak, cycle: Path, reference: Path) -> tuple[int, float]:
    episodes, dollars = 0, 0.0
    mine, theirs = run_dirs(cycle), run_dirs(reference)
    for name in sorted(set(theirs) - set(mine)):
        soak.problem("run directories missing", name)
    for name in sorted(set(mine) & set(theirs)):
        n, d = check_run(soak, mine[name], theirs[name], name)
        episodes, dollars = episodes + n, dollars + d
    for report in sorted((reference / "reports").glob("*.md")):
        other = cycle / "reports" / report.name
        if not other.exists() or other.read_bytes() != report.read_bytes():
            soak.problem("reports differing from the undisturbed run", str(other))
    return episodes, dollars


# ---- the loop ----------------------------------------------------------------------------------


def batch_argv(args: argparse.Namespace) -> list[str]:
    argv = ["run", "--out", "run", "--router", "random", "--split", "train", "--quick"]
    argv += ["--workers", "2", "--max-turns", str(args.max_turns), "--seed", "0"]
    return argv + (["--tasks", args.tasks] if args.tasks else [])


def benchmark_argv(definition: Path, soak: Soak) -> list[str]:
    argv = ["benchmark", str(definition), "--results", "results", "--reports", "reports"]
    return argv + (["--tracking-uri", soak.server.url] if soak.server is not None else ["--no-track"])


def play_cycle(soak: Soak, where: Path, server: Path, definition: Path, disturb: bool) -> None:
    """The batch, then the benchmark (logging to a fresh tracking server whose store is ``server``)."""
    where.mkdir(parents=True)
    soak.run_to_completion(batch_argv(soak.args), where, "run", disturb)
    if not soak.args.no_benchmark:
        if not soak.args.no_server:
            soak.fresh_server(server)
        soak.run_to_completion(benchmark_argv(definition, soak), where, "benchmark", disturb)


@contextlib.contextmanager
def small_file_system(where: Path, megabytes: int):
    """A tmpfs of ``megabytes`` mounted on ``where`` (root only), unmounted at the end."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="Keep starting cycles for this long")
    parser.add_argument("--cycles", type=int, default=None, help="At most this many cycles")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="Working directory (default: a new one)")
    parser.add_argument("--tasks", default=None, help="Task filter of the batch (default: the quick split)")
    parser.add_argument("--max-turns", type=int, default=10)
    parser.add_argument("--min-gap", type=float, default=2.0, help="Seconds between faults, at least")
    parser.add_argument("--max-gap", type=float, default=8.0, help="Seconds between faults, at most")
    parser.add_argument("--faults-per-command", type=int, default=8, help="Then it finishes undisturbed")
    parser.add_argument("--max-resumes", type=int, default=12)
    parser.add_argument("--tear-chance", type=float, default=0.6, help="Of a tear after each parent kill")
    parser.add_argument("--without", nargs="*", default=[], choices=KINDS, help="Fault kinds left out")
    parser.add_argument("--disk-full", action="store_true", help="Fill the results' file system too (root)")
    parser.add_argument("--disk-mb", type=int, default=256, help="Size of that file system")
    parser.add_argument("--no-benchmark", action="store_true", help="Only the batch")
    parser.add_argument("--no-server", action="store_true", help="The benchmark logs to its results' store")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fault-injection-"))
    work.mkdir(parents=True, exist_ok=True)
    definition = write_definition(work)
    soak = Soak(args, random.Random(args.seed))
    if args.no_server:
        args.without = [*args.without, "mlflow"]
    started = time.monotonic()
    cycles = episodes = 0
    dollars = 0.0
    with contextlib.ExitStack() as stack:
        play_cycle(soak, work / "reference", work / "servers" / "reference", definition, disturb=False)
        if soak.problems:
            print(f"the undisturbed reference run failed: {dict(soak.problems)} {soak.examples}")
            return 1
        disk = stack.enter_context(small_file_system(work / "disk", args.disk_mb)) if args.disk_full else work
        while time.monotonic() - started < args.minutes * 60 and (
            args.cycles is None or cycles < args.cycles
        ):
            cycles += 1
            where = disk / f"cycle-{cycles}"
            play_cycle(soak, where, work / "servers" / f"cycle-{cycles}", definition, disturb=True)
            n, d = check_cycle(soak, where, work / "reference")
            episodes, dollars = episodes + n, dollars + d
            print(
                f"cycle {cycles}: {n} episodes, ${d:.4f}; faults so far {sum(soak.faults.values())}, "
                f"resumes {soak.resumes}, mismatches {sum(soak.problems.values())} "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
            if args.disk_full:
                subprocess.run(["rm", "-rf", str(where)], check=False)  # room for the next cycle
        if soak.server is not None:
            soak.server.kill()
    injected = {k: v for k, v in soak.faults.items() if k in KINDS}
    print(f"faults injected: {sum(injected.values())} of {len(injected)} kinds")
    for kind in KINDS:
        print(f"  {kind}: {soak.faults.get(kind, 0)}")
    for name, count in sorted((k, v) for k, v in soak.faults.items() if k not in KINDS):
        print(f"  {name}: {count}")
    print(f"resumes: {soak.resumes}; cycles: {cycles}; episodes checked: {episodes}; dollars ${dollars:.4f}")
    print(f"mismatches: {sum(soak.problems.values())}")
    for kind, count in sorted(soak.problems.items()):
        print(f"  {kind}: {count} (e.g. {soak.examples[kind]})")
    print(f"work directory: {work} ({time.monotonic() - started:.0f} s)")
    print(json.dumps({"ok": not soak.problems, "faults": injected, "resumes": soak.resumes}))
    return 0 if not soak.problems else 1


if __name__ == "__main__":
    sys.exit(main())
