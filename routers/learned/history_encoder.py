"""One vector per routing decision, summarising the task and the episode so far.

``full`` is the reference: embed the whole segmented history text (see
:mod:`routers.learned.history`) at every turn, so each turn pays one
256-word-piece forward pass that no cache can reuse.

``incremental`` embeds the task once and each message once, and pools them
over the same window of turns the reference text holds. Each segment weighs
the word pieces it occupies in that text (roughly what mean pooling over
the reference's tokens would give it), and the task weighs ``task_weight``
times its own. A message's segment text never changes once written, so with
the shared cache a new turn costs only the embedding of the messages it
added. ``benchmarks/perf_history_encoder.py`` measures what this shortcut
costs in agreement with ``full``; task weight 1.5 was the best of 1, 1.5, 2, 3
there, and token weights beat fixed last-K recency decays.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from harness.errors import ConfigError
from harness.types import Message
from routers.learned.embedding import CachedEmbedder, l2_normalise
from routers.learned.history import (
    HISTORY_BUDGET_TOKENS,
    context_window,
    count_word_pieces,
    history_text,
    task_header,
    turn_label,
)

EncoderMode = Literal["full", "incremental"]
History = tuple[str, list[Message]]


def task_segment(task_description: str) -> str:
    return f"[Task]\n{task_description}"


def message_segment(number: int, message: Message) -> str:
    """The whole message, never the clipped copy, so its text (and cache key) is stable across turns."""
    return f"{turn_label(number, message)}\n{message.content}"


class HistoryEncoder:
    def __init__(
        self,
        embedder: CachedEmbedder,
        mode: EncoderMode = "incremental",
        budget_tokens: int = HISTORY_BUDGET_TOKENS,
        task_weight: float = 1.5,
    ) -> None:
        if mode not in ("full", "incremental"):
            raise ConfigError(f"history encoder mode {mode!r} is not 'full' or 'incremental'")
        if task_weight < 0:
            raise ConfigError(f"history encoder task_weight {task_weight} is negative")
        self.embedder = embedder
        self.mode = mode
        self.budget_tokens = budget_tokens
        self.task_weight = task_weight

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def encode(self, task_description: str, messages: list[Message]) -> np.ndarray:
        return self.encode_batch([(task_description, messages)])[0]

    def encode_batch(self, histories: list[History]) -> np.ndarray:
        """``(len(histories), dim)`` unit vectors; all new texts go to the embedder in one call."""
        if not histories:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.mode == "full":
            return self.embedder.embed(
                [history_text(task, messages, self.budget_tokens) for task, messages in histories]
            )
        return self._pooled(histories)

    def _pooled(self, histories: list[History]) -> np.ndarray:
        texts: list[str] = []
        weights: list[np.ndarray] = []
        for task, messages in histories:
            window = context_window(task, messages, self.budget_tokens)
            texts.append(task_segment(task))
            texts.extend(message_segment(turn.number, turn.message) for turn in window)
            task_pieces = self.task_weight * count_word_pieces(task_header(task))
            weights.append(np.array([task_pieces, *(turn.word_pieces for turn in window)], dtype=np.float32))
        vectors = self.embedder.embed(texts)
        pooled = np.empty((len(histories), vectors.shape[1]), dtype=np.float32)
        start = 0
        for row, segment_weights in enumerate(weights):
            pooled[row] = segment_weights @ vectors[start : start + len(segment_weights)]
            start += len(segment_weights)
        return l2_normalise(pooled)
