"""The reference's text view of an episode for the history encoder.

The router must judge the *current* situation, and the encoder reads only
256 word pieces, so the newest turns go first and older ones fall off the
end: ``[Task]`` block, ``[Context]`` marker, then ``[Turn N - role]`` blocks
newest-first until the token budget is spent. N counts agent turns: an
assistant message and the observation answering it share N, and the opening
observation is turn 0. A message keeps its number as the episode grows.

Budgets are counted exactly in all-MiniLM-L6-v2 word pieces (its own
tokenizer, without [CLS]/[SEP]); for other embedders that count is an
approximation of their tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from harness.types import Message
from routers.learned.embedding import bundled_minilm_path

HISTORY_BUDGET_TOKENS = 256


@lru_cache(maxsize=1)
def _word_piece_tokenizer() -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundled_minilm_path() / "tokenizer.json"))
    # The shipped tokenizer.json truncates at 128, which would make every count lie.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@lru_cache(maxsize=65_536)
def count_word_pieces(text: str) -> int:
    """Memoised: at every turn the same messages are counted again."""
    return len(_word_piece_tokenizer().encode(text, add_special_tokens=False).ids)


def task_header(task_description: str) -> str:
    return f"[Task]\n{task_description}\n[Context]\n"


def turn_label(number: int, message: Message) -> str:
    return f"[Turn {number} - {message.role}]"


def numbered_turns(messages: list[Message]) -> list[tuple[int, Message]]:
    """Non-system messages, oldest first, each with its agent-turn number.

    The system prompt is the same for every episode, so it carries no signal.
    """
    numbered = []
    turn = 0
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "assistant":
            turn += 1
        numbered.append((turn, message))
    return numbered


def clip_to_word_pieces(text: str, budget: int) -> str:
    """The longest prefix of whole words within ``budget`` word pieces.

    Cutting at a word start (never inside a word) keeps the prefix's count exact.
    """
    encoding = _word_piece_tokenizer().encode(text, add_special_tokens=False)
    if len(encoding.ids) <= budget:
        return text
    if budget <= 0:
        return ""
    first_dropped_word = encoding.word_ids[budget]
    first_piece = encoding.word_ids.index(first_dropped_word)
    return text[: encoding.offsets[first_piece][0]].rstrip()


@dataclass(frozen=True)
class WindowTurn:
    """One turn as it appears in the history text; ``content`` is clipped if the budget ran out in it."""

    number: int
    message: Message
    content: str
    word_pieces: int  # label plus content, as counted against the budget


def context_window(
    task_description: str, messages: list[Message], budget_tokens: int = HISTORY_BUDGET_TOKENS
) -> list[WindowTurn]:
    """The turns that fit in the budget after the task header, newest first.

    The turn that overflows the budget is cut at a word boundary; older turns
    are dropped. A task description longer than the budget is kept whole (the
    embedder truncates it) and leaves no room for turns.
    """
    remaining = budget_tokens - count_word_pieces(task_header(task_description))
    window: list[WindowTurn] = []
    for number, message in reversed(numbered_turns(messages)):
        label_pieces = count_word_pieces(turn_label(number, message))
        room = remaining - label_pieces
        content_pieces = count_word_pieces(message.content)
        if content_pieces <= room:
            window.append(WindowTurn(number, message, message.content, label_pieces + content_pieces))
            remaining = room - content_pieces
            continue
        clipped = clip_to_word_pieces(message.content, room)
        if clipped:
            window.append(WindowTurn(number, message, clipped, label_pieces + count_word_pieces(clipped)))
        break
    return window


def history_text(
    task_description: str, messages: list[Message], budget_tokens: int = HISTORY_BUDGET_TOKENS
) -> str:
    """The segmented history: task, then turns newest-first until ``budget_tokens`` word pieces."""
    window = context_window(task_description, messages, budget_tokens)
    turns = "\n".join(f"{turn_label(turn.number, turn.message)}\n{turn.content}" for turn in window)
    return task_header(task_description) + turns
