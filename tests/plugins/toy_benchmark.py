"""A benchmark in one small file, with no engine: count up to a target, then stop (a plug-in example)."""

from __future__ import annotations

import re
from pathlib import Path

from harness.benchmarks.base import AgentFormat, Benchmark, FormatError
from harness.config import Limits
from harness.types import Action, Message, StepResult
from routers.learned.classic import RidgeModel, RidgeRouter


class CounterFormat(AgentFormat):
    def initial_messages(self, task_description, observation):
        return [Message("system", "End with: Action: inc|wait|done"), Message("user", task_description)]

    def parse(self, completion):
        found = re.findall(r"Action: (\w+)", completion.text)
        return [Action(found[-1], submit=found[-1] == "done")] if found else [FormatError("say 'Action: X'")]

    def observation_message(self, observation, score, call_id):
        return Message("user", f"{observation} (score {score:g})")

    def render(self, action, thought):
        return f"{thought}\nAction: {action.text}", ()


class CounterEnv:
    """The state is a count; reaching the target (2 + variation % 3) scores 100 and ends the episode."""

    def reset(self, task):
        self.target, self.count, self.oracle = 2 + task.variation % 3, 0, self
        return f"Count to {self.target}.", "The count is 0."

    def step(self, action):
        self.count += action.text == "inc"
        score = 100.0 if self.count == self.target else 0.0
        return StepResult(
            f"The count is {self.count}.", score, self.count >= self.target, action.text != "inx"
        )

    # The oracle, for simulated models.
    def topic(self):
        return "default"

    def next_action(self):
        return Action("inc") if self.count < self.target else None

    def skill_multiplier(self):
        return 1.0

    def submit_action(self, answers_correctly):
        return Action("done", submit=True)

    def is_critical(self):
        return False

    def wrong_critical_actions(self, k):
        return []

    def wasted_actions(self):
        return [Action("wait")]

    def invalid_action(self, gold, rng):
        return Action("inx")

    def close(self):
        pass


class CounterBenchmark(Benchmark):
    name = "counter"
    score_range = (0.0, 100.0)
    limits = Limits(max_turns=8, budget_dollars=1.0)
    split_file = Path(__file__).with_name("counter_split.json")
    agent_format = CounterFormat()

    def make_environment(self):
        return CounterEnv()


class ToyRidgeRouter(RidgeRouter):
    """A third-party learned family: trains, tunes and evaluates through the registry like a built-in."""

    name = "toy-ridge"
    model_class = type("ToyRidgeModel", (RidgeModel,), {"kind": "toy-ridge"})
