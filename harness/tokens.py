"""Token counting on rendered chat messages, offline.

tiktoken normally downloads its BPE files on first use; LiteLLM ships a copy of
``cl100k_base`` in its wheel, so we point tiktoken's cache there and never touch
the network. Counts are cached per message text because histories grow by one
message a turn and the rest would be re-tokenised every call.
"""

from __future__ import annotations

import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

from harness.types import Message, ToolCall, ToolSpec

# OpenAI's chat format adds a few tokens of framing per message and per reply.
PER_MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3


@lru_cache(maxsize=1)
def _encoding():
    spec = importlib.util.find_spec("litellm")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
        if bundled.is_dir():
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


@lru_cache(maxsize=200_000)
def count_text(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def count_reply(text: str, tool_calls: tuple[ToolCall, ...] = ()) -> int:
    return count_text(text) + sum(count_text(call.name) + count_text(call.arguments) for call in tool_calls)


def count_message(message: Message) -> int:
    return count_reply(message.content, message.tool_calls) + PER_MESSAGE_OVERHEAD


def count_tools(tools: list[ToolSpec] | None) -> int:
    """The offered tools' schemas, counted as the JSON the provider receives (an approximation of its framing)."""
    return sum(count_text(json.dumps(tool.openai(), sort_keys=True)) for tool in tools or ())


def count_messages(messages: list[Message], tools: list[ToolSpec] | None = None) -> int:
    return sum(count_message(m) for m in messages) + count_tools(tools) + REPLY_PRIMING
