"""Scoring an HLE episode: 1 when the judge finds the final answer correct, else 0 (errors count as wrong).

Without a judge model the rule judge decides (exact, multiple-choice letter, numeric
tolerance), which is exact on the stand-in bank, whose answers are built to be
checkable. With one (``judge`` in the run config) the LLM judge decides and its
call is a ``judge`` charge, billed apart from the routed episode cost.
"""

from __future__ import annotations

from harness.benchmarks.base import Score, Transcript
from harness.benchmarks.hle.judge import LLMJudge, RuleJudge, Verdict
from harness.benchmarks.hle.prompt import response_text
from harness.protocols import ModelBackend
from harness.types import CallContext


class JudgedScore:
    def __init__(self, questions, judge: ModelBackend | None):
        self.questions = questions  # a QuestionIndex
        self.rule = RuleJudge()
        self.llm = LLMJudge(judge) if judge is not None else None

    def score(self, transcript: Transcript, ctx: CallContext) -> Score:
        question = self.questions.get(transcript.task)
        submitted = transcript.submitted
        if submitted is None:
            return Score(0.0, details={"correct": False, "answer": None, "confidence": None, "forced": False})
        response = response_text(submitted.arguments)
        verdict: Verdict
        if self.llm is not None:
            verdict = self.llm.judge(question.question, response, question.answer, ctx)
        else:
            verdict = self.rule.judge(response, question.answer, question.answer_type)
        charge = verdict.charge()
        return Score(
            float(verdict.correct),
            charges=[charge] if charge is not None else [],
            details={
                "correct": verdict.correct,
                "answer": verdict.extracted_answer,
                "confidence": verdict.confidence,
                "judge": verdict.judge,
                "judge_parsed": verdict.parsed,
                "forced": transcript.forced,
            },
        )
