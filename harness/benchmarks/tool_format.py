"""The reply format of tool benchmarks: the model acts through tool calls, results come back as tool messages.

A reply may hold several calls; each is checked on its own (known tool, JSON
object arguments, required parameters), so one malformed call gets its own
error message back, tied to its call id, while the others still run. One tool
is the answer: calling it ends the episode. A reply with no call at all is a
format error too, answered in a user message.
"""

from __future__ import annotations

import json

import numpy as np

from harness.benchmarks.base import AgentFormat, FormatError
from harness.types import Action, Completion, Message, ToolCall, ToolSpec


class ToolCallFormat(AgentFormat):
    def __init__(
        self,
        system_prompt: str,
        tools: tuple[ToolSpec, ...],
        answer_tool: str,
        max_actions_per_turn: int = 4,
        user_template: str = "{task}",
    ):
        if answer_tool not in {tool.name for tool in tools}:
            raise ValueError(f"answer tool {answer_tool!r} is not among the tools")
        self.system_prompt = system_prompt
        self.tools = tools
        self.answer_tool = answer_tool
        self.max_actions_per_turn = max_actions_per_turn
        self.user_template = user_template
        self._by_name = {tool.name: tool for tool in tools}

    def initial_messages(self, task_description: str, observation: str) -> list[Message]:
        user = self.user_template.format(task=task_description, observation=observation)
        return [Message("system", self.system_prompt), Message("user", user)]

    def parse(self, completion: Completion) -> list[Action | FormatError]:
        if not completion.tool_calls:
            names = ", ".join(self._by_name)
            return [
                FormatError(
                    f"Your reply called no tool. Call one of: {names}; to finish, call {self.answer_tool}."
                )
            ]
        return [self._action(call) for call in completion.tool_calls]

    def _action(self, call: ToolCall) -> Action | FormatError:
        tool = self._by_name.get(call.name)
        if tool is None:
            return FormatError(
                f"error: there is no tool {call.name!r} (tools: {', '.join(self._by_name)})", call.id
            )
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            return FormatError(f"error: the arguments of {call.name} are not valid JSON ({exc.msg})", call.id)
        if not isinstance(arguments, dict):
            return FormatError(f"error: the arguments of {call.name} must be a JSON object", call.id)
        missing = [p for p in tool.parameters.get("required", []) if p not in arguments]
        if missing:
            return FormatError(f"error: {call.name} needs the argument {missing[0]!r}", call.id)
        return Action(
            tool=call.name, arguments=arguments, call_id=call.id, submit=call.name == self.answer_tool
        )

    def reply_schema(self, env: object) -> dict:
        """One call as ``{"name": ..., "arguments": {...}}``, the arguments held to that tool's parameters
        (read back by a text tool-call path, :mod:`harness.backends.text_tools`)."""
        return {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
                    "required": ["name", "arguments"],
                }
                for tool in self.tools
            ]
        }

    def observation_message(self, observation: str, score: float, call_id: str | None) -> Message:
        if call_id is None:
            return Message("user", observation)
        return Message("tool", observation, tool_call_id=call_id)

    def render(self, action: Action, thought: str) -> tuple[str, tuple[ToolCall, ...]]:
        call = ToolCall("call_0", action.tool or "", json.dumps(action.arguments, sort_keys=True))
        return thought, (call,)

    def malformed(self, rng: np.random.Generator) -> tuple[str, tuple[ToolCall, ...]]:
        """A call whose arguments are cut off mid-JSON, the commonest malformed call."""
        name = list(self._by_name)[int(rng.integers(len(self._by_name)))]
        return "Let me call the tool.", (ToolCall("call_0", name, '{"'),)
