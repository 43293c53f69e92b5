"""The HLE environment: a question, and the search, browse and python tools the agent calls.

A task instance is (category, index): the index-th question of that category,
questions ordered by id, so a split file lists categories as task types and a
held-out category is a held-out task type. The environment's score stays 0: the
episode's score is the judge's (see :mod:`harness.benchmarks.hle.scoring`).

On the offline stand-in bank the oracle knows each question's answer and which
tools help (a supporting document to retrieve, a computation to run), which is
what simulated models read; routers never see it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from harness.benchmarks.hle.sandbox import PythonSandbox
from harness.benchmarks.hle.search import SearchBackend, ToolError, render_hits
from harness.errors import UnknownNameError
from harness.types import Action, StepResult, TaskInstance

CATEGORY_SLUGS = {
    "Math": "math",
    "Computer Science/AI": "cs-ai",
    "Physics": "physics",
    "Biology/Medicine": "bio-med",
    "Chemistry": "chemistry",
    "Engineering": "engineering",
    "Humanities/Social Science": "humanities",
    "Other": "other",
}
CATEGORY_OF_SLUG = {slug: name for name, slug in CATEGORY_SLUGS.items()}
# A missing piece of evidence (the supporting document not retrieved, the computation not run)
# multiplies any model's chance of answering correctly by this: the history matters.
MISSING_EVIDENCE_FACTOR = 0.35
GUESS_CONFIDENCE = 60


@dataclass(frozen=True)
class QuestionIndex:
    """Questions by (category slug, index): each category's questions in id order."""

    by_slug: dict[str, list]

    @classmethod
    def of(cls, questions: Sequence) -> QuestionIndex:
        by_slug: dict[str, list] = {slug: [] for slug in CATEGORY_OF_SLUG}
        for question in sorted(questions, key=lambda q: q.id):
            by_slug[CATEGORY_SLUGS[question.category]].append(question)
        return cls(by_slug)

    def position(self, question) -> tuple[str, int]:
        slug = CATEGORY_SLUGS[question.category]
        return slug, self.by_slug[slug].index(question)

    @functools.cached_property
    def _positions(self) -> dict[str, tuple[str, int]]:
        return {q.id: (slug, i) for slug, questions in self.by_slug.items() for i, q in enumerate(questions)}

    def locate(self, question_id: str) -> tuple[str, int] | None:
        """(category slug, index) of the question with this id; None if there is none."""
        return self._positions.get(question_id)

    def get(self, task: TaskInstance):
        questions = self.by_slug.get(task.task)
        if questions is None or not 0 <= task.variation < len(questions):
            raise UnknownNameError(f"HLE has no question {task.task}/{task.variation}")
        return questions[task.variation]


class HleEnv:
    """Tools over one question at a time; python results are cached by code when ``cache_python``."""

    def __init__(
        self, index: QuestionIndex, search: SearchBackend | None, sandbox: PythonSandbox, cache_python: bool
    ):
        self.index, self.search, self.sandbox = index, search, sandbox
        self._run = functools.lru_cache(maxsize=4096)(sandbox.run) if cache_python else sandbox.run
        self.question = None
        self._oracle: StandInOracle | None = None

    def reset(self, task: TaskInstance) -> tuple[str, str]:
        self.question = self.index.get(task)
        self._oracle = StandInOracle(self.question) if hasattr(self.question, "search_helps") else None
        return self.question.question, ""

    @property
    def oracle(self) -> StandInOracle | None:
        return self._oracle

    def step(self, action: Action) -> StepResult:
        try:
            observation, valid = self._tool(action)
        except ToolError as error:
            return StepResult(f"error: {error}", 0.0, False, valid=False)
        return StepResult(observation, 0.0, False, valid=valid)

    def _tool(self, action: Action) -> tuple[str, bool]:
        if action.tool in ("search", "browse") and self.search is None:
            raise ToolError("no search backend is configured (set HLE_SEARCH_URL and HLE_SEARCH_API_KEY)")
        if action.tool == "search":
            hits = self.search.search(str(action.arguments["query"]))
            if self._oracle is not None:
                self._oracle.saw_documents({hit.id for hit in hits})
            return render_hits(hits), True
        if action.tool == "browse":
            page = self.search.browse(str(action.arguments["url"]))
            if self._oracle is not None:
                self._oracle.saw_documents({page.id})
            return page.render(), True
        if action.tool == "python":
            code = str(action.arguments["code"])
            result = self._run(code)
            if self._oracle is not None and result.ok:
                self._oracle.ran(code)
            return result.render(), result.ok
        raise ToolError(f"unknown tool {action.tool!r}")

    def close(self) -> None:
        close = getattr(self.search, "close", None)
        if close is not None:
            close()


class StandInOracle:
    """What a simulated model knows of a stand-in question: the tools that help, in order, then the answer."""

    def __init__(self, question):
        self.q = question
        self.retrieved = not question.search_helps
        self.computed = not question.python_helps

    def saw_documents(self, ids: set[str]) -> None:
        self.retrieved = self.retrieved or bool(ids & set(self.q.supporting_doc_ids))

    def ran(self, code: str) -> None:
        self.computed = self.computed or code == self.q.solution_code

    def topic(self) -> str:
        return self.q.category

    def next_action(self) -> Action:
        if not self.retrieved:
            return Action(tool="search", arguments={"query": self.q.search_query})
        if not self.computed:
            return Action(tool="python", arguments={"code": self.q.solution_code})
        return self._answer(self.q.answer, 90)

    def _answer(self, answer: str, confidence: int) -> Action:
        arguments = {
            "explanation": "Worked out from the evidence.",
            "answer": answer,
            "confidence": confidence,
        }
        return Action(tool="answer", arguments=arguments, submit=True)

    def submit_action(self, answers_correctly: Callable[[], bool]) -> Action:
        """Answering now, before or after the work: right with the model's chance given the evidence so far."""
        if answers_correctly():
            return self._answer(self.q.answer, GUESS_CONFIDENCE)
        return self._answer(self.wrong_answers()[0], GUESS_CONFIDENCE)

    def is_critical(self) -> bool:
        return self.retrieved and self.computed

    def wrong_critical_actions(self, k: int) -> list[Action]:
        return [self._answer(answer, 80) for answer in self.wrong_answers()[:k]]

    def wasted_actions(self) -> list[Action]:
        return [Action(tool="search", arguments={"query": f"{self.q.raw_subject} overview"})]

    def invalid_action(self, gold: Action, rng: np.random.Generator) -> Action:
        return Action(tool="python", arguments={"code": "print(undefined_name)"})

    def skill_multiplier(self) -> float:
        missing = (not self.retrieved) + (not self.computed)
        return MISSING_EVIDENCE_FACTOR**missing

    def wrong_answers(self) -> list[str]:
        answer = self.q.answer.strip()
        if self.q.answer_type == "multipleChoice":
            return [letter for letter in "ABCDE" if letter != answer.upper()]
        try:
            number = float(answer)
        except ValueError:
            return [f"not {answer}", answer[::-1] or "none", "unknown"]
        # Far from the answer, so that no judge tolerance (numeric or rounding) can take one for it.
        value = int(number) if number.is_integer() else number
        candidates = (value * 2 + 7, -value - 3, value * 3 + 11, value + 1000)
        return [str(c) for c in candidates if abs(c - number) > 1e-3 * max(1.0, abs(number))][:3]
