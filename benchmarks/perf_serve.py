"""`harness serve` under load: routing overhead beside the upstream's latency, and no turn line lost.

Three processes, as in use: the local scripted OpenAI-compatible upstream (``tests/openai_server.py``,
answering after ``--upstream-latency`` seconds), ``harness serve`` in front of it over the paper's
pool, and this script's clients: ``--sessions`` concurrent conversations of ``--turns`` turns each,
sending their whole history every turn and no session id (the server finds each session by its
history). The router is by default a learned one with the default encoder (``ridge`` on
``minilm-static``, trained briefly on a synthetic run: its size, not its quality, sets its latency).

Per turn, the overhead is the client's wall time minus the upstream call's time the server logged
(``latency_s`` of the turn line): routing, session matching, parsing, logging and both HTTP hops.
The router's own decision time (``routing_s``) is reported beside it. The goal is a p99 overhead
under 10 ms. The script then checks the run directory: one episode per conversation, turns 0..T-1
in each, nothing lost or duplicated.

Run: ``.venv/bin/python benchmarks/perf_serve.py [--sessions 50] [--turns 10] [--router ridge]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.pool import load_pool
from harness.trajectory import RunStore

REPO = Path(__file__).resolve().parent.parent
KEY_ENV = "PERF_SERVE_UPSTREAM_KEY"
GOAL_P99_MS = 10.0
UPSTREAM = """
import sys, threading
sys.path.insert(0, {tests!r})
from openai_server import OpenAIChatServer
server = OpenAIChatServer().start()
server.latency_s = {latency}
print(server.base_url, flush=True)
sys.stdin.read()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_pool(path: Path, base_url: str) -> Path:
    """The paper's pool, every model answered by the local upstream (prices unchanged)."""
    models = []
    for model in load_pool("paper6").spec.models:
        price = {"input_per_mtok": model.price.input_per_mtok, "output_per_mtok": model.price.output_per_mtok,
                 "version": model.price.version}  # fmt: skip
        models.append({"name": model.name, "provider_model": f"openai/{model.name}", "price": price,
                       "api_base": base_url, "api_key_env": KEY_ENV})  # fmt: skip
    path.write_text(yaml.safe_dump({"name": "paper6-local", "models": models}))
    return path


def router_params(router: str, pool: Path, work: Path) -> list[str]:
    """CLI parameters of the router; a trainable one is first trained on a synthetic run of the pool."""
    from routers import router_class
    from routers.learned.train import TrainOptions, train_router

    if not router_class(router).trainable:
        return []
    cards = load_pool(str(pool)).cards
    names = [c.name for c in cards]
    run = write_synthetic_run(work / "synthetic", cards, {"boil": names[0], "grow-plant": names[1],
                                                          "measure-melting": names[5]}, episodes_per_task=10)  # fmt: skip
    started = time.perf_counter()
    options = TrainOptions(cache_dir=str(work / "cache"), seed=0)
    train_router(router, [run], work / "checkpoint", options, pool=cards)
    print(f"trained {router} on a synthetic run in {time.perf_counter() - started:.1f} s")
    return ["-p", f"checkpoint={work / 'checkpoint'}", "-p", f"cache_dir={work / 'cache'}"]


def task_text(i: int) -> str:
    return f"Task: boil the water in beaker {i}."


async def converse(client: httpx.AsyncClient, base_url: str, i: int, turns: int) -> list[float]:
    messages: list = [{"role": "system", "content": "You are a lab assistant."},
                      {"role": "user", "content": task_text(i)}]  # fmt: skip
    walls = []
    for turn in range(turns):
        started = time.perf_counter()
        response = await client.post(
            f"{base_url}/chat/completions", json={"model": "router", "messages": messages}
        )
        walls.append(time.perf_counter() - started)
        response.raise_for_status()
        messages += [response.json()["choices"][0]["message"],
                     {"role": "user", "content": f"You see beaker {i} after step {turn}."}]  # fmt: skip
    return walls


