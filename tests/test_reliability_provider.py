"""Provider failures through the real LiteLLM path to the real local server, on the real engine.

Infrastructure failures are recorded as such and played again on rerun; a failed episode keeps what it
spent; a batch that did not do what was asked exits non-zero with one line; Retry-After is honoured,
malformed bodies are named, and retries are counted per episode.
"""

from __future__ import annotations

import email.utils
import os
import subprocess
import sys
import time

import pytest
import yaml
from accounting import assert_every_dollar_accounted

import harness.backends.litellm_backend as litellm_backend
from harness.backends.litellm_backend import LiteLLMBackend
from harness.batch import execute
from harness.config import Limits, RouterSpec, RunConfig
from harness.errors import ProviderError
from harness.trajectory import RunStore, read_lines
from harness.types import CallContext, Message, ModelCard, PriceCard, TaskInstance

HARNESS = [sys.executable, "-m", "harness.cli"]
KEY_ENV = "ROUTING_TEST_KEY"


def write_pool(path, base_url):
    models = [
        {
            "name": name,
            "provider_model": f"openai/{name}",
            "price": {"input_per_mtok": price_in, "output_per_mtok": price_out, "version": "test"},
            "api_base": base_url,
            "api_key_env": KEY_ENV,
        }
        for name, price_in, price_out in [("big", 2.0, 8.0), ("small", 0.1, 0.4)]
    ]
    path.write_text(yaml.safe_dump({"name": "local", "models": models}))
    return path


def config(pool, split="train", max_turns=3) -> RunConfig:
    """find-animal: two episodes of the quick train split, one of test_id."""
    return RunConfig(
        router=RouterSpec("random"),
        pool=str(pool),
        split=split,
        quick=True,
        task_filter="find-animal",
        backend="litellm",
        limits=Limits(max_turns=max_turns),
    )


@pytest.fixture
def fast_retries(monkeypatch):
    """No backoff sleeps, so a provider outage takes milliseconds; the number of attempts is unchanged."""
    monkeypatch.setattr(litellm_backend, "retry_delays", lambda n, backoff, seed: [0.0] * n)
    monkeypatch.setenv(KEY_ENV, "sk-test")


def turn_dollars(store: RunStore, key: str) -> float:
    return sum(c["dollars"] for t in store.turns(key) for c in t.charges)


def test_provider_outage_is_an_infrastructure_failure_played_again_on_rerun(
    tmp_path, openai_server, fast_retries
):
    pool = write_pool(tmp_path / "local.yaml", openai_server.base_url)
    out = tmp_path / "run"
    openai_server.fail_next(500, times=1000)  # down for the whole first batch
    first = execute(config(pool), out)
    assert [r.failure for r in first] == ["infrastructure"] * 2
    assert all("HTTP 500" in r.error for r in first)

    openai_server.recover()
    sent = openai_server.request_count
    second = execute(config(pool), out)
    assert openai_server.request_count > sent  # the rerun played the failed episodes again
    assert [r.status for r in second] == ["max_turns"] * 2
    assert len(RunStore(out).episodes()) == 2  # one line per episode
    assert len(read_lines(out / "episodes.retried.jsonl")) == 2  # the failed attempts are kept aside

    kept = execute(config(pool), out, retry_infrastructure=False)
    assert kept == second


def test_a_replayed_provider_failure_carries_the_failed_attempts_charges(
    tmp_path, openai_server, fast_retries
):
    pool = write_pool(tmp_path / "local.yaml", openai_server.base_url)
    out = tmp_path / "run"
    openai_server.fail_after(2, status=500, times=1000)  # two turns answered, then the provider is down
    first = execute(config(pool, max_turns=5), out)
    assert [r.failure for r in first] == ["infrastructure"] * 2
    paid = sum(r.cost for r in first)
    assert paid > 0

    openai_server.recover()
    second = execute(config(pool, max_turns=5), out)
    assert [r.status for r in second] == ["max_turns"] * 2
    assert all(r.attempts == 2 for r in second)
    assert sum(r.abandoned_cost for r in second) == pytest.approx(paid)  # the failed attempts' dollars
    assert_every_dollar_accounted(out)


def test_an_episode_that_fails_after_model_calls_records_what_it_spent(tmp_path, openai_server, fast_retries):
    pool = write_pool(tmp_path / "local.yaml", openai_server.base_url)
    out = tmp_path / "run"
    openai_server.fail_after(2, status=401, times=1000)  # two turns answered, then the key is refused
    (record,) = execute(config(pool, "test_id", max_turns=5), out)
    store = RunStore(out)
    assert record.status == "failed" and record.turns == 2
    assert record.cost > 0
    assert record.cost == pytest.approx(turn_dollars(store, record.episode))
    assert record.model_cost == pytest.approx(sum(record.cost_by_model.values()))


def test_exit_code_is_non_zero_with_one_line_when_every_episode_failed(tmp_path, openai_server):
    pool = write_pool(tmp_path / "local.yaml", openai_server.base_url)
    openai_server.fail_next(401, times=1000)
    result = subprocess.run(
        [*HARNESS, "run", "--out", str(tmp_path / "run"), "--pool", str(pool), "--backend", "litellm"]
        + ["--split", "train", "--quick", "--tasks", "find-animal", "--max-turns", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, KEY_ENV: "sk-test"},
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 of 2 episodes" in errors[0] and "HTTP 401" in errors[0], result.stderr


def backend(server, **kwargs) -> LiteLLMBackend:
    card = ModelCard(name="m", price=PriceCard(1.0, 2.0, "test"), provider_model="openai/m")
    return LiteLLMBackend(card, api_base=server.base_url, api_key_env=KEY_ENV, timeout_s=5, **kwargs)


def ctx() -> CallContext:
    return CallContext(seed=0, turn=0, task=TaskInstance("scienceworld", "boil", 0, "test_id"), scratch={})


MESSAGES = [Message("user", "hello")]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_on_429_is_honoured(openai_server, monkeypatch, form):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    value = "2" if form == "seconds" else email.utils.formatdate(time.time() + 3, usegmt=True)
    openai_server.fail_next(429, retry_after=value)
    context = ctx()
    backend(openai_server, backoff_s=0.01).complete(MESSAGES, context)
    first, second = openai_server.requests
    assert second.received_at - first.received_at >= 1.5  # not the 10 ms backoff
    assert context.scratch["provider_retries"] == 1


def test_retry_after_is_capped(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    monkeypatch.setattr(litellm_backend, "RETRY_AFTER_CAP_S", 0.2)
    openai_server.fail_next(429, retry_after="3600")
    started = time.monotonic()
    backend(openai_server, backoff_s=0.01).complete(MESSAGES, ctx())
    assert time.monotonic() - started < 3


def test_a_malformed_body_is_reported_as_such(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    openai_server.malformed_next(times=2)
    with pytest.raises(ProviderError) as failure:
        backend(openai_server, backoff_s=0.01, max_retries=1).complete(MESSAGES, ctx())
    assert "malformed response body" in str(failure.value) and "HTTP 500" not in str(failure.value)
    assert openai_server.request_count == 2  # it was retried like any transient failure


def test_retries_are_counted_in_the_episode_record(tmp_path, openai_server, fast_retries):
    pool = write_pool(tmp_path / "local.yaml", openai_server.base_url)
    openai_server.fail_next(500, times=2)
    (record,) = execute(config(pool, "test_id"), tmp_path / "run")
    assert record.status == "max_turns" and record.retries == 2
