"""Tool-call turns through the agent loop: several calls per turn, a malformed call, a forced final
answer at the step limit, and a judge scorer whose call is billed apart from the episode's cost."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "plugins"))

from tool_benchmark import LookupBenchmark  # noqa: E402

from harness.agent import run_episode  # noqa: E402
from harness.backends.simulated import SimulatedBackend  # noqa: E402
from harness.pool import SimulatedProfile  # noqa: E402
from harness.trajectory import RunStore  # noqa: E402
from harness.types import Action, CallContext, Completion, ModelCard, PriceCard, TaskInstance, ToolCall  # noqa: E402
from routers import make_router  # noqa: E402

TASK = TaskInstance("lookup", "count", 0, "test_id")
AGENT = ModelCard("agent", PriceCard(1.0, 2.0, "test"))
JUDGE = ModelCard("judge", PriceCard(10.0, 10.0, "test"))


class ScriptedBackend:
    """Replies from a list, billed on the card; records what it was sent."""

    def __init__(self, card: ModelCard, replies: list[Completion]):
        self.card, self.replies, self.calls = card, list(replies), []

    def complete(self, messages, ctx, tools=None):
        self.calls.append((list(messages), tools))
        reply = self.replies.pop(0)
        return Completion(reply.text, 100, 10, self.card.price.dollars(100, 10), reply.tool_calls)


def calls(*pairs: tuple[str, str]) -> Completion:
    return Completion("", 0, 0, 0.0, tuple(ToolCall(f"c{i}", n, a) for i, (n, a) in enumerate(pairs)))


def play(agent_replies, judge_reply="correct: yes", tmp_path: Path | None = None):
    benchmark = LookupBenchmark()
    agent = ScriptedBackend(AGENT, agent_replies)
    judge = ScriptedBackend(JUDGE, [Completion(judge_reply, 0, 0, 0.0)])
    store = RunStore(tmp_path / "run")
    store.open({})
    router = make_router("single", {"model": "agent"}, ["agent"])
    result = run_episode(
        benchmark,
        benchmark.make_environment(),
        {"agent": agent},
        router,
        TASK,
        0,
        benchmark.limits,
        store,
        judge,
    )
    return result, store.turns(TASK.key), agent, judge


def test_several_calls_in_one_turn_then_an_answer_judged_and_billed_apart(tmp_path):
    result, turns, agent, judge = play(
        [
            calls(("lookup", '{"key": "a"}'), ("lookup", '{"key": "b"}')),
            calls(("add", '{"x": 12, "y": 30}')),
            calls(("answer", '{"value": 42}')),
        ],
        tmp_path=tmp_path,
    )
    assert result.status == "submitted" and result.turns == 3 and result.score == 1.0
    # Each call's result goes back as a tool message answering that call.
    assert [(m.role, m.tool_call_id, m.content) for m in turns[0].messages] == [
        ("assistant", None, ""),
        ("tool", "c0", "12"),
        ("tool", "c1", "30"),
    ]
    assert turns[0].messages[0].tool_calls[1] == ToolCall("c1", "lookup", '{"key": "b"}')
    assert turns[1].observation == "42" and turns[2].action == 'answer({"value": 42})'
    # The model was offered the tools, and saw the first turn's results in the second call.
    messages, tools = agent.calls[1]
    assert [t.name for t in tools] == ["lookup", "add", "answer"]
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    # The judge's call is a judge charge, outside the routed episode cost.
    record = result.record("single:agent")
    assert record.cost == pytest.approx(3 * AGENT.price.dollars(100, 10))
    assert record.judge_cost == pytest.approx(JUDGE.price.dollars(100, 10))
    assert [c.kind for _, c in result.ledger.entries].count("judge") == 1
    assert record.score_details == {"answer": 42, "forced": False}


def test_a_malformed_call_gets_its_own_error_back_and_counts_as_a_format_error(tmp_path):
    result, turns, _, _ = play(
        [
            calls(("lookup", '{"key": "a"}'), ("lookup", '{"key": '), ("search", "{}")),
            calls(("answer", '{"value": 12}')),
        ],
        judge_reply="correct: no",
        tmp_path=tmp_path,
    )
    first = turns[0]
    assert first.error == "format" and first.valid is False
    tool_messages = [m for m in first.messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == ["c0", "c1", "c2"]
    assert tool_messages[0].content == "12"  # the good call still ran
    assert "not valid JSON" in tool_messages[1].content
    assert "no tool 'search'" in tool_messages[2].content
    assert result.score == 0.0


def test_a_reply_without_a_call_and_too_many_calls_are_format_errors(tmp_path):
    result, turns, _, _ = play(
        [
            Completion("I think it is 42.", 0, 0, 0.0),
            calls(*[("lookup", '{"key": "a"}')] * 4),
            calls(("answer", '{"value": 42}')),
        ],
        tmp_path=tmp_path,
    )
    assert turns[0].error == "format" and turns[0].messages[1].role == "user"
    assert "called no tool" in turns[0].messages[1].content
    fourth = turns[1].messages[4]
    assert fourth.tool_call_id == "c3" and "only 3 actions are run per turn" in fourth.content
    assert turns[1].observation.split("\n")[:3] == ["12", "12", "12"]
    assert result.status == "submitted"


def test_the_step_limit_forces_the_last_reply_as_the_answer(tmp_path):
    replies = [calls(("lookup", '{"key": "a"}'))] * 3 + [Completion("The sum is 42", 0, 0, 0.0)]
    result, turns, _, judge = play(replies, tmp_path=tmp_path)
    assert result.status == "max_turns" and result.turns == 4
    assert result.score_details == {"answer": "The sum is 42", "forced": True}
    [(prompt, _)] = judge.calls
    assert "Answer given: The sum is 42" in prompt[0].content
    assert result.ledger.judge_total == pytest.approx(JUDGE.price.dollars(100, 10))


class LookupOracle:
    """Knows the next useful call; enough for a simulated model to play the lookup benchmark."""

    def topic(self):
        return "default"

    def next_action(self):
        return Action(tool="lookup", arguments={"key": "a"})

    def skill_multiplier(self):
        return 1.0

    def submit_action(self, answers_correctly):
        return Action(tool="answer", arguments={"value": 42}, submit=True)

    def is_critical(self):
        return False

    def wrong_critical_actions(self, k):
        return []

    def wasted_actions(self):
        return [Action(tool="lookup", arguments={"key": "zzz"})]

    def invalid_action(self, gold, rng):
        return Action(tool="add", arguments={"x": 1})


@pytest.mark.parametrize("skill, kind", [(1.0, "gold"), (0.0, "malformed")])
def test_simulated_models_reply_with_tool_calls_in_the_benchmark_format(skill, kind):
    benchmark = LookupBenchmark()
    profile = SimulatedProfile(skill={"default": skill}, error_mix={"malformed": 1.0})
    ctx = CallContext(seed=1, turn=0, task=TASK, oracle=LookupOracle(), agent_format=benchmark.agent_format)
    completion = SimulatedBackend(AGENT, profile).complete([], ctx, tools=list(benchmark.agent_format.tools))
    [part] = benchmark.agent_format.parse(completion)
    if kind == "gold":
        assert part == Action(tool="lookup", arguments={"key": "a"}, call_id="call_0")
    else:
        assert completion.tool_calls and "not valid JSON" in str(part)
