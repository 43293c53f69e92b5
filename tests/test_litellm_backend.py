"""LiteLLMBackend through the real litellm + OpenAI SDK stack against a real local HTTP server."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest
from openai_server import DEFAULT_REPLY, OpenAIChatServer, count_words

from harness.backends.litellm_backend import LiteLLMBackend, load_litellm, retry_delays
from harness.errors import ConfigError, ProviderError
from harness.tokens import count_messages, count_text
from harness.types import CallContext, Message, ModelCard, PriceCard, TaskInstance, ToolCall, ToolSpec

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "ROUTING_HARNESS_TEST_KEY"
CARD = ModelCard(
    name="tiny-test",
    price=PriceCard(input_per_mtok=2.5, output_per_mtok=10.0, version="test"),
    provider_model="openai/test-model",
)
CTX = CallContext(seed=7, turn=3, task=TaskInstance("scienceworld", "boil", 0, "test"))
MESSAGES = [
    Message("system", "You are an agent in a text world."),
    Message("user", "Task: boil water. You are in the kitchen."),
]
FAST = {"backoff_s": 0.001, "timeout_s": 5.0}


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = "sk-test-key-0123456789"
    monkeypatch.setenv(KEY_ENV, key)
    return key


def backend(server: OpenAIChatServer, card: ModelCard = CARD, **overrides: object) -> LiteLLMBackend:
    options = {**FAST, **overrides}
    return LiteLLMBackend(card, api_base=server.base_url, api_key_env=KEY_ENV, **options)  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_usage_becomes_tokens_and_price_card_dollars(openai_server: OpenAIChatServer, api_key: str) -> None:
    completion = backend(openai_server).complete(MESSAGES, CTX)

    prompt_words = count_words(" ".join(m.content for m in MESSAGES))
    assert completion.text == DEFAULT_REPLY
    assert completion.prompt_tokens == prompt_words
    assert completion.completion_tokens == count_words(DEFAULT_REPLY)
    assert completion.dollars == pytest.approx(
        (prompt_words * 2.5 + count_words(DEFAULT_REPLY) * 10.0) / 1e6, rel=1e-12
    )
    [request] = openai_server.requests
    assert request.body["model"] == "test-model"
    assert request.body["temperature"] == 0.0
    assert request.body["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES]


def test_configured_reply_text_is_returned(openai_server: OpenAIChatServer, api_key: str) -> None:
    openai_server.reply = "Thought: the stove heats things.\nAction: activate stove"
    completion = backend(openai_server).complete(MESSAGES, CTX)
    assert completion.text == openai_server.reply
    assert completion.completion_tokens == count_words(openai_server.reply)


def test_missing_usage_is_billed_on_local_token_counts(
    openai_server: OpenAIChatServer, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    openai_server.report_usage = False
    with caplog.at_level(logging.WARNING, logger="harness.backends.litellm_backend"):
        completion = backend(openai_server).complete(MESSAGES, CTX)
    assert completion.prompt_tokens == count_messages(MESSAGES)
    assert completion.completion_tokens == count_text(DEFAULT_REPLY)
    assert completion.dollars == pytest.approx(
        CARD.price.dollars(completion.prompt_tokens, completion.completion_tokens)
    )
    assert "reported no token usage" in caplog.text


def test_zero_price_card_falls_back_to_litellm_cost_map(
    openai_server: OpenAIChatServer, api_key: str
) -> None:
    card = ModelCard(name="mini", price=PriceCard(0.0, 0.0, "test"), provider_model="openai/gpt-4o-mini")
    completion = backend(openai_server, card).complete(MESSAGES, CTX)

    prompt_cost, completion_cost = load_litellm().cost_per_token(
        model="openai/gpt-4o-mini",
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )
    assert completion.dollars > 0
    assert completion.dollars == pytest.approx(prompt_cost + completion_cost)


def test_zero_price_unmapped_model_costs_nothing_and_warns_once(
    openai_server: OpenAIChatServer, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    card = ModelCard(name="free-local", price=PriceCard(0.0, 0.0, "test"), provider_model="openai/test-model")
    model = backend(openai_server, card)
    with caplog.at_level(logging.WARNING, logger="harness.backends.litellm_backend"):
        assert model.complete(MESSAGES, CTX).dollars == 0.0
        assert model.complete(MESSAGES, CTX).dollars == 0.0
    warnings = [r for r in caplog.records if r.name == "harness.backends.litellm_backend"]
    assert len(warnings) == 1
    assert "free-local" in warnings[0].getMessage()


def test_429_is_retried_then_succeeds(openai_server: OpenAIChatServer, api_key: str) -> None:
    openai_server.fail_next(429)
    completion = backend(openai_server).complete(MESSAGES, CTX)
    assert completion.text == DEFAULT_REPLY
    assert openai_server.request_count == 2


def test_500_twice_is_retried_then_succeeds(openai_server: OpenAIChatServer, api_key: str) -> None:
    openai_server.fail_next(500, times=2)
    completion = backend(openai_server).complete(MESSAGES, CTX)
    assert completion.text == DEFAULT_REPLY
    assert openai_server.request_count == 3


def test_timeout_is_retried_then_succeeds(openai_server: OpenAIChatServer, api_key: str) -> None:
    openai_server.hang_next(5.0)
    completion = backend(openai_server, timeout_s=0.3).complete(MESSAGES, CTX)
    assert completion.text == DEFAULT_REPLY
    assert openai_server.request_count == 2


def test_connection_refused_is_retried_then_reported() -> None:
    model = LiteLLMBackend(CARD, api_base=f"http://127.0.0.1:{closed_port()}/v1", max_retries=1, **FAST)
    with pytest.raises(ProviderError, match=r"failed after 2 attempts"):
        model.complete(MESSAGES, CTX)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_other_than_429_are_not_retried(
    openai_server: OpenAIChatServer, api_key: str, status: int
) -> None:
    openai_server.fail_next(status)
    with pytest.raises(ProviderError) as raised:
        backend(openai_server).complete(MESSAGES, CTX)
    message = str(raised.value)
    assert "'tiny-test'" in message
    assert f"HTTP {status}" in message
    assert "after 1 attempt:" in message
    assert openai_server.request_count == 1


def test_exhausted_retries_raise_one_line_provider_error(
    openai_server: OpenAIChatServer, api_key: str
) -> None:
    openai_server.fail_next(503, times=10)
    with pytest.raises(ProviderError) as raised:
        backend(openai_server, max_retries=2).complete(MESSAGES, CTX)
    message = str(raised.value)
    assert "'tiny-test'" in message and "HTTP 503" in message and "after 3 attempts" in message
    assert "\n" not in message
    assert openai_server.request_count == 3


def test_backoff_waits_between_attempts(openai_server: OpenAIChatServer, api_key: str) -> None:
    openai_server.fail_next(429)
    backend(openai_server, backoff_s=0.2).complete(MESSAGES, CTX)
    first, second = openai_server.requests
    assert second.received_at - first.received_at >= 0.1  # jitter keeps the first wait >= half of backoff_s


def test_retry_delays_grow_exponentially_and_depend_only_on_seed() -> None:
    delays = retry_delays(4, 1.0, seed=11)
    assert delays == retry_delays(4, 1.0, seed=11)
    assert delays != retry_delays(4, 1.0, seed=12)
    for i, delay in enumerate(delays):
        assert 0.5 * 2**i <= delay < 1.5 * 2**i


def test_authorization_header_carries_key_from_named_env_var(
    openai_server: OpenAIChatServer, api_key: str
) -> None:
    backend(openai_server).complete(MESSAGES, CTX)
    assert openai_server.requests[0].headers["authorization"] == f"Bearer {api_key}"


def test_missing_key_env_var_is_a_config_error_naming_it(
    openai_server: OpenAIChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=KEY_ENV):
        backend(openai_server).complete(MESSAGES, CTX)
    assert openai_server.request_count == 0


def test_secret_never_reaches_logs_output_or_errors(
    openai_server: OpenAIChatServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = "sk-LEAKCHECK-7f3a9c21d0"
    monkeypatch.setenv(KEY_ENV, secret)
    caplog.set_level(logging.DEBUG)
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "openai", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    model = backend(openai_server, max_retries=1)

    openai_server.fail_next(429, times=2)  # retried, logged, then exhausted
    with pytest.raises(ProviderError) as exhausted:
        model.complete(MESSAGES, CTX)
    openai_server.fail_next(401)  # the server echoes the key in its error body, as real providers may
    with pytest.raises(ProviderError) as rejected:
        model.complete(MESSAGES, CTX)

    assert all(r.headers["authorization"] == f"Bearer {secret}" for r in openai_server.requests)
    assert "***" in str(rejected.value)  # the echoed key was there, and was redacted
    out, err = capfd.readouterr()
    for error in (exhausted.value, rejected.value):
        assert error.__cause__ is None and error.__context__ is None
        assert secret not in "".join(traceback.format_exception(error))
    assert caplog.records, "nothing was logged, so the log check would prove nothing"
    assert secret not in caplog.text
    assert secret not in out + err
    assert secret not in repr(model) + repr(vars(model))


def test_importing_the_module_does_not_import_litellm() -> None:
    code = "import sys, harness.backends.litellm_backend; print('litellm' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_loading_litellm_opens_no_network_connection(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        seen = []
        def audit(event, args):
            if event in ("socket.connect", "socket.getaddrinfo"):
                seen.append(f"{event} {args!r}"[:200])
        sys.addaudithook(audit)
        from harness.backends.litellm_backend import load_litellm
        load_litellm()
        print("\\n".join(seen))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""


TOOLS = [
    ToolSpec(
        "lookup",
        "Look a key up in the table.",
        {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
    ),
    ToolSpec(
        "answer", "Give the final answer.", {"type": "object", "properties": {"value": {"type": "number"}}}
    ),
]


def test_tool_calls_go_out_in_the_openai_format_and_come_back_parsed(
    openai_server: OpenAIChatServer, api_key: str
) -> None:
    openai_server.reply = ""
    openai_server.tool_calls = [("lookup", '{"key": "a"}'), ("lookup", '{"key": "b"}')]
    history = [
        *MESSAGES,
        Message("assistant", "Let me look.", tool_calls=(ToolCall("call_9", "lookup", '{"key": "z"}'),)),
        Message("tool", "26", tool_call_id="call_9", name="lookup"),
    ]
    completion = backend(openai_server).complete(history, CTX, tools=TOOLS)

    assert completion.tool_calls == (
        ToolCall("call_0", "lookup", '{"key": "a"}'),
        ToolCall("call_1", "lookup", '{"key": "b"}'),
    )
    [request] = openai_server.requests
    assert request.body["tools"] == [tool.openai() for tool in TOOLS]
    assert request.body["tools"][0]["function"]["parameters"]["required"] == ["key"]
    sent_call, sent_result = request.body["messages"][-2:]
    assert sent_call["tool_calls"] == [
        {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": '{"key": "z"}'}}
    ]
    assert sent_result == {"role": "tool", "content": "26", "tool_call_id": "call_9", "name": "lookup"}
    assert completion.completion_tokens == count_words('{"key": "a"}') * 2


def test_no_tools_offered_sends_no_tools_key(openai_server: OpenAIChatServer, api_key: str) -> None:
    completion = backend(openai_server).complete(MESSAGES, CTX)
    assert completion.tool_calls == ()
    assert "tools" not in openai_server.requests[0].body
