"""The rule judge on hand-made cases; the LLM judge through LiteLLM against the real local OpenAI-style server."""

from __future__ import annotations

import logging

import pytest
from openai_server import OpenAIChatServer, count_words

from harness.backends.litellm_backend import LiteLLMBackend
from harness.benchmarks.hle.judge import (
    JUDGE_PROMPT,
    LLMJudge,
    RuleJudge,
    RuleJudgeConfig,
    Verdict,
    choice_letter,
    extract_answer,
    extract_confidence,
    normalise,
    parse_judge_reply,
    parse_number,
)
from harness.types import CallContext, ModelCard, PriceCard, TaskInstance

KEY_ENV = "ROUTING_HARNESS_TEST_KEY"
JUDGE_CARD = ModelCard(
    name="judge-test",
    price=PriceCard(input_per_mtok=0.28, output_per_mtok=0.42, version="2026-02"),
    provider_model="openai/judge-model",
)
CTX = CallContext(seed=1, turn=0, task=TaskInstance("hle", "q-17", 0, "test_id"))
QUESTION = "How many prime numbers are smaller than 30?"
RESPONSE = "Explanation: I listed them: 2, 3, 5, 7, 11, 13, 17, 19, 23, 29.\nAnswer: 10\nConfidence: 85%"


def rule(response: str, answer: str, answer_type: str = "exactMatch") -> Verdict:
    return RuleJudge().judge(response, answer, answer_type)  # type: ignore[arg-type]


def test_answer_and_confidence_come_from_the_official_format() -> None:
    assert extract_answer(RESPONSE) == "10"
    assert extract_confidence(RESPONSE) == pytest.approx(0.85)
    assert extract_answer("Answer: 3\nthen I changed my mind.\n**Final Answer:** 4") == "4"
    assert extract_answer("no answer line here") is None
    assert extract_confidence("Answer: 4") == 1.0  # none stated counts as 100%
    assert extract_confidence("Confidence: 0.3") == pytest.approx(0.3)
    assert extract_confidence("Confidence: 250%") == 1.0


def test_normalised_exact_match() -> None:
    assert normalise("  The $\\text{Qelvar}$ River. ") == "the qelvar river"
    assert rule("Answer: qelvar  RIVER", "The Qelvar River").correct is False  # "the" is not dropped
    assert rule("Answer: the qelvar  RIVER.", "The Qelvar River").correct is True
    verdict = rule("Answer: Zorbium", "Plumbago")
    assert not verdict.correct and verdict.extracted_answer == "Zorbium" and verdict.judge == "rule"
    missing = rule("I think it is 10.", "10")
    assert not missing.correct and missing.extracted_answer is None


@pytest.mark.parametrize(
    ("answer", "letter"),
    [("B", "B"), ("(b)", "B"), ("B.", "B"), ("B. 42 apples", "B"), ("(C) the third", "C"),
     ("The answer is D", "D"), ("option e", "E"), ("\\textbf{A}", "A"), ("I think 42", None)],
)  # fmt: skip
def test_multiple_choice_letter_extraction(answer: str, letter: str | None) -> None:
    assert choice_letter(answer) == letter


def test_multiple_choice_judging_compares_letters() -> None:
    assert rule("Answer: (B) 42 apples\nConfidence: 60%", "B", "multipleChoice").correct
    wrong = rule("Answer: C", "B", "multipleChoice")
    assert not wrong.correct and wrong.reasoning == "option C vs B"
    assert not rule("Answer: forty-two", "B", "multipleChoice").correct


@pytest.mark.parametrize(
    ("text", "value"),
    [("1,234", 1234.0), ("3/4", 0.75), ("-2.5e3", -2500.0), ("12.5%", 0.125), ("6.02 \\times 10^{23}", 6.02e23),
     ("$7$", 7.0), ("seven", None), ("1/0", None)],
)  # fmt: skip
def test_numbers_parse(text: str, value: float | None) -> None:
    assert parse_number(text) == (pytest.approx(value) if value is not None else None)


def test_numeric_tolerance() -> None:
    assert rule("Answer: 3.14159", "3.1416").correct  # within 1e-4 relative
    assert not rule("Answer: 3.14", "3.1416").correct
    assert rule("Answer: 0.75", "3/4").correct
    assert rule("Answer: 1,000,000", "1e6").correct
    loose = RuleJudge(RuleJudgeConfig(rel_tol=0.01))
    assert loose.judge("Answer: 3.14", "3.1416", "exactMatch").correct


def test_rule_verdict_has_no_charge() -> None:
    assert rule(RESPONSE, "10").charge() is None


