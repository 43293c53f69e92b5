"""ScienceWorld's prompt and the parsing of its replies.

Every model of the pool sees the same messages; only the router's choice differs.
A reply must end with one ``Action: <command>`` line; anything else is a format
error that costs a turn, as in the reference. The engine's parser is
case-insensitive, so commands are lower-cased here (and only here: a tool
benchmark's arguments are passed on as written).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from harness.benchmarks.base import AgentFormat, FormatError
from harness.types import Action, Completion, Message, ToolCall

FINISH = "task completed"

SYSTEM_PROMPT = """You are an agent solving a science experiment in ScienceWorld, a text-based simulated world.
At each turn, think briefly, then give exactly one command on a final line of the form
Action: <command>
Useful commands: look around, look at OBJ, inventory, go to LOCATION, open OBJ, close OBJ, pick up OBJ,
put OBJ in OBJ, move OBJ to OBJ, pour OBJ in OBJ, mix OBJ, activate OBJ, deactivate OBJ, use OBJ on OBJ,
connect OBJ to OBJ, read OBJ, wait, wait1, focus on OBJ, eat OBJ, flush OBJ.
'focus on OBJ' declares the object the task is about: focusing on a wrong object fails the task.
When you believe the task is complete, reply with: Action: task completed"""

FORMAT_ERROR = "Your reply could not be parsed. End your reply with exactly one line: Action: <command>"

TASK_PREFIX, OBSERVATION_SEPARATOR = "Task: ", "\n\nObservation: "  # the first user message's layout

_ACTION_LINE = re.compile(r"^\s*action\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def parse_action(reply: str) -> str:
    """The last ``Action:`` line of a reply (or a constrained reply's ``{"action": ...}``), lower-cased."""
    constrained = _json_action(reply)
    if constrained is not None:
        return constrained
    matches = _ACTION_LINE.findall(reply)
    if not matches:
        raise FormatError(FORMAT_ERROR)
    action = matches[-1].strip().strip("`'\"").strip().lower()
    if not action:
        raise FormatError(FORMAT_ERROR)
    return action


def _json_action(reply: str) -> str | None:
    text = reply.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    action = value.get("action") if isinstance(value, dict) else None
    return action.strip().lower() or None if isinstance(action, str) else None


ENUM_LIMIT = (
    400  # more valid actions than this: the two-object ones go into a pattern (a grammar stays small)
)
_ONE_OBJECT = re.compile(
    r"^(?:focus on|look at|look in|pick up|put down|disconnect|mix|eat|open|close|activate|deactivate|read|flush) (.+)$"
)


def action_schema(valid_actions: list[str]) -> dict[str, Any]:
    """A JSON schema of ``{"action": <command>}`` that a valid command (or finishing) satisfies.

    ScienceWorld lists thousands of valid commands in a room, almost all of them pairs of
    objects (``connect A to B``); as one enum that is a grammar too large to sample with.
    So when there are many, commands naming at most one object stay an enum, and the
    two-object ones become a pattern: their templates (``move O to O``) over the objects
    that the one-object commands name, which admits some combinations the engine will
    reject as invalid (counted as invalid actions, as any other).
    """
    commands = sorted({*valid_actions, FINISH})
    if len(commands) <= ENUM_LIMIT:
        action: dict[str, Any] = {"type": "string", "enum": commands}
    else:
        names = sorted({m.group(1) for c in commands if (m := _ONE_OBJECT.match(c))}, key=len, reverse=True)
        names = [n for n in names if re.fullmatch(r"[a-z0-9 '-]+", n)]
        slot = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b")
        singles, templates = [], set()
        for command in commands:
            template = slot.sub("\0", command)
            if template.count("\0") >= 2:
                templates.add(template)
            else:
                singles.append(command)
        objects = "(" + "|".join(names) + ")"
        pattern = "|".join(t.replace("\0", objects) for t in sorted(templates))
        action = {
            "anyOf": [{"type": "string", "enum": singles}, {"type": "string", "pattern": f"^({pattern})$"}]
        }
    return {"type": "object", "properties": {"action": action}, "required": ["action"]}


def observation_message(observation: str, score: float) -> Message:
    return Message("user", f"Observation: {observation}\nScore: {score:g}")


class ScienceWorldFormat(AgentFormat):
    """One text command per reply; the score so far is shown after every observation."""

    submit_observation = "You declared the task completed."
    malformed_replies = (
        "I need to think about what the task requires before acting further.",
        "Let me reconsider the situation. The next step should move us toward the goal.",
        "Thought: the previous observation suggests I should proceed carefully.",
    )

    def initial_messages(self, task_description: str, observation: str) -> list[Message]:
        return [
            Message("system", SYSTEM_PROMPT),
            Message("user", f"{TASK_PREFIX}{task_description}{OBSERVATION_SEPARATOR}{observation}"),
        ]

    def task_description(self, initial: Sequence[Message]) -> str:
        """The task text between the prefix and the observation :meth:`initial_messages` put around it;
        a first user message written otherwise is taken whole."""
        first_user = super().task_description(initial)
        if first_user.startswith(TASK_PREFIX) and OBSERVATION_SEPARATOR in first_user:
            return first_user[len(TASK_PREFIX) :].split(OBSERVATION_SEPARATOR, 1)[0]
        return first_user

    def parse(self, completion: Completion) -> list[Action | FormatError]:
        try:
            command = parse_action(completion.text)
        except FormatError as error:
            return [error]
        return [Action(text=command, submit=command == FINISH)]

    def observation_message(self, observation: str, score: float, call_id: str | None) -> Message:
        return observation_message(observation, score)

    def reply_schema(self, env: Any) -> dict[str, Any] | None:
        """The valid commands of the current state as a JSON schema (see :func:`action_schema`)."""
        return action_schema(env.valid_actions())

    def render(self, action: Action, thought: str) -> tuple[str, tuple[ToolCall, ...]]:
        return f"Thought: {thought}\nAction: {action.text}", ()
