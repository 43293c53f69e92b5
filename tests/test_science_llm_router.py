"""The LLM router through a real OpenAI-compatible server on 127.0.0.1 (real socket, SDK and LiteLLM)."""

from __future__ import annotations

import numpy as np
import pytest
from openai_server import OpenAIChatServer, count_words

from harness.errors import ConfigError
from harness.pool import load_pool
from harness.types import Message, TurnState
from routers import make_router
from routers.llm_router import named_model

KEY_ENV = "ROUTING_HARNESS_TEST_KEY"
POOL = load_pool("paper6")


def state(turns: int = 5) -> TurnState:
    history = [Message("system", "You are an agent."), Message("user", "Your task is to boil water.")]
    for t in range(turns):
        history += [Message("assistant", f"Action: step {t}"), Message("user", f"observation {t}")]
    return TurnState(
        benchmark="scienceworld", task="boil", variation=2, task_description="Your task is to boil water.",
        history=history, turn=turns, dollars_spent=0.0123, budget_dollars=2.0, max_turns=50,
        candidates=POOL.cards,
    )  # fmt: skip


@pytest.fixture
def router(openai_server: OpenAIChatServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-llm-router")
    params = {
        "policy_model": "openai/policy-test",
        "api_base": openai_server.base_url,
        "api_key_env": KEY_ENV,
        "input_per_mtok": 2.0,
        "output_per_mtok": 8.0,
        "k": 2,
        "timeout_s": 5.0,
    }
    return make_router("llm-router", params, POOL.names)


def test_request_carries_cards_and_last_k_turns_and_the_reply_picks(router, openai_server: OpenAIChatServer):
    openai_server.reply = "minimax-m2"
    decision = router.route(state(), np.random.default_rng(0))
    assert decision.model == "minimax-m2"
    [request] = openai_server.requests
    assert request.body["model"] == "policy-test"
    prompt = request.body["messages"][-1]["content"]
    for card in POOL.cards:
        assert f"- {card.name}: ${card.price.input_per_mtok:g} input" in prompt
    assert "step 4" in prompt and "step 3" in prompt and "step 2" not in prompt  # k = 2 turns only
    assert "spent $0.0123 of $2" in prompt
    [charge] = decision.overhead
    expected = (charge.prompt_tokens * 2.0 + count_words("minimax-m2") * 8.0) / 1e6
    assert charge.kind == "router" and charge.completion_tokens == 1
    assert charge.dollars == pytest.approx(expected) and charge.dollars > 0


def test_a_reply_naming_no_candidate_falls_back_to_the_cheapest(router, openai_server: OpenAIChatServer):
    openai_server.reply = "I would use a bigger model."
    assert router.route(state(), np.random.default_rng(0)).model == "gpt-oss-120b"
    assert router.unparsed == 1


def test_names_are_matched_whole_and_earliest_first():
    names = POOL.names
    assert named_model("Use gpt-5.", names) == "gpt-5"
    assert named_model("gpt-oss-120b, not gpt-5", names) == "gpt-oss-120b"
    assert named_model("GEMINI-2.5-FLASH-LITE", names) == "gemini-2.5-flash-lite"
    assert named_model("gpt-50", names) is None


def test_without_a_policy_backend_it_refuses_and_says_why():
    with pytest.raises(ConfigError, match="needs a policy backend.*simulated pool"):
        make_router("llm-router", {}, POOL.names)
