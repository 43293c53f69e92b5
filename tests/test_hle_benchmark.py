"""HLE as a benchmark plug-in: its split, episodes on the simulated pool with real tools and the rule judge,
the forced answer at the step limit, the LLM judge billed as ``judge`` through the real local server, and
the real-dataset path (``hle-real``) played through LiteLLM with real tool calls against that server."""

from __future__ import annotations

import json

import pytest
from openai_server import OpenAIChatServer

from harness.agent import run_episode
from harness.backends import build_backends
from harness.backends.litellm_backend import LiteLLMBackend
from harness.batch import execute
from harness.benchmarks import get_benchmark
from harness.benchmarks.hle import STAND_IN_SPLIT, split_content
from harness.benchmarks.hle.bank import load_bank
from harness.config import Limits, RouterSpec, RunConfig
from harness.errors import ConfigError
from harness.pool import load_pool
from harness.trajectory import RunStore
from harness.types import ModelCard, PriceCard
from routers import make_router

JUDGE_REPLY = (
    "extracted_final_answer: 42\nreasoning: The response's answer equals the correct answer.\n"
    "correct: yes\nconfidence: 90"
)


@pytest.fixture(scope="module")
def hle():
    return get_benchmark("hle")


@pytest.fixture(scope="module")
def env(hle):
    environment = hle.make_environment()
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def pool():
    return load_pool("paper6-hle")


def test_split_holds_out_two_categories_and_regenerates(hle):
    split = hle.load_split()
    sizes = {name: len(split.tasks(name)) for name in ("train", "val", "test_id", "test_ood")}
    assert sizes == {"train": 1073, "val": 358, "test_id": 358, "test_ood": 369}
    assert {t.task for t in split.tasks("test_ood")} == {"humanities", "other"}
    assert {t.task for t in split.tasks("train")}.isdisjoint({"humanities", "other"})
    assert all(len(split.tasks(name, quick=True)) >= 100 for name in ("test_id", "test_ood"))
    committed = json.loads(STAND_IN_SPLIT.read_text())
    bank = load_bank()
    again = split_content(bank.questions, committed["version"], committed["procedure"], benchmark="hle",
                          label=bank.manifest["label"])  # fmt: skip
    assert again["splits"] == committed["splits"] and again["quick"] == committed["quick"]


def play(hle, env, pool, model, task, tmp_path, limits=None, judge=None):
    store = RunStore(tmp_path / model)
    store.open({})
    router = make_router("single", {"model": model}, pool.names)
    backends = build_backends(pool, "simulated")
    result = run_episode(hle, env, backends, router, task, 0, limits or hle.limits, store, judge)
    return result, store.turns(task.key)


def test_an_episode_uses_real_tools_and_the_rule_judge(hle, env, pool, tmp_path):
    bank = load_bank()
    split = hle.load_split()
    # A question where both a search and a computation help: the strong model does both, then answers.
    task = next(
        t for t in split.tasks("test_id")
        if hle.questions.get(t).search_helps and hle.questions.get(t).python_helps
    )  # fmt: skip
    question = hle.questions.get(task)
    result, turns = play(hle, env, pool, "gpt-5", task, tmp_path)
    calls = [(t, json.loads(m.tool_calls[0].arguments), m.tool_calls[0].name)
             for t in turns for m in t.messages if m.tool_calls]  # fmt: skip
    assert calls[-1][2] == "answer"
    # The search the oracle would make (a model may waste turns on other searches first) finds the document.
    gold = [t for t, args, name in calls if name == "search" and args["query"] == question.search_query]
    assert gold and gold[0].messages[1].role == "tool"
    assert question.supporting_doc_ids[0] in gold[0].messages[1].content
    solved = [t for t, args, name in calls if name == "python" and args["code"] == question.solution_code]
    for turn in solved:
        assert question.answer in turn.messages[1].content  # the bank's solution, run in the real sandbox
    assert result.status == "submitted" and result.score in (0.0, 1.0)
    assert result.score_details["judge"] == "rule" and result.ledger.judge_total == 0.0
    assert bank.question(question.id).synthetic


def test_the_step_limit_forces_the_last_reply_as_the_answer(hle, env, pool, tmp_path):
    split = hle.load_split()
    task = next(t for t in split.tasks("test_id") if hle.questions.get(t).search_helps)
    result, turns = play(
        hle, env, pool, "gpt-5", task, tmp_path, limits=Limits(max_turns=1, budget_dollars=5.0)
    )
    assert result.status == "max_turns" and len(turns) == 1
    # The only reply was a search call with a short thought: taken as the (wrong) forced answer.
    assert result.score_details["forced"] is True and result.score == 0.0