async def load(base_url: str, sessions: int, turns: int, first: int = 0) -> dict[str, list[float]]:
    """``sessions`` conversations at once, numbered from ``first``; each one's turn wall times by its task."""
    numbers = range(first, first + sessions)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=sessions), timeout=300) as client:
        walls = await asyncio.gather(*(converse(client, base_url, i, turns) for i in numbers))
    return {task_text(i): w for i, w in zip(numbers, walls, strict=True)}


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(
                f"harness serve did not start: {process.stderr.read() if process.stderr else ''}"
            )
        time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(values: list[float], q: float) -> str:
    return f"{1000 * float(np.percentile(values, q)):8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--router", default="ridge")
    parser.add_argument("--upstream-latency", type=float, default=0.05, help="seconds before each answer")
    args = parser.parse_args()
    env = os.environ | {KEY_ENV: "sk-local-perf", "PYTHONPATH": str(REPO)}
    print(f"load average before start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = UPSTREAM.format(tests=str(REPO / "tests"), latency=args.upstream_latency)
        upstream = subprocess.Popen([sys.executable, "-c", source], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
        server = None
        try:
            assert upstream.stdout is not None
            pool = write_pool(work / "pool.yaml", upstream.stdout.readline().strip())
            params = router_params(args.router, pool, work)
            port, out = free_port(), work / "served"
            server = subprocess.Popen(
                [sys.executable, "-m", "harness.cli", "serve", "--out", str(out), "--router", args.router,
                 *params, "--pool", str(pool), "--port", str(port)],
                stderr=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            wait_healthy(f"http://127.0.0.1:{port}/health", server)
            base_url = f"http://127.0.0.1:{port}/v1"
            asyncio.run(load(base_url, 2, 2, first=10**6))  # warm-up (imports, first encodings): not counted
            alone = asyncio.run(load(base_url, 1, args.turns * 3, first=10**5))  # nothing to queue behind
            started, cpu = time.perf_counter(), cpu_seconds(server.pid)
            walls = asyncio.run(load(base_url, args.sessions, args.turns))
            elapsed, cpu = time.perf_counter() - started, cpu_seconds(server.pid) - cpu
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)
        finally:
            for process in (server, upstream):
                if process is not None and process.poll() is None:
                    process.kill()
        report(RunStore(out), walls, alone, args, elapsed, cpu)


def report(store: RunStore, walls: dict[str, list[float]], alone: dict[str, list[float]],
           args: argparse.Namespace, elapsed: float, cpu: float) -> None:  # fmt: skip
    overhead, routing, upstream = [], [], []
    problems = []
    seen = set()
    single: list[float] = []
    for episode in store.episodes():
        lines = store.turns(episode.episode)
        first = lines[0].initial_messages[1].content if lines and lines[0].initial_messages else None
        if first in alone:
            single = [wall - line.extra["latency_s"] for line, wall in zip(lines, alone[first], strict=True)]
        if first not in walls:
            continue  # the warm-up and the lone conversation
        if first in seen:
            problems.append(f"conversation {first!r} became two episodes")
        seen.add(first)
        if [t.turn for t in lines] != list(range(args.turns)):
            problems.append(f"{episode.episode}: turns {[t.turn for t in lines]}")
            continue
        for line, wall in zip(lines, walls[first], strict=True):
            overhead.append(wall - line.extra["latency_s"])
            routing.append(line.extra["routing_s"])
            upstream.append(line.extra["latency_s"])
    problems += [f"conversation {k!r} has no episode" for k in walls if k not in seen]
    turns = args.sessions * args.turns
    print(f"{args.sessions} sessions x {args.turns} turns, router {args.router}: {turns} turns in {elapsed:.1f} s "
          f"({turns / elapsed:.0f} turns/s); the server used {1000 * cpu / turns:.1f} ms of CPU per turn")  # fmt: skip
    print(f"{'ms':<28} {'p50':>8} {'p99':>8}")
    print(f"{'overhead, one session alone':<28} {ms(single, 50)} {ms(single, 99)}")
    print(f"{'overhead (wall - upstream)':<28} {ms(overhead, 50)} {ms(overhead, 99)}")
    print(f"{'router decision':<28} {ms(routing, 50)} {ms(routing, 99)}")
    print(f"{'upstream call':<28} {ms(upstream, 50)} {ms(upstream, 99)}")
    p99 = 1000 * float(np.percentile(overhead, 99))
    print(
        f"goal: overhead p99 < {GOAL_P99_MS:g} ms: {'met' if p99 < GOAL_P99_MS else 'NOT met'} ({p99:.2f} ms)"
    )
    print(f"turn lines: {len(overhead)} of {turns}; " + ("none lost or duplicated" if not problems else
                                                         f"PROBLEMS: {'; '.join(problems[:5])}"))  # fmt: skip
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
