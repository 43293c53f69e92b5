"""`harness serve` for real: uvicorn on a free loopback port, the scripted OpenAI server as the upstream,
and real clients (the OpenAI SDK, LiteLLM, httpx, the harness's own agent loop) in front of it."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
import yaml
from openai_server import count_words

from harness.config import Limits, RouterSpec
from harness.errors import ConfigError
from harness.records import EpisodeRecord, TurnRecord
from harness.serve import RouterServer, ServeConfig
from harness.serve.app import uvicorn_config
from harness.trajectory import RunStore

SECRET = "sk-upstream-DO-NOT-LEAK-9731"
KEY_ENV = "SERVE_TEST_UPSTREAM_KEY"
PRICES = {"big": (2.0, 8.0), "mid": (0.5, 2.0), "small": (0.1, 0.4)}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        },
    }
]


def write_pool(path: Path, base_url: str, names=("big", "small"), provider: str = "openai") -> Path:
    models = [
        {
            "name": name,
            "provider_model": f"{provider}/{name}",
            "price": {
                "input_per_mtok": PRICES[name][0],
                "output_per_mtok": PRICES[name][1],
                "version": "test",
            },
            "api_base": base_url,
            "api_key_env": KEY_ENV,
        }
        for name in names
    ]
    path.write_text(yaml.safe_dump({"name": "local", "models": models}))
    return path


class Running:
    """A RouterServer served by uvicorn in a thread, on a socket bound to a free loopback port."""

    def __init__(self, server: RouterServer):
        self.server = server
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.uvicorn = uvicorn.Server(uvicorn_config(server, "127.0.0.1", self.port))
        self.thread = threading.Thread(
            target=self.uvicorn.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.uvicorn.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


@pytest.fixture
def serving(tmp_path, openai_server, monkeypatch) -> Iterator[Callable[..., Running]]:
    """Start servers over the scripted upstream (retries back off for milliseconds); all stopped at the end."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    started: list[Running] = []

    def start(router: str = "random", params: dict | None = None, names=("big", "small"), provider: str = "openai",
              **options) -> Running:  # fmt: skip
        pool = write_pool(tmp_path / "pool.yaml", openai_server.base_url, names, provider)
        options.setdefault("out", tmp_path / "served")
        config = ServeConfig(router=RouterSpec(router, params or {}), pool=str(pool), **options)
        server = RouterServer(config)
        for backend in server.backends.values():
            backend.backoff_s = 0.001
        started.append(Running(server))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def close_session(running: Running, session: str, score: float | None, **extra) -> dict:
    response = httpx.post(f"{running.base_url}/sessions/{session}/outcome", json={"score": score, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def turns_of(out: Path, key: str) -> list[TurnRecord]:
    return RunStore(out).turns(key)


# openai/: the OpenAI SDK calls the upstream; hosted_vllm/: LiteLLM does (any provider it knows).
@pytest.mark.parametrize("provider", ["openai", "hosted_vllm"])
def test_openai_sdk_multi_turn_with_tools_and_streaming(provider, serving, openai_server, tmp_path):
    running = serving("random", provider=provider)
    openai_server.tool_calls = [("lookup", '{"q": "otter"}')]
    client = openai.OpenAI(base_url=running.base_url, api_key="unused", max_retries=0)
    messages: list = [
        {"role": "system", "content": "You look things up."},
        {"role": "user", "content": "otter?"},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="random", messages=messages, tools=TOOLS, tool_choice="auto"
    )
    first = raw.parse()
    session, routed = raw.headers["x-session-id"], [raw.headers["x-routed-model"]]
    assert float(raw.headers["x-routing-propensity"]) == 0.5 and first.model == routed[0]
    call = first.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("lookup", '{"q": "otter"}')
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "a water mammal"}]  # fmt: skip

    # The second turn streams; no session id is sent: the history itself names the session.
    raw = client.chat.completions.with_raw_response.create(
        model="random", messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-session-id"] == session
    routed.append(raw.headers["x-routed-model"])
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
    assert text == openai_server.reply and calls[0].function.name == "lookup"
    assert {c.model for c in chunks} == {routed[1]} and chunks[-1].usage.prompt_tokens > 0
    messages += [{"role": "assistant", "content": text, "tool_calls": [
        {"id": calls[0].id, "type": "function", "function": {"name": "lookup", "arguments": calls[0].function.arguments}}
    ]}, {"role": "tool", "tool_call_id": calls[0].id, "content": "it swims"}]  # fmt: skip
    openai_server.tool_calls = []
    third = client.chat.completions.with_raw_response.create(model="random", messages=messages, tools=TOOLS)
    assert third.headers["x-session-id"] == session
    routed.append(third.headers["x-routed-model"])
    final = [*messages, third.parse().choices[0].message.model_dump(exclude_none=True)]
    outcome = f"{running.base_url}/sessions/{session}/outcome"
    assert httpx.post(outcome, json={"score": 1.0, "messages": messages[:1]}).status_code == 400
    assert httpx.post(f"{running.base_url}/sessions/nope/outcome", json={"score": 1.0}).status_code == 404
    record = close_session(running, session, 1.0, messages=final + [{"role": "user", "content": "thanks"}])
    assert record["turns"] == 3 and record["score"] == 1.0 and record["status"] == "done"

    # Upstream saw the tools, the tool choice and the whole history each time.
    sent = [r.body for r in openai_server.requests]
    assert [len(b["messages"]) for b in sent] == [2, 4, 6]
    assert all(b["tools"] == TOOLS for b in sent) and sent[0]["tool_choice"] == "auto"
    out = tmp_path / "served"
    (episode,) = RunStore(out).episodes()
    turns = turns_of(out, episode.episode)
    assert [t.model for t in turns] == routed and [t.propensity for t in turns] == [0.5] * 3
    assert [t.history_len for t in turns] == [2, 4, 6]
    assert [m.to_dict() for m in turns[0].initial_messages] == messages[:2]
    assert [m.role for t in turns for m in t.messages] == ["assistant", "tool"] * 2 + [
        "assistant",
        "user",
    ]
    for t, request in zip(turns, sent, strict=True):
        prompt = count_words(" ".join(str(m.get("content") or "") for m in request["messages"]))
        price = PRICES[t.model]
        assert t.prompt_tokens == prompt
        assert t.dollars == pytest.approx((prompt * price[0] + t.completion_tokens * price[1]) / 1e6)
    assert episode.cost == pytest.approx(sum(t.dollars for t in turns))
    assert episode.extra["session"] == session and episode.router == "random"


def test_litellm_client_runs_a_streamed_conversation_matched_by_its_history(serving, openai_server, tmp_path):
    from harness.backends.litellm_backend import load_litellm

    litellm = load_litellm()
    running = serving("round-robin")
    openai_server.tool_calls = [("lookup", '{"q": "heron"}')]
    messages: list = [{"role": "user", "content": "heron?"}]
    common = {
        "model": "openai/round-robin",
        "api_base": running.base_url,
        "api_key": "unused",
        "tools": TOOLS,
    }
    for turn in range(4):
        if turn % 2:
            reply = litellm.completion(messages=messages, **common)
            message = reply.choices[0].message
            text, calls = (
                message.content,
                [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls],
            )
        else:
            chunks = list(litellm.completion(messages=messages, stream=True, **common))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            calls = [(t.id, t.function.name, t.function.arguments)
                     for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]  # fmt: skip
        assert text == openai_server.reply and calls[0][1:] == ("lookup", '{"q": "heron"}')
        messages += [
            {"role": "assistant", "content": text, "tool_calls": [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls]},
            {"role": "tool", "tool_call_id": calls[0][0], "content": f"result {turn}"},
        ]  # fmt: skip
    (session,) = running.server.sessions.open
    close_session(running, session.id, 0.5)
    (episode,) = RunStore(tmp_path / "served").episodes()
    turns = turns_of(tmp_path / "served", episode.episode)
    # round-robin by turn index: the server counted the turns of one session, not four sessions
    assert [t.model for t in turns] == ["big", "small", "big", "small"]
    assert [t.history_len for t in turns] == [1, 3, 5, 7] and episode.score == 0.5


def test_a_client_key_is_required_when_configured_and_binding_defaults_to_loopback(serving, monkeypatch):
    assert ServeConfig(router=RouterSpec("random"), out=Path("x")).host == "127.0.0.1"
    with pytest.raises(ConfigError, match="SERVE_TEST_CLIENT_KEY"):
        serving(host="0.0.0.0", client_key_env="SERVE_TEST_CLIENT_KEY")
    monkeypatch.setenv("SERVE_TEST_CLIENT_KEY", "client-key-1")
    running = serving(client_key_env="SERVE_TEST_CLIENT_KEY")
    anonymous = openai.OpenAI(base_url=running.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.chat.completions.create(model="random", messages=[{"role": "user", "content": "hi"}])
    for path in ("/models", "/chat/completions", "/sessions/x/outcome"):
        response = httpx.request("GET" if path == "/models" else "POST", running.base_url + path, json={})
        assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    assert httpx.get(running.base_url.removesuffix("/v1") + "/metrics").status_code == 401
    assert httpx.get(running.base_url.removesuffix("/v1") + "/health").status_code == 200
    client = openai.OpenAI(base_url=running.base_url, api_key="client-key-1", max_retries=0)
    assert client.chat.completions.create(
        model="random", messages=[{"role": "user", "content": "hi"}]
    ).choices
    assert [m.id for m in client.models.list()] == ["random", "big", "small"]


def test_upstream_errors_are_retried_then_returned_in_openai_shape_without_the_key(
    serving, openai_server, tmp_path, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    running = serving("single", {"model": "big"})
    client = openai.OpenAI(base_url=running.base_url, api_key="unused", max_retries=0)
    hello = [{"role": "user", "content": "hello"}]
    openai_server.fail_next(429, times=2)
    assert client.chat.completions.create(model="x", messages=hello).choices[0].message.content
    assert openai_server.request_count == 3  # two refusals retried, then the answer
    openai_server.fail_next(503, times=5)  # more than the policy's 4 retries
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="x", messages=hello + [{"role": "user", "content": "again"}])
    assert caught.value.status_code == 503 and openai_server.request_count == 8
    error = caught.value.body
    assert "after 5 attempts: HTTP 503" in error["message"] and error["type"] == "server_error"
    openai_server.fail_next(401)  # a refused upstream key is the server's problem, not the client's
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "key?"}])
    assert refused.value.status_code == 502 and "***" in refused.value.body["message"]
    metrics = httpx.get(running.base_url.removesuffix("/v1") + "/metrics").text
    assert 'harness_serve_errors_total{kind="upstream"} 2.0' in metrics
    assert 'harness_serve_routed_turns_total{model="big"} 1.0' in metrics
    running.stop()
    records = RunStore(tmp_path / "served").episodes()
    assert sum(r.retries for r in records) == 2 + 4
    # the answered session ends with the server; the two never answered are failed episodes, not results
    assert sorted((r.status, r.turns) for r in records) == [
        ("failed", 0),
        ("failed", 0),
        ("shutdown", 1),
    ]
    stored = "".join(p.read_text() for p in (tmp_path / "served").rglob("*") if p.is_file())
    out, err = capfd.readouterr()
    seen = stored + caplog.text + out + err + metrics + str(error) + str(refused.value.body)
    assert SECRET not in seen


