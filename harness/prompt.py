"""The agent's prompt and the parsing of its replies.

Every model of the pool sees the same messages; only the router's choice differs.
A reply must end with one ``Action: <command>`` line; anything else is a format
error that costs a turn, as in the reference.
"""

from __future__ import annotations

import re

from harness.types import Message

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

_ACTION_LINE = re.compile(r"^\s*action\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


class FormatError(ValueError):
    """The model's reply has no parseable action line."""


def initial_messages(task_description: str, observation: str) -> list[Message]:
    return [
        Message("system", SYSTEM_PROMPT),
        Message("user", f"Task: {task_description}\n\nObservation: {observation}"),
    ]


def observation_message(observation: str, score: float) -> Message:
    return Message("user", f"Observation: {observation}\nScore: {score:g}")


def parse_action(reply: str) -> str:
    """The last ``Action:`` line of a reply, lower-cased and stripped."""
    matches = _ACTION_LINE.findall(reply)
    if not matches:
        raise FormatError("no 'Action:' line")
    action = matches[-1].strip().strip("`'\"").strip().lower()
    if not action:
        raise FormatError("empty action")
    return action
