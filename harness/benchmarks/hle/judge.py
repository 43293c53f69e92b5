"""Judging an HLE response: a rule-based judge and an LLM judge, both returning a :class:`Verdict`.

Responses follow HLE's answer format (``Explanation: ...``, ``Answer: ...``, ``Confidence: N%``).
The rule judge needs no model: normalised exact match, the multiple-choice letter, and
numeric equality within a tolerance. The LLM judge asks a model, through any backend with
``complete(messages, ctx)``, to extract the final answer and say whether it matches; its
prompt is written for this project (it asks for the same four fields as the official HLE
judge, not its text). A judge reply that cannot be parsed is counted wrong and logged,
never guessed. The verdict carries the judge call's tokens and dollars, so the caller
bills them as a ``judge`` charge, apart from the episode's own cost.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from harness.protocols import ModelBackend
from harness.types import CallContext, Charge, Message

log = logging.getLogger(__name__)

AnswerType = Literal["exactMatch", "multipleChoice"]
NO_CONFIDENCE = 1.0  # the official judge's rule: no stated confidence counts as 100%
REPLY_LOG_CHARS = 200


@dataclass(frozen=True)
class Verdict:
    correct: bool
    extracted_answer: str | None
    confidence: float  # the response's stated confidence in [0, 1], for calibration error
    reasoning: str
    judge: str  # "rule" or the judge model's name
    parsed: bool = True  # False when the judge's reply could not be read (then correct is False)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dollars: float = 0.0
    price_version: str = ""

    def charge(self) -> Charge | None:
        """The judge call as a ``judge`` charge; None for the rule judge, which costs nothing."""
        if self.judge == RuleJudge.name:
            return None
        return Charge(
            kind="judge",
            model=self.judge,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            dollars=self.dollars,
            price_version=self.price_version,
        )


# -- the response's own fields ---------------------------------------------------------------------

_FIELD = r"^[ \t>*_#-]*{name}[ \t*_]*[:：][ \t*_]*(?P<value>.*)$"
_ANSWER_LINE = re.compile(_FIELD.format(name=r"(?:final[ \t]+)?answer"), re.IGNORECASE | re.MULTILINE)
_CONFIDENCE_LINE = re.compile(_FIELD.format(name="confidence"), re.IGNORECASE | re.MULTILINE)
_NUMBER_IN = re.compile(r"[-+]?\d+(?:\.\d+)?")


def extract_answer(response: str) -> str | None:
    """The text after the last ``Answer:`` line, or None when the response states no answer."""
    matches = list(_ANSWER_LINE.finditer(response))
    if not matches:
        return None
    value = matches[-1].group("value").strip().strip("*_ ").strip()
    return value or None


def extract_confidence(response: str) -> float:
    """The stated ``Confidence:`` as a fraction in [0, 1]; 1.0 when none is stated (the official rule)."""
    return parse_confidence(m.group("value") if (m := _last(_CONFIDENCE_LINE, response)) else "")


def parse_confidence(text: str) -> float:
    number = _NUMBER_IN.search(text)
    if number is None:
        return NO_CONFIDENCE
    value = float(number.group())
    if "%" not in text and value <= 1.0 and "." in number.group():
        value *= 100  # "0.85" means 85%
    return min(max(value / 100.0, 0.0), 1.0)


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


# -- rule judge ------------------------------------------------------------------------------------

_LATEX_WRAPPERS = re.compile(r"\\(?:text|mathrm|textbf|mathbf|boxed)\{([^{}]*)\}")
_CHOICE_PATTERNS = (
    re.compile(r"^\(?([A-Za-z])\)?[.):]?$"),  # "B", "(b)", "B."
    re.compile(r"^\(?([A-Z])[.):]\s"),  # "B. Paris", "(B) Paris"
    re.compile(r"\b(?:option|choice|letter|answer is)\s*\(?([A-Za-z])\b", re.IGNORECASE),  # "option B"
)


def normalise(text: str) -> str:
    """Lower case, LaTeX wrappers and dollar signs removed, outer punctuation and spaces collapsed."""
    text = text.strip()
    for _ in range(3):
        text = _LATEX_WRAPPERS.sub(r"\1", text)
    text = text.replace("$", "").replace("\\,", "").replace("~", " ")
    text = " ".join(text.lower().split())
    return text.strip(" .;:,!\"'`")


def choice_letter(text: str) -> str | None:
    """The option letter of a multiple-choice answer ("B", "(b)", "B. Paris", "option B")."""
    text = normalise_space(text)
    for pattern in _CHOICE_PATTERNS:
        if match := pattern.search(text):
            return match.group(1).upper()
    return None


def normalise_space(text: str) -> str:
    return " ".join(_LATEX_WRAPPERS.sub(r"\1", text).replace("$", "").split())


def parse_number(text: str) -> float | None:
    """A plain number, fraction, percentage or ``a x 10^b`` in ``text``; None when it is not just a number."""
    cleaned = normalise(text).replace(",", "").replace(" ", "").replace("−", "-")
    cleaned = re.sub(r"(?:\\times|×|x|\*)10\^\{?([-+]?\d+)\}?", r"e\1", cleaned)
    percent = cleaned.endswith("%")
    cleaned = cleaned.rstrip("%")
    try:
        value = float(Fraction(cleaned)) if "/" in cleaned else float(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(value):
        return None
    return value / 100 if percent else value


@dataclass(frozen=True)
class RuleJudgeConfig:
    rel_tol: float = 1e-4
    abs_tol: float = 1e-9


class RuleJudge:
    """No-model judging for answers that can be checked mechanically (the offline bank's are)."""

    name = "rule"

    def __init__(self, config: RuleJudgeConfig | None = None):
        self.config = config or RuleJudgeConfig()

    def judge(self, response: str, correct_answer: str, answer_type: AnswerType) -> Verdict:
        answer = extract_answer(response)
        confidence = extract_confidence(response)
        if answer is None:
            return Verdict(False, None, confidence, "the response states no 'Answer:' line", self.name)
        correct, why = self.matches(answer, correct_answer, answer_type)
        return Verdict(correct, answer, confidence, why, self.name)

    def matches(self, answer: str, correct_answer: str, answer_type: AnswerType) -> tuple[bool, str]:
        if answer_type == "multipleChoice":
            got, want = choice_letter(answer), choice_letter(correct_answer) or correct_answer.strip().upper()
            if got is None:
                return False, f"no option letter in {answer!r}"
            return got == want, f"option {got} vs {want}"
        if normalise(answer) == normalise(correct_answer):
            return True, "normalised exact match"
        got, want = parse_number(answer), parse_number(correct_answer)
        if got is not None and want is not None:
            close = math.isclose(got, want, rel_tol=self.config.rel_tol, abs_tol=self.config.abs_tol)
            return close, f"numeric {got!r} vs {want!r} (rel_tol {self.config.rel_tol:g})"
        return False, "no exact or numeric match"


# -- LLM judge -------------------------------------------------------------------------------------

JUDGE_PROMPT = """You are grading one answer to an exam question. Decide only whether the final answer \
in the response agrees with the reference answer; do not solve the question yourself and do not grade \
the reasoning.

Question:
{question}

Response to grade:
{response}

Reference answer:
{correct_answer}

Reply with exactly these four lines and nothing else:
extracted_final_answer: <the final answer as the response states it, copied exactly; write None if the \
response gives no final answer>
reasoning: <one or two sentences comparing the extracted answer with the reference answer only; say \
where they differ, and allow a small numerical rounding difference but no other deviation, \
ambiguity or extra alternatives>
correct: <yes if the extracted answer is equivalent to the reference answer, otherwise no>
confidence: <the confidence the response itself states, as a percentage from 0% to 100%; write 100% \
if it states none>"""

_JUDGE_FIELDS = ("extracted_final_answer", "reasoning", "correct", "confidence")
_JUDGE_LINE = re.compile(
    r"^[ \t>*_#-]*(extracted[ _]final[ _]answer|reasoning|correct|confidence)[ \t*_]*:[ \t*_]*(.*)$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class JudgeReply:
    extracted_final_answer: str
    reasoning: str
    correct: bool
    confidence: float


def parse_judge_reply(text: str) -> JudgeReply | None:
    """The four fields from a line-per-field reply or a JSON object; None when ``correct`` is not yes/no."""
    fields = _json_fields(text) or _line_fields(text)
    verdict = str(fields.get("correct", "")).strip().strip("*_.`\"' ").lower()
    if verdict not in ("yes", "no", "true", "false"):
        return None
    return JudgeReply(
        extracted_final_answer=str(fields.get("extracted_final_answer", "")).strip(),
        reasoning=str(fields.get("reasoning", "")).strip(),
        correct=verdict in ("yes", "true"),
        confidence=parse_confidence(str(fields.get("confidence", ""))),
    )


def _json_fields(text: str) -> dict[str, object]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return {}
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return {}
    return {k: v for k, v in data.items() if k in _JUDGE_FIELDS} if isinstance(data, dict) else {}


def _line_fields(text: str) -> dict[str, object]:
    fields: dict[str, object] = {}
    matches = list(_JUDGE_LINE.finditer(text))
    for i, match in enumerate(matches):
        name = match.group(1).lower().replace(" ", "_")
        # a field's value runs to the next field's line, so multi-line reasoning is kept whole
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        fields.setdefault(name, (match.group(2) + text[match.end() : stop]).strip())
    return fields


class LLMJudge:
    """Asks a judge model whether a response's final answer matches the reference answer.

    Provider failures (``ProviderError``) propagate: a judge that cannot be reached is a run
    problem to surface, not a wrong answer to record silently.
    """

    def __init__(self, backend: ModelBackend):
        self.backend = backend

    def judge(self, question: str, response: str, correct_answer: str, ctx: CallContext) -> Verdict:
        prompt = JUDGE_PROMPT.format(question=question, response=response, correct_answer=correct_answer)
        completion = self.backend.complete([Message("user", prompt)], ctx)
        card = self.backend.card
        billed = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "dollars": completion.dollars,
            "price_version": card.price.version,
        }
        reply = parse_judge_reply(completion.text)
        if reply is None:
            log.warning(
                "judge %r: unparseable reply for task %s counted wrong: %r",
                card.name, ctx.task.key, completion.text[:REPLY_LOG_CHARS],
            )  # fmt: skip
            return Verdict(
                correct=False,
                extracted_answer=extract_answer(response),
                confidence=extract_confidence(response),
                reasoning="judge reply could not be parsed; counted wrong",
                judge=card.name,
                parsed=False,
                **billed,
            )
        extracted = reply.extracted_final_answer
        return Verdict(
            correct=reply.correct,
            extracted_answer=None if extracted.lower() in ("", "none") else extracted,
            confidence=reply.confidence,
            reasoning=reply.reasoning,
            judge=card.name,
            **billed,
        )
