"""The committed synthetic HLE stand-in bank: regeneration, sizes, labels, and that every answer checks out."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.benchmarks.hle.bank import (
    BANK_FILE,
    DATA_DIR,
    DOCUMENTS_FILE,
    LETTERS,
    RECIPE,
    SPLIT_FILE,
    Bank,
    generate,
    load_bank,
    manifest_json,
    questions_jsonl,
)
from harness.benchmarks.hle.dataset import CATEGORIES, OOD_CATEGORIES, SPLITS, split_by_category
from harness.benchmarks.hle.judge import RuleJudge
from harness.benchmarks.hle.sandbox import PythonSandbox, SandboxLimits
from harness.benchmarks.hle.search import LocalSearchBackend
from harness.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bank() -> Bank:
    return load_bank()


@pytest.fixture(scope="module")
def regenerated() -> Bank:
    return generate()


@pytest.fixture(scope="module")
def search(bank: Bank, tmp_path_factory: pytest.TempPathFactory) -> LocalSearchBackend:
    return LocalSearchBackend(bank.documents, tmp_path_factory.mktemp("index") / "bank.sqlite")


def test_regeneration_in_memory_matches_the_committed_files(regenerated: Bank) -> None:
    committed = {
        name: gzip.decompress((DATA_DIR / name).read_bytes()) for name in (BANK_FILE, DOCUMENTS_FILE)
    }
    for name, content in committed.items():
        assert hashlib.sha256(content).hexdigest() == regenerated.manifest["content_sha256"][name]
    assert (DATA_DIR / SPLIT_FILE).read_bytes() == manifest_json(regenerated)
    assert questions_jsonl(regenerated) == committed[BANK_FILE]


def test_the_command_rewrites_the_files_identically(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.benchmarks.hle.bank", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "SYNTHETIC STAND-IN" in done.stdout
    for name in (BANK_FILE, DOCUMENTS_FILE, SPLIT_FILE):
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), name


def test_a_different_seed_gives_a_different_bank(regenerated: Bank) -> None:
    assert generate(seed=1).manifest["content_sha256"] != regenerated.manifest["content_sha256"]


def test_committed_data_stays_small() -> None:
    assert sum((DATA_DIR / n).stat().st_size for n in (BANK_FILE, DOCUMENTS_FILE, SPLIT_FILE)) < 2_000_000


def test_sizes_are_like_the_real_split(bank: Bank) -> None:
    manifest = bank.manifest
    assert manifest["sizes"] == {"train": 1073, "val": 358, "test_id": 358, "ood": 369}
    assert manifest["category_counts"]["ood"] == {"Humanities/Social Science": 193, "Other": 176}
    assert manifest["split_seed"] == 42 and "random.Random(42)" in manifest["procedure"]
    assert {q.category for q in bank.questions} == set(CATEGORIES)
    for split in SPLITS:
        questions = bank.split(split)
        assert len(questions) == manifest["sizes"][split]
        assert {q.answer_type for q in questions} == {"exactMatch", "multipleChoice"}
        assert Counter(q.category for q in questions) == manifest["category_counts"][split]
    assert {q.category for q in bank.split("ood")} == set(OOD_CATEGORIES)
    # The committed split is the procedure applied to the committed questions.
    assert {k: [q.id for q in v] for k, v in split_by_category(bank.questions).items()} == manifest["ids"]


def test_labelled_as_a_synthetic_stand_in(bank: Bank) -> None:
    assert bank.manifest["label"].startswith("SYNTHETIC STAND-IN for HLE")
    assert "not HLE results" in bank.manifest["label"]
    assert all(q.synthetic and q.id.startswith("syn-") and q.image == "" for q in bank.questions)
    assert all(d.url.startswith("https://stand-in.invalid/") for d in bank.documents)
    assert "SYNTHETIC STAND-IN" in (DATA_DIR / "README.md").read_text()


def test_every_template_and_tool_pattern_occurs(bank: Bank) -> None:
    used = Counter(q.template for q in bank.questions)
    assert set(used) == {t.__name__ for templates in RECIPE.values() for t, _ in templates}
    patterns = Counter((q.search_helps, q.python_helps) for q in bank.questions)
    assert set(patterns) == {(True, False), (False, True), (True, True), (False, False)}


def test_ids_and_document_references_are_consistent(bank: Bank) -> None:
    doc_ids = [d.id for d in bank.documents]
    assert len(set(doc_ids)) == len(doc_ids)
    assert len({q.id for q in bank.questions}) == len(bank.questions)
    known = set(doc_ids)
    for q in bank.questions:
        assert q.supporting_doc_ids and len(q.distractor_doc_ids) >= 2, q.id
        assert set(q.supporting_doc_ids) <= known and set(q.distractor_doc_ids) <= known
        assert not set(q.supporting_doc_ids) & set(q.distractor_doc_ids)
    assert bank.question(bank.questions[0].id) == bank.questions[0]
    with pytest.raises(ConfigError, match="no question 'nope'"):
        bank.question("nope")
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        bank.split("test")


def test_the_rule_judge_accepts_every_gold_answer(bank: Bank) -> None:
    judge = RuleJudge()
    for q in bank.questions:
        assert judge.judge(
            f"Explanation: x\nAnswer: {q.answer}\nConfidence: 50%", q.answer, q.answer_type
        ).correct


def option_text(question: str, letter: str) -> str:
    [line] = [line for line in question.splitlines() if line.startswith(f"{letter}. ")]
    return line[3:]


def test_multiple_choice_questions_have_five_distinct_options(bank: Bank) -> None:
    for q in bank.questions:
        if q.answer_type == "multipleChoice":
            options = [option_text(q.question, letter) for letter in LETTERS]
            assert len(set(options)) == 5 and q.answer in LETTERS


def test_search_finds_the_supporting_documents_and_they_state_the_fact(
    bank: Bank, search: LocalSearchBackend
) -> None:
    docs = {d.id: d for d in bank.documents}
    for q in bank.questions:
        if not q.search_helps:
            continue
        facts = list(q.supporting_doc_ids)  # search templates have no background page
        for query in (q.search_query, q.question.split("\n")[0]):
            found = {hit.id for hit in search.search(query)}
            assert set(facts) <= found, (q.id, query)
        text = " ".join(docs[d].text for d in facts)
        expected = option_text(q.question, q.answer) if q.answer_type == "multipleChoice" else None
        if expected is not None:
            assert expected in text, q.id
        elif not q.python_helps and q.template != "hum_years_between":
            assert q.answer in text, q.id
        # the distractors really are look-alikes: none of them names the question's entity
        for d in q.distractor_doc_ids:
            assert docs[d].title not in q.question, q.id


def run_solution(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<solution>", "exec"), {})  # the bank's own generated code, not model output
    return out.getvalue().strip()


def test_every_solution_code_prints_the_answer(bank: Bank) -> None:
    computed = [q for q in bank.questions if q.python_helps]
    assert all(q.solution_code for q in computed)
    assert all(not q.solution_code for q in bank.questions if not q.python_helps)
    for q in computed:
        assert run_solution(q.solution_code) == q.answer, q.id


def test_solutions_verify_inside_the_real_sandbox(bank: Bank) -> None:
    sandbox = PythonSandbox(SandboxLimits(wall_time_s=20))
    one_per_template = {}
    for q in bank.questions:
        if q.python_helps:
            one_per_template.setdefault(q.template, q)
    for q in one_per_template.values():
        result = sandbox.run(q.solution_code)
        assert result.ok, (q.id, result.tool_error)
        assert result.stdout.strip() == q.answer, q.id


def test_tampered_bank_is_refused(tmp_path: Path) -> None:
    for name in (BANK_FILE, DOCUMENTS_FILE, SPLIT_FILE):
        shutil.copy(DATA_DIR / name, tmp_path / name)
    assert len(load_bank(tmp_path).questions) == 2158
    rows = gzip.decompress((tmp_path / BANK_FILE).read_bytes()).decode().splitlines()
    first = json.loads(rows[0])
    rows[0] = json.dumps({**first, "answer": first["answer"] + "1"}, sort_keys=True)
    (tmp_path / BANK_FILE).write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    with pytest.raises(ConfigError, match="does not match the hash"):
        load_bank(tmp_path)
    (tmp_path / SPLIT_FILE).unlink()
    with pytest.raises(ConfigError, match="cannot read it"):
        load_bank(tmp_path)


def test_to_hle_keeps_the_hle_fields(bank: Bank) -> None:
    q = bank.questions[0]
    hle = q.to_hle()
    assert (hle.id, hle.question, hle.answer, hle.answer_type, hle.category) == (
        q.id, q.question, q.answer, q.answer_type, q.category,
    )  # fmt: skip
