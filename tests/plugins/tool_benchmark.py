"""A tool benchmark in one file: look two numbers up, add them, answer; a judge model scores the answer."""

from __future__ import annotations

from pathlib import Path

from harness.benchmarks.base import Benchmark, Score
from harness.benchmarks.tool_format import ToolCallFormat
from harness.config import Limits
from harness.types import Action, Charge, Message, StepResult, ToolSpec

TABLE = {"a": 12, "b": 30}
NUMBER = {"type": "number"}
TOOLS = (
    ToolSpec(
        "lookup",
        "The number stored under a key.",
        {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
    ),  # fmt: skip
    ToolSpec(
        "add", "x + y.", {"type": "object", "properties": {"x": NUMBER, "y": NUMBER}, "required": ["x", "y"]}
    ),
    ToolSpec(
        "answer",
        "Your final answer; ends the task.",
        {"type": "object", "properties": {"value": NUMBER}, "required": ["value"]},
    ),  # fmt: skip
)


class LookupEnv:
    oracle = None

    def reset(self, task):
        return "What is the sum of the numbers stored under a and b?", ""

    def step(self, action):
        if action.tool == "lookup":
            found = TABLE.get(action.arguments["key"])
            return StepResult(
                str(found) if found is not None else "no such key", 0.0, False, found is not None
            )
        return StepResult(str(action.arguments["x"] + action.arguments["y"]), 0.0, False)

    def close(self):
        pass


class JudgeScorer:
    """Asks the judge whether the answer is 42; the judge's call is billed as a ``judge`` charge."""

    def __init__(self, judge):
        self.judge = judge

    def score(self, transcript, ctx):
        answer = transcript.submitted.arguments.get("value") if transcript.submitted else None
        prompt = [
            Message("user", f"Expected 42. Answer given: {answer}. Reply 'correct: yes' or 'correct: no'.")
        ]
        reply = self.judge.complete(prompt, ctx)
        charge = Charge("judge", self.judge.card.name, reply.prompt_tokens, reply.completion_tokens, reply.dollars,
                        self.judge.card.price.version)  # fmt: skip
        return Score(
            float("correct: yes" in reply.text), [charge], {"answer": answer, "forced": transcript.forced}
        )


class LookupBenchmark(Benchmark):
    name = "lookup"
    score_range = (0.0, 1.0)
    limits = Limits(max_turns=4, budget_dollars=1.0)
    split_file = Path(__file__).with_name("lookup_split.json")
    agent_format = ToolCallFormat("Use the tools.", TOOLS, answer_tool="answer", max_actions_per_turn=3)

    def make_environment(self):
        return LookupEnv()

    def scorer(self, judge):
        return JudgeScorer(judge)

    def final_answer(self, transcript):
        """At the step limit the last reply's text is taken as the answer, as the HLE reference does."""
        last = next(m for m in reversed(transcript.messages) if m.role == "assistant")
        return Action(tool="answer", arguments={"value": last.content}, submit=True)