def test_llm_judge_is_billed_as_judge_through_the_local_server(hle, env, pool, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-judge-test")
    card = ModelCard("judge-model", PriceCard(0.28, 0.42, "test"), provider_model="openai/judge")
    with OpenAIChatServer(reply=JUDGE_REPLY) as server:
        judge = LiteLLMBackend(card, api_base=server.base_url, api_key_env="JUDGE_KEY", backoff_s=0.001)
        task = hle.load_split().tasks("test_id")[0]
        result, _ = play(hle, env, pool, "gpt-5", task, tmp_path, judge=judge)
        [request] = server.requests
        prompt = request.body["messages"][0]["content"]
        assert hle.questions.get(task).answer in prompt and hle.questions.get(task).question in prompt
        server.reply = "I cannot tell."
        unparsed, _ = play(hle, env, pool, "deepseek-v3.2", task, tmp_path, judge=judge)
    assert result.score == 1.0 and result.score_details["judge"] == "judge-model"
    record = result.record("single:gpt-5")
    assert record.judge_cost > 0 and record.cost == pytest.approx(result.ledger.model_total)
    assert unparsed.score == 0.0 and unparsed.score_details["judge_parsed"] is False


class ScriptedChatServer(OpenAIChatServer):
    """Answers each request with the next scripted (text, tool calls) pair."""

    def __init__(self, script: list[tuple[str, list[tuple[str, str]]]]):
        super().__init__()
        self.script = list(script)

    def _completion_body(self, request_body):
        self.reply, self.tool_calls = self.script.pop(0) if self.script else ("", [])
        return super()._completion_body(request_body)


def test_real_dataset_episode_through_litellm_with_real_tool_calls(tmp_path, monkeypatch):
    rows = [
        {"id": f"q{i}", "question": f"What is {i} * 6?", "image": "", "answer": str(6 * i),
         "answer_type": "exactMatch", "rationale": "", "raw_subject": "Arithmetic", "category": category}
        for i, category in enumerate(["Math"] * 8 + ["Physics"] * 4 + ["Other"] * 3)
    ] + [{"id": "img", "question": "What is shown?", "image": "data:image/png;base64,AAAA", "answer": "a cat",
          "answer_type": "exactMatch", "rationale": "", "raw_subject": "Vision", "category": "Other"}]  # fmt: skip
    dataset = tmp_path / "hle.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setenv("HARNESS_HLE_DATASET", str(dataset))
    monkeypatch.setenv("LOCAL_KEY", "sk-local-test")
    real = get_benchmark("hle-real")
    split = real.load_split()
    assert len(split.tasks("test_ood")) == 3  # the image row is dropped
    task = split.tasks("test_ood")[0]
    question = real.questions.get(task)
    script = [
        ("", [("python", json.dumps({"code": f"print({question.question.split()[2]} * 6)"}))]),
        (
            "",
            [
                (
                    "answer",
                    json.dumps({"answer": question.answer, "confidence": 95, "explanation": "computed"}),
                )
            ],
        ),
    ]
    with ScriptedChatServer(script) as server:
        pool_file = tmp_path / "local.yaml"
        pool_file.write_text(json.dumps({"name": "local", "models": [{
            "name": "local-model", "provider_model": "openai/local", "api_base": server.base_url,
            "api_key_env": "LOCAL_KEY", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "version": "test"}}]}))  # fmt: skip
        config = RunConfig(
            router=RouterSpec("single", {"model": "local-model"}), benchmark="hle-real", pool=str(pool_file),
            split="test_ood", task_filter="^other$", backend="litellm", workers=1,
        )  # fmt: skip
        records = execute(config, tmp_path / "run")
        sent = server.requests[1].body
    first = next(r for r in records if r.episode == task.key)
    assert first.score == 1.0 and first.status == "submitted"
    assert [t["function"]["name"] for t in sent["tools"]] == ["search", "browse", "python", "answer"]
    tool_message = sent["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_0"
    assert question.answer in tool_message["content"]  # the sandboxed python ran the model's code
    assert "sk-local-test" not in (tmp_path / "run" / "config.json").read_text()


def test_hle_real_without_the_dataset_says_how_to_provide_it(monkeypatch):
    monkeypatch.delenv("HARNESS_HLE_DATASET", raising=False)
    real = type(get_benchmark("hle-real"))()
    with pytest.raises(ConfigError, match="HARNESS_HLE_DATASET"):
        real.load_split()


def test_report_section_uses_the_paper_layout_with_calibration_error_and_judge_cost():
    import pandas as pd

    from harness.benchmarks.hle.report import hle_section

    rows = []
    for point, right in (("single:gpt-5", 40), ("mtrouter@lam=0", 30)):
        for split, n in (("test_id", 100), ("test_ood", 50)):
            for i in range(n):
                correct = i < right * n // 100
                rows.append({
                    "point": point, "split": split, "status": "submitted", "score": float(correct),
                    "cost": 0.2 if point == "single:gpt-5" else 0.05, "judge_cost": 0.001,
                    "score_details": {"confidence": 0.9, "correct": correct},
                })  # fmt: skip
    lines = hle_section(pd.DataFrame(rows), ["single:gpt-5", "mtrouter@lam=0"], "single:gpt-5")
    gpt5, mt = lines[2].split(" | "), lines[3].split(" | ")
    assert gpt5[1].startswith("40.0 [") and gpt5[2] == "20.00" and gpt5[4] == "10.00"
    assert mt[5] == "-10.0" and mt[6] == "25%"
    # 100 test questions at stated confidence 90%: one bin, |0.9 - 0.4| = 50 points
    assert gpt5[7] == "50.0" and mt[7] == "60.0"
    assert gpt5[8].startswith("0.150")
