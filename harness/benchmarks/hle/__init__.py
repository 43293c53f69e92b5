"""Humanity's Last Exam with tools: one question per episode, search/browse/python tools, a judged answer.

Two registered plug-ins share this folder:

* ``hle``: the embedded default, on the offline stand-in bank (``benchmarks/data/hle/``): generated
  HLE-format questions with checkable answers and the documents a search finds. It is a synthetic
  stand-in, never Humanity's Last Exam; its numbers are not HLE results.
* ``hle-real``: a user's local copy of the real ``cais/hle`` test split, named by the environment
  variable ``HARNESS_HLE_DATASET`` (a Parquet/JSON/JSONL export or a Hugging Face datasets cache
  directory), split by the reference's category procedure; search goes to the HTTP backend
  configured by ``HLE_SEARCH_URL``/``HLE_SEARCH_API_KEY``. Real models only (no oracle).

Limits are the reference's (30 model calls, $5 per question); the python tool always runs in the
sandbox of :mod:`harness.benchmarks.hle.sandbox`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.benchmarks.base import Benchmark, Transcript
from harness.benchmarks.hle.environment import CATEGORY_SLUGS, QuestionIndex
from harness.benchmarks.hle.prompt import hle_format
from harness.config import BENCHMARKS_DIR, Limits
from harness.errors import ConfigError, TrajectoryError, UnknownItem
from harness.splits import Split, load_split
from harness.types import Action

STAND_IN_SPLIT = BENCHMARKS_DIR / "splits" / "hle-standin-v1.json"
DATASET_ENV = "HARNESS_HLE_DATASET"
# Quick subsets: this share of each category's questions in a split (at least one), so that the quick
# test_id and OOD splits still hold about 100 questions each (calibration error is defined from 100).
QUICK_SHARE = {"train": 0.14, "val": 0.17, "test_id": 0.28, "test_ood": 0.28}
SPLIT_NAMES = {"train": "train", "val": "val", "test_id": "test_id", "ood": "test_ood"}


def split_content(questions, version: str, procedure: str, **extra: Any) -> dict[str, Any]:
    """A split file in :mod:`harness.splits` form: categories as task types, question positions as variations."""
    from harness.benchmarks.hle.dataset import split_by_category

    index = QuestionIndex.of(questions)
    splits: dict[str, dict[str, list[int]]] = {name: {} for name in SPLIT_NAMES.values()}
    for name, members in split_by_category(questions).items():
        for question in members:
            slug, position = index.position(question)
            splits[SPLIT_NAMES[name]].setdefault(slug, []).append(position)
    splits = {name: {slug: sorted(v) for slug, v in sorted(per.items())} for name, per in splits.items()}
    quick = {
        name: {slug: v[: max(1, math.ceil(QUICK_SHARE[name] * len(v)))] for slug, v in per.items()}
        for name, per in splits.items()
    }
    return {
        "version": version,
        "benchmark": extra.pop("benchmark"),
        "procedure": procedure,
        "topics": {slug: category for category, slug in CATEGORY_SLUGS.items()},
        "task_types": {slug: {"category": category} for category, slug in CATEGORY_SLUGS.items()},
        "splits": splits,
        "quick": quick,
        **extra,
    }


class HLE(Benchmark):
    name = "hle"
    score_range = (0.0, 1.0)
    reference_episode_seconds = 0.02  # `make benchmark`'s hle-quick episodes, 2026-12-06
    limits = Limits(max_turns=30, budget_dollars=5.0)
    split_file = STAND_IN_SPLIT
    reference_cost = 0.5

    def __init__(self) -> None:
        self.agent_format = hle_format()

    @functools.cached_property
    def questions(self) -> QuestionIndex:
        from harness.benchmarks.hle.bank import load_bank

        return QuestionIndex.of(load_bank().questions)

    def make_environment(self):
        from harness.benchmarks.hle.bank import load_bank
        from harness.benchmarks.hle.environment import HleEnv
        from harness.benchmarks.hle.sandbox import PythonSandbox
        from harness.benchmarks.hle.search import LocalSearchBackend

        bank = load_bank()
        index_path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "routing-harness"
        search = LocalSearchBackend(bank.documents, index_path / "hle-standin-v1.fts.sqlite")
        # The stand-in's python calls are the bank's deterministic solutions, so results are cached by code.
        return HleEnv(self.questions, search, PythonSandbox(), cache_python=True)

    def fingerprint(self) -> dict[str, Any]:
        from harness.benchmarks.hle.bank import DATA_DIR
        from harness.benchmarks.hle.sandbox import SandboxLimits

        manifest = json.loads((DATA_DIR / "split-v1.json").read_text())
        return {
            "bank": manifest["label"],
            "content_sha256": manifest["content_sha256"],
            "sandbox": vars(SandboxLimits()),
        }

    def reference_item(self, info: Mapping[str, Any]) -> tuple[str, int] | None:
        """The reference logs an HLE question by its id (``task_id``) beside a judge result; this plug-in
        keys it by (category slug, position in the category)."""
        judged = isinstance(info.get("benchmark_data"), Mapping) and "judge_result" in info["benchmark_data"]
        if info.get("benchmark", self.name if judged else None) != self.name:
            return None
        if not info.get("task_id"):
            raise TrajectoryError("HLE trajectory without info.task_id")
        question = str(info["task_id"])
        located = self.questions.locate(question)
        if located is None:
            raise UnknownItem(
                f"HLE question {question!r} is not a question of the {self.name} plug-in's bank, so it has no "
                "task instance (category, position)",
                question,
            )
        return located

    def scorer(self, judge):
        from harness.benchmarks.hle.scoring import JudgedScore

        return JudgedScore(self.questions, judge)

    def final_answer(self, transcript: Transcript) -> Action | None:
        """At a limit, the last reply is taken as the answer (the reference's forced answer)."""
        from harness.benchmarks.hle.judge import extract_answer

        replies = [m.content for m in transcript.messages if m.role == "assistant" and m.content.strip()]
        if not replies:
            return None
        text = replies[-1]
        return Action(
            tool="answer",
            arguments={"explanation": text, "answer": extract_answer(text) or text},
            submit=True,
        )

    def report_section(self, episodes, points: list[str], single: str | None) -> list[str]:
        from harness.benchmarks.hle.report import hle_section

        return [
            "## The paper's HLE layout",
            "",
            "On the offline stand-in bank (synthetic, not Humanity's Last Exam): accuracy counts every question "
            "(a failed episode is wrong) with a Wilson 95% interval; cost is the routed total over the split, the "
            "judge's cost apart; calibration error is the RMS gap between stated confidence and accuracy over "
            "bins of 100 questions, undefined under 100.",
            "",
            *hle_section(episodes, points, single),
            "",
        ]


class HLEReal(HLE):
    """The real dataset from ``HARNESS_HLE_DATASET``; never downloaded, never stored by the harness."""

    name = "hle-real"

    @functools.cached_property
    def dataset(self):
        from harness.benchmarks.hle.dataset import load_hle

        path = os.environ.get(DATASET_ENV)
        if not path:
            raise ConfigError(
                f"hle-real needs the real cais/hle test split on disk: set {DATASET_ENV} to its Parquet/JSON(L) "
                "export or Hugging Face datasets cache directory (the dataset is gated; it is never downloaded)"
            )
        return load_hle(Path(path))

    @functools.cached_property
    def questions(self) -> QuestionIndex:
        return QuestionIndex.of(self.dataset.questions)

    def load_split(self, path: str | Path | None = None) -> Split:
        if path is not None:
            return load_split(path, self.name)
        from harness.benchmarks.hle.dataset import SPLIT_PROCEDURE

        ids = "\n".join(sorted(q.id for q in self.dataset.questions))
        version = f"hle-real-{hashlib.sha256(ids.encode()).hexdigest()[:12]}"
        content = split_content(self.dataset.questions, version, SPLIT_PROCEDURE, benchmark=self.name)
        return Split(
            version=content["version"],
            benchmark=self.name,
            assignments=content["splits"],
            quick=content["quick"],
            topics=content["topics"],
            engine_names={slug: slug for slug in content["task_types"]},
        )

    def make_environment(self):
        from harness.benchmarks.hle.environment import HleEnv
        from harness.benchmarks.hle.sandbox import PythonSandbox
        from harness.benchmarks.hle.search import HttpSearchBackend, HttpSearchConfig

        search = HttpSearchBackend(HttpSearchConfig.from_env()) if os.environ.get("HLE_SEARCH_URL") else None
        return HleEnv(self.questions, search, PythonSandbox(), cache_python=False)

    def fingerprint(self) -> dict[str, Any]:
        from harness.benchmarks.hle.sandbox import SandboxLimits

        return {
            "dataset": str(self.dataset.source),
            "questions": len(self.dataset.questions),
            "sandbox": vars(SandboxLimits()),
        }
