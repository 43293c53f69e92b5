"""Tool calls written in the prompt and read back from the reply text, for servers whose tool-call API fails.

llama-cpp-python's server (0.3.36) breaks tool calls after the first one: with the
GGUF's own template the tools reach the prompt but calls come back as text; its
``chatml-function-calling`` handler drops ``role: tool`` messages, HTML-escapes the
history and then only lets the model name a function; an assistant message with
``content: null`` is an HTTP 500. So for such a model (``tool_calls: text`` in the pool
file) the harness does the tool-call protocol itself, in the convention of Qwen2.5's
and Hermes' templates, which small instruct models have seen in training:

- the tools are described in the system message, with how to call them:
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``;
- an earlier assistant call is written back in that form, and a tool result goes
  in a user message inside ``<tool_response>`` tags;
- a reply's calls are read from ``<tool_call>`` blocks, else from fenced code
  blocks, else from bare JSON objects, tolerating doubled braces (``{{...}}``,
  a template-escaping habit) and ``parameters`` for ``arguments``.

Only plain system/user/assistant text reaches the server, so its chat template is
the model's own and nothing is escaped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from harness.types import Message, ToolCall, ToolSpec

INSTRUCTIONS = """# Tools

You may call one or more of these tools. Their signatures, as JSON schema:
<tools>
{tools}
</tools>

To call a tool, write a JSON object with the tool's name and arguments inside <tool_call></tool_call> tags:
<tool_call>
{{"name": "<tool name>", "arguments": {{"<argument>": "<value>"}}}}
</tool_call>"""

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"```[a-zA-Z0-9_+-]*\s*\n?(.*?)```", re.DOTALL)


def tools_prompt(tools: list[ToolSpec]) -> str:
    listed = "\n".join(json.dumps(tool.openai(), sort_keys=True) for tool in tools)
    return INSTRUCTIONS.format(tools=listed)


def text_messages(messages: list[Message], tools: list[ToolSpec] | None) -> list[dict[str, Any]]:
    """The conversation as plain text messages: calls written as tags, results as user messages."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            block = f"<tool_response>\n{message.content}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1]["content"] += "\n" + block  # several results of one reply: one user turn
            else:
                out.append({"role": "user", "content": block})
            continue
        content = message.content
        if message.tool_calls:
            calls = "\n".join(
                f"<tool_call>\n{json.dumps({'name': call.name, 'arguments': _arguments_value(call.arguments)})}\n"
                "</tool_call>"
                for call in message.tool_calls
            )
            content = f"{content}\n{calls}" if content else calls
        out.append({"role": message.role, "content": content})
    if tools:
        instructions = tools_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instructions}"}
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def _arguments_value(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def parse_calls(text: str) -> tuple[ToolCall, ...]:
    """The tool calls a reply writes: tagged blocks first, else fenced blocks, else bare JSON objects."""
    for pattern in (_TAGGED, _FENCED):
        blocks = [m.group(1) for m in pattern.finditer(text)]
        calls = [call for block in blocks for call in _calls_in(block)]
        if calls:
            return _numbered(calls)
    return _numbered(_calls_in(text))


def _numbered(calls: list[tuple[str, str]]) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(f"call_{i}", name, arguments) for i, (name, arguments) in enumerate(calls))


def _calls_in(text: str) -> list[tuple[str, str]]:
    """Every ``{"name": ..., "arguments": ...}`` object in ``text``, as (name, arguments JSON)."""
    calls = _scan(text, broken=False)
    if not calls and "{{" in text:
        calls = _scan(_undouble_braces(text), broken=False)
    return calls or _scan(text, broken=True)


def _scan(text: str, broken: bool) -> list[tuple[str, str]]:
    """The calls in ``text``; ``broken``: also one whose JSON does not parse (its raw arguments kept)."""
    calls = []
    decoder = json.JSONDecoder()
    index = 0
    while (start := text.find("{", index)) != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value, end = _broken_call(text, start) if broken else (None, start + 1)
        index = end if end > start else start + 1
        for item in value if isinstance(value, list) else [value]:
            call = _as_call(item)
            if call is not None:
                calls.append(call)
    return calls


def _as_call(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    if "function" in value and isinstance(value["function"], dict):  # {"type": "function", "function": {...}}
        return _as_call(value["function"])
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        return value["name"], arguments
    return value["name"], json.dumps(arguments)


def _broken_call(text: str, start: int) -> tuple[Any, int]:
    """A call whose JSON does not parse: its name and its raw arguments text, so the format can say why."""
    match = re.match(
        r'\{\s*"name"\s*:\s*"([^"]+)"\s*,\s*"(?:arguments|parameters)"\s*:\s*(.*)', text[start:], re.DOTALL
    )
    if match is None:
        return None, start + 1
    raw = match.group(2).strip()
    raw = raw[:-1].rstrip() if raw.endswith("}") and raw.count("}") > raw.count("{") else raw
    return {"name": match.group(1), "arguments": raw}, len(text)


def _undouble_braces(text: str) -> str:
    """``{{"name": ...}}`` (a template's escaped braces copied by the model) read as ``{"name": ...}``."""
    return text.replace("{{", "{").replace("}}", "}")