def test_judge_reply_parsing() -> None:
    reply = parse_judge_reply(
        "extracted_final_answer: 10\nreasoning: Both say ten.\nIt matches.\ncorrect: yes\nconfidence: 85%"
    )
    assert reply is not None and reply.correct and reply.extracted_final_answer == "10"
    assert reply.reasoning == "Both say ten.\nIt matches." and reply.confidence == pytest.approx(0.85)
    bold = parse_judge_reply("**extracted_final_answer:** 9\n**reasoning:** off by one\n**correct:** No\n")
    assert bold is not None and not bold.correct and bold.confidence == 1.0
    as_json = parse_judge_reply(
        '```json\n{"extracted_final_answer": "10", "reasoning": "same", "correct": "yes", "confidence": 70}\n```'
    )
    assert as_json is not None and as_json.correct and as_json.confidence == pytest.approx(0.7)
    assert parse_judge_reply("The answer looks right to me.") is None
    assert parse_judge_reply("correct: probably") is None


# -- the LLM judge through the real local server -------------------------------------------------


@pytest.fixture
def judge(openai_server: OpenAIChatServer, monkeypatch: pytest.MonkeyPatch) -> LLMJudge:
    monkeypatch.setenv(KEY_ENV, "sk-judge-test-0000")
    backend = LiteLLMBackend(JUDGE_CARD, api_base=openai_server.base_url, api_key_env=KEY_ENV, timeout_s=5.0)
    return LLMJudge(backend)


def expected_bill(server_reply: str) -> tuple[int, int, float]:
    prompt = JUDGE_PROMPT.format(question=QUESTION, response=RESPONSE, correct_answer="10")
    prompt_tokens, completion_tokens = count_words(prompt), count_words(server_reply)
    return prompt_tokens, completion_tokens, (prompt_tokens * 0.28 + completion_tokens * 0.42) / 1e6


def test_llm_judge_reads_a_structured_reply_and_bills_the_call(
    judge: LLMJudge, openai_server: OpenAIChatServer
) -> None:
    openai_server.reply = (
        "extracted_final_answer: 10\nreasoning: The response says 10, the reference is 10.\ncorrect: yes\n"
        "confidence: 85%"
    )
    verdict = judge.judge(QUESTION, RESPONSE, "10", CTX)
    assert verdict.correct and verdict.parsed
    assert verdict.extracted_answer == "10" and verdict.confidence == pytest.approx(0.85)
    assert verdict.reasoning == "The response says 10, the reference is 10."
    prompt_tokens, completion_tokens, dollars = expected_bill(openai_server.reply)
    assert (verdict.prompt_tokens, verdict.completion_tokens) == (prompt_tokens, completion_tokens)
    assert verdict.dollars == pytest.approx(dollars, rel=1e-12)
    charge = verdict.charge()
    assert charge is not None and charge.kind == "judge" and charge.model == "judge-test"
    assert charge.dollars == verdict.dollars and charge.price_version == "2026-02"
    [request] = openai_server.requests
    [message] = request.body["messages"]
    assert request.body["model"] == "judge-model" and request.body["temperature"] == 0.0
    assert QUESTION in message["content"] and RESPONSE in message["content"]
    assert "Reference answer:\n10\n" in message["content"]


def test_llm_judge_no_is_wrong(judge: LLMJudge, openai_server: OpenAIChatServer) -> None:
    openai_server.reply = (
        "extracted_final_answer: 10\nreasoning: The reference is 9.\ncorrect: no\nconfidence: 85%"
    )
    verdict = judge.judge(QUESTION, RESPONSE, "9", CTX)
    assert not verdict.correct and verdict.parsed and verdict.dollars > 0


def test_llm_judge_unparseable_reply_is_wrong_and_logged(
    judge: LLMJudge, openai_server: OpenAIChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    openai_server.reply = "Looks plausible to me, I would accept it."
    with caplog.at_level(logging.WARNING, logger="harness.benchmarks.hle.judge"):
        verdict = judge.judge(QUESTION, RESPONSE, "10", CTX)
    assert not verdict.correct and not verdict.parsed
    assert verdict.extracted_answer == "10" and verdict.confidence == pytest.approx(0.85)  # from the response
    assert verdict.dollars == pytest.approx(expected_bill(openai_server.reply)[2], rel=1e-12)  # still billed
    assert verdict.charge() is not None
    [record] = [r for r in caplog.records if "unparseable" in r.getMessage()]
    assert "hle/q-17/0" in record.getMessage() and "Looks plausible" in record.getMessage()
