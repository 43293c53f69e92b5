"""A real ScienceWorld episode routed over the LiteLLM path to a real local OpenAI-compatible server."""

from __future__ import annotations

import logging

import yaml

from harness.batch import prepare, run_batch
from harness.config import Limits, RouterSpec, RunConfig

SECRET = "sk-test-DO-NOT-LEAK-4242"


def write_pool(path, base_url):
    models = [
        {
            "name": name,
            "provider_model": f"openai/{name}",
            "price": {"input_per_mtok": price_in, "output_per_mtok": price_out, "version": "test"},
            "api_base": base_url,
            "api_key_env": "ROUTING_TEST_KEY",
        }
        for name, price_in, price_out in [("big", 2.0, 8.0), ("small", 0.1, 0.4)]
    ]
    path.write_text(yaml.safe_dump({"name": "local", "models": models}))


def test_litellm_episode_bills_usage_and_never_stores_the_key(
    tmp_path, openai_server, monkeypatch, caplog, capfd
):
    monkeypatch.setenv("ROUTING_TEST_KEY", SECRET)
    pool = tmp_path / "local.yaml"
    write_pool(pool, openai_server.base_url)
    openai_server.fail_next(429)  # the first call is retried, not lost
    config = RunConfig(
        router=RouterSpec("random"),
        pool=str(pool),
        split="test_id",
        quick=True,
        task_filter="find-animal",
        backend="litellm",
        limits=Limits(max_turns=3),
    )
    caplog.set_level(logging.DEBUG)
    batch = prepare(config, tmp_path / "run")
    (record,) = run_batch(batch)
    assert record.status == "max_turns" and record.turns == 3
    turns = batch.store.turns(record.episode)
    assert [t.action for t in turns] == ["look around"] * 3
    assert openai_server.request_count == 4  # 3 turns + 1 retried 429
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in openai_server.requests)
    for t in turns:  # usage came from the server's response; dollars from our price card
        price = {"big": (2.0, 8.0), "small": (0.1, 0.4)}[t.model]
        assert t.prompt_tokens > 0 and t.completion_tokens > 0
        assert abs(t.dollars - (t.prompt_tokens * price[0] + t.completion_tokens * price[1]) / 1e6) < 1e-12
    stored = "".join(p.read_text() for p in (tmp_path / "run").rglob("*") if p.is_file())
    out, err = capfd.readouterr()
    assert SECRET not in stored + caplog.text + out + err
