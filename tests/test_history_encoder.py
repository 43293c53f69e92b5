"""History segmentation, the embedding cache, the embedders and the history encoder."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from harness.errors import ConfigError, ProviderError
from harness.types import Message
from routers.learned.embedding import (
    CachedEmbedder,
    Embedder,
    OpenAIEmbeddingsEmbedder,
    SentenceTransformerEmbedder,
    l2_normalise,
)
from routers.learned.history import context_window, count_word_pieces, history_text
from routers.learned.history_encoder import HistoryEncoder, message_segment

REPO = Path(__file__).resolve().parents[1]
TASK = "Your task is to boil water. First, focus on the substance."
KITCHEN = (
    "This room is called the kitchen. In it, you see: the agent, a substance called air, a counter. "
    "On the counter is: a bowl (containing a red apple, a banana), a drawer. a fridge. The fridge door is "
    "closed. a stove, which is turned off. On the stove is: nothing. a thermometer, currently reading a "
    "temperature of 10 degrees celsius. You also see: A door to the hallway (that is open)."
)


class CountingEmbedder:
    """Deterministic pseudo-random unit vectors; records every text it is asked to embed."""

    def __init__(self, dim: int = 8, name: str = "counting-fake") -> None:
        self.name = name
        self.dim = dim
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = [
            np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")).normal(
                size=self.dim
            )
            for t in texts
        ]
        return l2_normalise(np.array(rows, dtype=np.float32).reshape(len(texts), self.dim))

    @property
    def texts_embedded(self) -> list[str]:
        return [text for call in self.calls for text in call]


def episode(turns: int) -> list[Message]:
    messages = [Message("system", "SYSTEM PROMPT"), Message("user", "You are in the hallway.")]
    for turn in range(1, turns + 1):
        messages.append(Message("assistant", f"Thought: step {turn}.\nAction: go to room {turn}"))
        messages.append(Message("user", f"You move to room {turn}."))
    return messages


# --- segmentation ---------------------------------------------------------------------------


def test_history_text_puts_task_first_drops_system_and_lists_turns_newest_first():
    text = history_text(TASK, episode(2))
    assert text == (
        f"[Task]\n{TASK}\n[Context]\n"
        "[Turn 2 - user]\nYou move to room 2.\n"
        "[Turn 2 - assistant]\nThought: step 2.\nAction: go to room 2\n"
        "[Turn 1 - user]\nYou move to room 1.\n"
        "[Turn 1 - assistant]\nThought: step 1.\nAction: go to room 1\n"
        "[Turn 0 - user]\nYou are in the hallway."
    )
    assert "SYSTEM PROMPT" not in text


def test_history_text_without_messages_is_the_task_block():
    assert history_text(TASK, []) == f"[Task]\n{TASK}\n[Context]\n"


@pytest.mark.parametrize("budget", [30, 60, 97, 150, 256, 400])
def test_history_text_stays_within_the_word_piece_budget_and_cuts_the_oldest(budget):
    messages = [Message("user", KITCHEN)] + [
        Message(role, f"{KITCHEN} step {i}") for i, role in enumerate(["assistant", "user"] * 4)
    ]
    text = history_text(TASK, messages, budget_tokens=budget)
    window = context_window(TASK, messages, budget_tokens=budget)
    assert count_word_pieces(text) <= budget
    assert len(window) < len(messages)  # the whole episode never fits
    assert [turn.message for turn in window] == messages[::-1][: len(window)]
    for turn in window:
        assert turn.message.content.startswith(turn.content)
    if window:
        # the budget was spent: adding the first dropped word would overflow it
        assert count_word_pieces(text) > budget - 20


def test_overflowing_turn_is_cut_at_a_word_boundary():
    messages = [Message("user", "alpha " * 300)]
    (turn,) = context_window("short task", messages, budget_tokens=64)
    assert turn.content and set(turn.content.split()) == {"alpha"}
    assert count_word_pieces(history_text("short task", messages, budget_tokens=64)) <= 64


def test_task_longer_than_the_budget_leaves_no_turns():
    long_task = "measure the melting point " * 100
    assert history_text(long_task, episode(3), budget_tokens=256) == f"[Task]\n{long_task}\n[Context]\n"


def test_word_piece_count_is_not_truncated_by_the_shipped_tokenizer_config():
    assert count_word_pieces("word " * 400) == 400


# --- cache ----------------------------------------------------------------------------------


def test_second_call_is_a_cache_hit(tmp_path):
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path)
    first = cached.embed(["a", "b", "a"])
    second = cached.embed(["b", "a"])
    assert inner.texts_embedded == ["a", "b"]
    assert np.array_equal(first[[1, 0]], second)
    stats = cached.stats()
    assert (stats.misses, stats.memory_hits, stats.disk_hits, stats.hits) == (2, 2, 0, 2)


def test_cache_persists_across_instances_without_calling_the_inner_embedder(tmp_path):
    writer_inner = CountingEmbedder()
    original = CachedEmbedder(writer_inner, tmp_path).embed(["look around", "open door to kitchen"])
    reader_inner = CountingEmbedder()
    reader = CachedEmbedder(reader_inner, tmp_path)
    again = reader.embed(["open door to kitchen", "look around"])
    assert reader_inner.calls == []
    assert np.array_equal(again, original[[1, 0]])
    assert reader.stats().disk_hits == 2


def test_cache_keys_include_the_embedder_name(tmp_path):
    CachedEmbedder(CountingEmbedder(name="model-a"), tmp_path).embed(["same text"])
    other = CountingEmbedder(name="model-b")
    CachedEmbedder(other, tmp_path).embed(["same text"])
    assert other.texts_embedded == ["same text"]


def test_memory_lru_evicts_but_disk_still_answers(tmp_path):
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path, memory_items=2)
    cached.embed(["a", "b", "c"])
    cached.embed(["a"])
    assert inner.texts_embedded == ["a", "b", "c"]
    assert cached.stats().disk_hits == 1


def test_two_processes_can_write_the_same_cache_concurrently(tmp_path):
    writer = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(REPO)!r}, {str(Path(__file__).parent)!r}]
        from pathlib import Path
        from test_history_encoder import CountingEmbedder
        from routers.learned.embedding import CachedEmbedder
        cached = CachedEmbedder(CountingEmbedder(), Path(sys.argv[1]))
        for i in range(150):
            cached.embed([f"{{sys.argv[2]}}-{{i}}-{{j}}" for j in range(4)] + [f"shared-{{i}}"])
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", writer, str(tmp_path), name], stderr=subprocess.PIPE, text=True
        )
        for name in ("p1", "p2")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    texts = [f"{name}-{i}-{j}" for name in ("p1", "p2") for i in range(150) for j in range(4)]
    texts += [f"shared-{i}" for i in range(150)]
    reader_inner = CountingEmbedder()
    got = CachedEmbedder(reader_inner, tmp_path).embed(texts)
    assert reader_inner.calls == []
    assert np.allclose(got, CountingEmbedder().embed(texts))


# --- real MiniLM ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    """Loads the bundled model with every outbound connection refused, proving it is offline."""
    embedder = SentenceTransformerEmbedder()
    real_connect = socket.socket.connect

    def refuse(self, address):
        raise AssertionError(f"network access during model load: {address}")

    socket.socket.connect = refuse
    try:
        embedder.model  # noqa: B018 (loads the model)
    finally:
        socket.socket.connect = real_connect
    return embedder


def test_minilm_vectors_are_384_dim_unit_float32(minilm):
    assert isinstance(minilm, Embedder)
    vectors = minilm.embed(
        ["You move to the kitchen.", "You go to the kitchen.", "The stock market fell today."]
    )
    assert vectors.shape == (3, 384) and minilm.dim == 384
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert minilm.max_seq_length == 256


def test_both_encoder_modes_give_unit_vectors_with_minilm(minilm, tmp_path):
    cached = CachedEmbedder(minilm, tmp_path)
    histories = [(TASK, episode(3)), ("Your task is to find an animal.", episode(1))]
    for mode in ("full", "incremental"):
        encoder = HistoryEncoder(cached, mode=mode)
        batch = encoder.encode_batch(histories)
        assert batch.shape == (2, 384)
        assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
        assert np.allclose(batch[1], encoder.encode(*histories[1]), atol=1e-6)
    full, incremental = (
        HistoryEncoder(cached, mode=m).encode(*histories[0]) for m in ("full", "incremental")
    )
    assert full @ incremental > 0.6


# --- history encoder ------------------------------------------------------------------------


def test_incremental_encoder_embeds_only_the_new_message_per_turn(tmp_path):
    inner = CountingEmbedder()
    encoder = HistoryEncoder(CachedEmbedder(inner, tmp_path), mode="incremental")
    messages = episode(3)
    encoder.encode(TASK, messages)
    for turn, new in enumerate(
        [Message("assistant", "Thought: look.\nAction: look around"), Message("user", KITCHEN)]
    ):
        messages = messages + [new]
        before = len(inner.texts_embedded)
        encoder.encode(TASK, messages)
        assert inner.texts_embedded[before:] == [message_segment(4, new)], f"turn {turn}"


def test_full_encoder_embeds_the_whole_history_text_each_turn(tmp_path):
    inner = CountingEmbedder()
    encoder = HistoryEncoder(CachedEmbedder(inner, tmp_path), mode="full")
    encoder.encode(TASK, episode(2))
    encoder.encode(TASK, episode(3))
    assert inner.texts_embedded == [history_text(TASK, episode(2)), history_text(TASK, episode(3))]


def test_incremental_vector_changes_when_a_turn_is_added(tmp_path):
    encoder = HistoryEncoder(CachedEmbedder(CountingEmbedder(), tmp_path), mode="incremental")
    assert not np.allclose(encoder.encode(TASK, episode(2)), encoder.encode(TASK, episode(3)))


def test_unknown_mode_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="'mean'"):
        HistoryEncoder(CachedEmbedder(CountingEmbedder(), tmp_path), mode="mean")  # type: ignore[arg-type]


# --- OpenAI-compatible endpoint -------------------------------------------------------------


class EmbeddingsServer:
    """A real HTTP server on 127.0.0.1 speaking the /v1/embeddings protocol."""

    def __init__(self, fail_with: int | None = None) -> None:
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.fail_with = fail_with
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, **body})
                server.auth.append(self.headers.get("Authorization"))
                if server.fail_with:
                    self.send_response(server.fail_with)
                    self.end_headers()
                    return
                # unnormalised vectors in reverse index order: the client must sort and normalise
                data = [
                    {"object": "embedding", "index": i, "embedding": [float(len(text)), 3.0, 4.0]}
                    for i, text in enumerate(body["input"])
                ][::-1]
                payload = json.dumps(
                    {"data": data, "usage": {"prompt_tokens": 7, "total_tokens": 7}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = EmbeddingsServer()
    yield srv
    srv.close()


def test_openai_embeddings_over_http(server, monkeypatch):
    monkeypatch.setenv("TEST_EMBED_KEY", "sk-test-123")
    embedder = OpenAIEmbeddingsEmbedder("text-embedding-3-small", server.base, "TEST_EMBED_KEY", batch_size=2)
    texts = ["a", "bbbb", "cc", "ddddddd", ""]
    vectors = embedder.embed(texts)
    assert vectors.shape == (5, 3) and embedder.dim == 3
    expected = l2_normalise(np.array([[len(t), 3.0, 4.0] for t in texts]))
    assert np.allclose(vectors, expected)
    assert [r["input"] for r in server.requests] == [["a", "bbbb"], ["cc", "ddddddd"], [""]]
    assert {r["path"] for r in server.requests} == {"/v1/embeddings"}
    assert {r["model"] for r in server.requests} == {"text-embedding-3-small"}
    assert set(server.auth) == {"Bearer sk-test-123"}
    assert embedder.prompt_tokens == 21


def test_openai_dim_is_probed_when_not_given(server):
    embedder = OpenAIEmbeddingsEmbedder("m", server.base)
    assert embedder.dim == 3
    assert server.auth == [None]


def test_openai_embedder_is_cacheable(server, tmp_path):
    cached = CachedEmbedder(OpenAIEmbeddingsEmbedder("m", server.base, dim=3), tmp_path)
    cached.embed(["x", "y"])
    cached.embed(["y", "x"])
    assert len(server.requests) == 1


def test_openai_server_errors_are_retried_then_raised_without_the_key(monkeypatch):
    monkeypatch.setenv("TEST_EMBED_KEY", "sk-secret-value")
    failing = EmbeddingsServer(fail_with=503)
    try:
        embedder = OpenAIEmbeddingsEmbedder(
            "m", failing.base, "TEST_EMBED_KEY", max_retries=2, backoff_s=0.01
        )
        with pytest.raises(ProviderError, match="HTTP 503") as info:
            embedder.embed(["x"])
        assert len(failing.requests) == 3
        assert "sk-secret-value" not in str(info.value)
    finally:
        failing.close()


def test_openai_client_errors_are_not_retried():
    failing = EmbeddingsServer(fail_with=400)
    try:
        with pytest.raises(ProviderError, match="HTTP 400"):
            OpenAIEmbeddingsEmbedder("m", failing.base, max_retries=3, backoff_s=0.01).embed(["x"])
        assert len(failing.requests) == 1
    finally:
        failing.close()


def test_openai_missing_key_variable_is_named(server, monkeypatch):
    monkeypatch.delenv("NO_SUCH_EMBED_KEY", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_EMBED_KEY"):
        OpenAIEmbeddingsEmbedder("m", server.base, "NO_SUCH_EMBED_KEY").embed(["x"])
