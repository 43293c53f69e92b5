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
from openai_server import OpenAIChatServer, count_words

from harness.config import Limits, RouterSpec
from harness.errors import ConfigError
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


def write_pool(path: Path, base_url: str, names=("big", "small")) -> Path:
    models = [
        {
            "name": name,
            "provider_model": f"openai/{name}",
            "price": {"input_per_mtok": PRICES[name][0], "output_per_mtok": PRICES[name][1]},
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
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [self.socket]}, daemon=True)
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

    def start(router: str = "random", params: dict | None = None, names=("big", "small"), **options) -> Running:
        pool = write_pool(tmp_path / "pool.yaml", openai_server.base_url, names)
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


def turns_of(out: Path, key: str) -> list[dict]:
    return RunStore(out).turns(key)


def test_openai_sdk_multi_turn_with_tools_and_streaming(serving, openai_server, tmp_path):
    running = serving("random")
    openai_server.tool_calls = [("lookup", '{"q": "otter"}')]
    client = openai.OpenAI(base_url=running.base_url, api_key="unused", max_retries=0)
    messages: list = [{"role": "system", "content": "You look things up."}, {"role": "user", "content": "otter?"}]
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
    record = close_session(running, session, 1.0, messages=final + [{"role": "user", "content": "thanks"}])
    assert record["turns"] == 3 and record["score"] == 1.0 and record["status"] == "done"

    # Upstream saw the tools, the tool choice and the whole history each time.
    sent = [r.body for r in openai_server.requests]
    assert [len(b["messages"]) for b in sent] == [2, 4, 6]
    assert all(b["tools"] == TOOLS for b in sent) and sent[0]["tool_choice"] == "auto"
    out = tmp_path / "served"
    (episode,) = RunStore(out).episodes()
    turns = turns_of(out, episode["episode"])
    assert [t["model"] for t in turns] == routed and [t["propensity"] for t in turns] == [0.5] * 3
    assert [t["history_len"] for t in turns] == [2, 4, 6]
    assert turns[0]["initial_messages"] == [m for m in messages[:2]]
    assert [m["role"] for t in turns for m in t["messages"]] == ["assistant", "tool"] * 2 + ["assistant", "user"]
    for t, request in zip(turns, sent, strict=True):
        prompt = count_words(" ".join(str(m.get("content") or "") for m in request["messages"]))
        price = PRICES[t["model"]]
        assert t["prompt_tokens"] == prompt
        assert t["dollars"] == pytest.approx((prompt * price[0] + t["completion_tokens"] * price[1]) / 1e6)
    assert episode["cost"] == pytest.approx(sum(t["dollars"] for t in turns))
    assert episode["session"] == session and episode["router"] == "random"