def test_malformed_requests_get_400_with_one_line(serving):
    running = serving()
    url = running.base_url + "/chat/completions"
    cases = [
        (b"not json", "request body is not JSON"),
        (b"[1, 2]", "request body is not a JSON object"),
        (b"{}", "messages must be a non-empty list"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}', "messages[0].role 'robot'"),
        (b'{"messages": [{"role": "user", "content": "x"}], "n": 3}', "n must be 1"),
        (b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}', "tools[0]"),
        (b'{"messages": [{"role": "user", "content": "x"}], "metadata": {"benchmark": "nope"}}', "'nope'"),
    ]
    for body, expected in cases:
        response = httpx.post(url, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, body
        message = response.json()["error"]["message"]
        assert expected in message and "\n" not in message
    assert running.server.sessions.open == []


def test_a_client_leaving_mid_stream_leaves_a_consistent_log(serving, openai_server, tmp_path):
    running = serving("single", {"model": "small"})
    openai_server.reply = " ".join(f"word{i}" for i in range(40))
    openai_server.chunk_delay_s = 0.05
    body = {"model": "x", "messages": [{"role": "user", "content": "talk"}], "stream": True}
    with httpx.stream(
        "POST", running.base_url + "/chat/completions", json=body, headers={"x-session-id": "s1"}
    ) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")  # the first chunk arrived; the client walks away
    deadline = time.monotonic() + 10
    while running.server.sessions.by_id["s1"].busy:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    openai_server.chunk_delay_s = 0.0
    # The client asks the same turn again; it is turn 0, answered once.
    again = httpx.post(running.base_url + "/chat/completions", json=body | {"stream": False},
                       headers={"x-session-id": "s1"})  # fmt: skip
    assert again.status_code == 200
    record = close_session(running, "s1", None)
    assert record["turns"] == 1
    (episode,) = RunStore(tmp_path / "served").episodes()
    assert episode.abandoned_cost > 0 and episode.cost > 0
    (turn,) = turns_of(tmp_path / "served", "serve/s1")
    assert turn.turn == 0 and turn.output == openai_server.reply


@pytest.mark.parametrize(
    "benchmark, router, task_filter, tool_calls",
    [
        ("scienceworld", "heuristic", "^find-animal$", []),
        ("hle", "round-robin", "^engineering$", [("search", '{"query": "bridge load"}')]),
    ],
)
def test_the_harness_agent_plays_through_the_server_as_harness_run_records(
    benchmark, router, task_filter, tool_calls, serving, openai_server, tmp_path
):
    """The agent loop, pointed at the server through LiteLLM, does not know it is routed; the served run
    directory chooses the models and bills the dollars `harness run` with the same router records."""
    from harness.batch import Worker, prepare
    from harness.config import RunConfig

    def play(config: RunConfig, out: Path) -> list[EpisodeRecord]:
        """The batch's episodes in this process, on the one engine both runs share."""
        batch = prepare(config, out)
        records = [worker.play(batch.config, out, task) for task in batch.tasks]
        for record in records:
            batch.store.record_episode(record)
        batch.store.close()
        return records

    openai_server.tool_calls = tool_calls
    limits = Limits(max_turns=5)
    names = ("big", "mid", "small")
    common = {"benchmark": benchmark, "split": "test_id", "quick": True, "task_filter": task_filter,
              "backend": "litellm", "limits": limits}  # fmt: skip
    upstream = write_pool(tmp_path / "upstream.yaml", openai_server.base_url, names)
    worker = Worker()
    try:
        direct = play(RunConfig(router=RouterSpec(router), pool=str(upstream), **common), tmp_path / "direct")
        running = serving(router, names=names, benchmark=benchmark, limits=limits)
        client_pool = tmp_path / "client.yaml"
        client_pool.write_text(yaml.safe_dump({"name": "served", "models": [{
            "name": "routed", "provider_model": f"openai/{router}", "api_base": running.base_url,
            "api_key_env": KEY_ENV, "price": {"input_per_mtok": 0.0, "output_per_mtok": 0.0, "version": "test"}}]}))  # fmt: skip
        client = RunConfig(router=RouterSpec("single", {"model": "routed"}), pool=str(client_pool), **common)
        through = play(client, tmp_path / "client")
    finally:
        worker.close()
    running.stop()
    assert len(direct) == len(through) >= 1 and all(r.status == "max_turns" for r in direct + through)

    direct_store, served_store = RunStore(tmp_path / "direct"), RunStore(tmp_path / "served")
    served = {}
    for record in served_store.episodes():
        turns = served_store.turns(record.episode)
        served[json.dumps([m.to_dict() for m in turns[0].initial_messages])] = (record, turns)
    assert len(served) == len(direct)
    for record in direct:
        turns = direct_store.turns(record.episode)
        served_record, served_turns = served.pop(json.dumps([m.to_dict() for m in turns[0].initial_messages]))
        assert [t.model for t in served_turns] == [t.model for t in turns]
        assert len(set(t.model for t in turns)) > 1  # the router's choices depend on the turn
        assert [t.dollars for t in served_turns] == pytest.approx([t.dollars for t in turns], rel=1e-12)
        assert [t.history_len for t in served_turns] == [t.history_len for t in turns]
        # every turn's appended messages agree; the last one's observation never reached the server
        assert [t.messages for t in served_turns[:-1]] == [t.messages for t in turns[:-1]]
        assert served_record.cost == pytest.approx(record.cost, rel=1e-12)
        assert served_record.status == record.status and served_record.benchmark == benchmark
        if benchmark == "scienceworld":  # the router was told the task as the agent loop tells it
            assert served_turns[0].task_description == turns[0].task_description


def post_turn(running: Running, session: str, messages: list, **body) -> httpx.Response:
    response = httpx.post(running.base_url + "/chat/completions", headers={"x-session-id": session},
                          json={"model": "router", "messages": messages, **body}, timeout=60)  # fmt: skip
    assert response.status_code == 200, response.text
    return response


def serve_traffic(running: Running, sessions: int, turns: int, score: Callable[[list[str]], float]) -> None:
    """Scripted conversations with explicit session ids, each closed with the score ``score`` gives its models."""
    for i in range(sessions):
        messages: list = [{"role": "user", "content": f"Task: find animal number {i}"}]
        models = []
        for turn in range(turns):
            reply = post_turn(running, f"rt-{i}", messages)
            models.append(reply.headers["x-routed-model"])
            messages += [
                reply.json()["choices"][0]["message"],
                {"role": "user", "content": f"You see {turn}."},
            ]
        close_session(running, f"rt-{i}", score(models), messages=messages)


def test_served_traffic_of_a_stochastic_router_is_replayed_offline(serving, tmp_path):
    """Round trip, first half: a stochastic router's served traffic gives another router finite IS/DR
    estimates with their effective sample sizes."""
    from harness.pool import load_pool
    from harness.replay.evaluate import evaluate_router, load_logs
    from harness.replay.ope import OPEConfig

    running = serving("random")
    serve_traffic(running, sessions=24, turns=2, score=lambda models: float(models.count("big") == 2))
    running.stop()
    out = tmp_path / "served"
    cards = load_pool(str(tmp_path / "pool.yaml")).cards
    evaluation = evaluate_router(RouterSpec("single", {"model": "big"}), load_logs([out]), cards,
                                 ["tis", "wpdis", "dr"], OPEConfig(n_bootstrap=50, refit_resamples=0))  # fmt: skip
    assert evaluation.episodes == 24 and evaluation.turns == 48
    for estimate in evaluation.estimates.values():
        assert math.isfinite(estimate.score.value) and 0 < estimate.score.ess <= 24
    # Only always-big sessions scored 1, so always-big is worth 1 exactly under self-normalised weights.
    assert evaluation.estimates["wpdis"].score.value == pytest.approx(1.0)


def test_served_traffic_trains_a_router_that_is_served_again(serving, tmp_path):
    """Round trip, second half: `harness train` fits a router (the default encoder) on served traffic,
    and the trained router serves."""
    from routers.learned.train import TrainOptions, train_router

    running = serving("random")
    serve_traffic(running, sessions=24, turns=2, score=lambda models: float(models.count("big") == 2))
    running.stop()
    params = {"checkpoint": str(tmp_path / "ridge"), "cache_dir": str(tmp_path / "cache")}
    options = TrainOptions(lam=0.0, cache_dir=str(tmp_path / "cache"))
    report = train_router("ridge", [tmp_path / "served"], tmp_path / "ridge", options)
    # every served session is an episode of two decisions, split between training and validation
    assert report.train_episodes + report.val_episodes == 24
    assert report.train_decisions + report.val_decisions == 48
    retrained = serving("ridge", params, out=tmp_path / "served-again")
    reply = post_turn(retrained, "again", [{"role": "user", "content": "Task: find animal 3"}])
    assert reply.headers["x-routed-model"] in ("big", "small")


async def converse(base_url: str, client: httpx.AsyncClient, i: int, turns: int) -> list[float]:
    """One agent's conversation, matched by its history alone; the wall time of each turn."""
    messages: list = [{"role": "system", "content": "You are a field biologist."},
                      {"role": "user", "content": f"Task: count the herons at pond {i}"}]  # fmt: skip
    walls = []
    for turn in range(turns):
        started = time.perf_counter()
        response = await client.post(
            f"{base_url}/chat/completions", json={"model": "router", "messages": messages}
        )
        walls.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        messages += [response.json()["choices"][0]["message"], {"role": "user", "content": f"{turn} herons"}]
    return walls


def test_fifty_concurrent_sessions_lose_and_duplicate_no_turn_line(serving, openai_server, tmp_path):
    import asyncio

    sessions, turns = 50, 10
    running = serving("random", names=("big", "mid", "small"))
    openai_server.latency_s = 0.02

    async def load() -> None:
        limits = httpx.Limits(max_connections=sessions)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            await asyncio.gather(*(converse(running.base_url, client, i, turns) for i in range(sessions)))

    asyncio.run(load())
    running.stop()
    store = RunStore(tmp_path / "served")
    episodes = store.episodes()
    assert len(episodes) == sessions and len({e.episode for e in episodes}) == sessions
    assert openai_server.request_count == sessions * turns
    ponds = set()
    for episode in episodes:
        lines = store.turns(episode.episode)
        assert [t.turn for t in lines] == list(range(turns)) and episode.turns == turns
        ponds.add(lines[0].initial_messages[1].content)
        assert [t.history_len for t in lines] == [2 + 2 * k for k in range(turns)]
    assert len(ponds) == sessions  # one episode per conversation, none merged or split


def test_sigterm_drains_the_stream_in_flight_then_closes_every_session(openai_server, tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys

    monkeypatch.setenv(KEY_ENV, SECRET)
    pool = write_pool(tmp_path / "pool.yaml", openai_server.base_url)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "served"
    command = [sys.executable, "-m", "harness.cli", "serve", "--out", str(out), "--router", "random",
               "--pool", str(pool), "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(base_url.removesuffix("/v1") + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        hello = {"model": "r", "messages": [{"role": "user", "content": "hello"}]}
        assert (
            httpx.post(base_url + "/chat/completions", json=hello, headers={"x-session-id": "a"}).status_code
            == 200
        )
        openai_server.reply = " ".join(f"w{i}" for i in range(20))
        openai_server.chunk_delay_s = 0.1
        body = {"model": "r", "messages": [{"role": "user", "content": "stream"}], "stream": True}
        with httpx.stream("POST", base_url + "/chat/completions", json=body, headers={"x-session-id": "b"},
                          timeout=60) as stream:  # fmt: skip
            lines = stream.iter_lines()
            assert next(lines).startswith("data: ")
            process.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"  # drained, not cut off
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert process.returncode in (0, -signal.SIGTERM) and "Traceback" not in stderr and SECRET not in stderr
    store = RunStore(out)
    records = {r.extra["session"]: r for r in store.episodes()}
    assert set(records) == {"a", "b"} and all(
        r.status == "shutdown" and r.turns == 1 for r in records.values()
    )
    assert store.turns("serve/b")[0].output == openai_server.reply


def test_limits_end_a_session_as_the_agent_loop_does_and_idle_sessions_close(
    serving, openai_server, tmp_path
):
    running = serving("single", {"model": "big"}, limits=Limits(max_turns=2, budget_dollars=1e-4),
                      idle_timeout_s=0.3)  # fmt: skip
    openai_server.reply = "ok"  # 1 completion token; 60 prompt words cost $0.000120 at $2/Mtok
    words = " ".join(["word"] * 60)
    first = [{"role": "user", "content": words}]
    reply = post_turn(running, "spender", first).json()["choices"][0]["message"]
    refused = httpx.post(running.base_url + "/chat/completions", headers={"x-session-id": "spender"},
                         json={"model": "r", "messages": [*first, reply, {"role": "user", "content": "more"}]})  # fmt: skip
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "session_limit_reached"
    assert "budget" in refused.json()["error"]["message"]
    messages = [{"role": "user", "content": "short"}]
    for _ in range(2):
        messages += [post_turn(running, "talker", messages).json()["choices"][0]["message"],
                     {"role": "user", "content": "go on"}]  # fmt: skip
    refused = httpx.post(running.base_url + "/chat/completions", json={"model": "r", "messages": messages})
    assert refused.status_code == 400 and "turn limit (2 turns)" in refused.json()["error"]["message"]
    post_turn(running, "sleeper", [{"role": "user", "content": "zzz"}])
    deadline = time.monotonic() + 10
    while "sleeper" in running.server.sessions.by_id:
        assert time.monotonic() < deadline, "the idle session was not closed"
        time.sleep(0.05)
    records = {r.extra["session"]: r for r in RunStore(tmp_path / "served").episodes()}
    assert {k: (r.status, r.turns) for k, r in records.items()} == {
        "spender": ("budget", 1),
        "talker": ("max_turns", 2),
        "sleeper": ("idle", 1),
    }
    assert turns_of(tmp_path / "served", records["spender"].episode)[0].messages[1].content == "more"


def test_serve_command_refuses_bad_input_in_one_line_before_binding(
    tmp_path, monkeypatch, openai_server, capsys
):
    from harness.cli import app

    monkeypatch.setenv(KEY_ENV, SECRET)
    monkeypatch.delenv("HARNESS_SERVE_API_KEY", raising=False)
    pool = str(write_pool(tmp_path / "pool.yaml", openai_server.base_url))
    for args, needle in [
        (["--router", "oracle", "--pool", pool], "unknown router 'oracle'"),
        (["--router", "single", "-p", "model=gpt-6", "--pool", pool], "'gpt-6'"),
        (["--router", "random", "--pool", pool, "--host", "0.0.0.0"], "HARNESS_SERVE_API_KEY"),
        (["--router", "random", "--pool", pool, "--benchmark", "chess"], "chess"),
    ]:
        with pytest.raises(SystemExit) as exited:
            app(["serve", "--out", str(tmp_path / "served"), *args], standalone_mode=True)
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exited.value.code == 2 and len(lines) == 1 and needle in lines[0], lines
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(SystemExit):
        app(["serve", "--out", str(tmp_path / "served"), "--router", "random", "--pool", pool])
    assert KEY_ENV in capsys.readouterr().err


def test_sessions_named_by_user_or_metadata_retried_and_diverged(serving, tmp_path):
    running = serving("round-robin")
    url = running.base_url + "/chat/completions"

    def ask(messages, **body):
        response = httpx.post(url, json={"model": "r", "messages": messages, **body})
        assert response.status_code == 200, response.text
        return response

    first = [{"role": "user", "content": "one"}]
    reply = ask(first, user="u1")
    assert reply.headers["x-session-id"] == "u1"
    again = ask(first, user="u1")  # the same request again: turn 0 is routed anew, not a second turn
    assert again.headers["x-routed-model"] == reply.headers["x-routed-model"] == "big"
    second = [*first, again.json()["choices"][0]["message"], {"role": "user", "content": "two"}]
    assert ask(second, user="u1").headers["x-routed-model"] == "small"  # round-robin: turn 1
    ask([{"role": "user", "content": "another story"}], user="u1")  # the history was rewritten
    tagged = ask(
        [{"role": "user", "content": "x"}], metadata={"session_id": "m1", "task": "boil", "variation": "3"}
    )
    assert tagged.headers["x-session-id"] == "m1"
    running.stop()
    records = {r.episode: r for r in RunStore(tmp_path / "served").episodes()}
    assert {k: (r.status, r.turns) for k, r in records.items()} == {
        "serve/u1": ("diverged", 2),
        "serve/u1/r1": ("shutdown", 1),
        "serve/m1": ("shutdown", 1),
    }
    assert records["serve/u1"].abandoned_cost > 0 and records["serve/u1"].cost > 0
    assert (records["serve/m1"].task, records["serve/m1"].variation) == ("boil", 3)
    assert [t.turn for t in turns_of(tmp_path / "served", "serve/u1")] == [0, 1]
