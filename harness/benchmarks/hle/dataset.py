"""Loader for a user's own local copy of the real HLE test split, and the category split.

The ``cais/hle`` dataset is gated: this module never downloads it and nothing of it is
committed. A user who has accepted its terms exports the test split once (Parquet,
JSON or JSONL) or points at the Hugging Face ``datasets`` cache directory holding its
Arrow files; :func:`load_hle` reads any of those with pyarrow alone.

Multimodal rows (a non-empty ``image``) are dropped and counted, as in the reference:
the benchmark is text-only. :func:`split_by_category` is the reference's split, stated
in :data:`SPLIT_PROCEDURE`; the offline stand-in bank uses the same function.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from harness.errors import ConfigError

AnswerType = Literal["exactMatch", "multipleChoice"]
ANSWER_TYPES = ("exactMatch", "multipleChoice")
FIELDS = ("id", "question", "image", "answer", "answer_type", "rationale", "raw_subject", "category")
TRAIN_CATEGORIES = ("Math", "Computer Science/AI", "Physics", "Biology/Medicine", "Chemistry", "Engineering")
OOD_CATEGORIES = ("Humanities/Social Science", "Other")
CATEGORIES = TRAIN_CATEGORIES + OOD_CATEGORIES
SPLITS = ("train", "val", "test_id", "ood")
SPLIT_SEED = 42
TRAIN_SHARE = 0.6
SPLIT_PROCEDURE = (
    "Keep text-only questions (empty image). In-distribution pool: the questions whose category is one of "
    "Math, Computer Science/AI, Physics, Biology/Medicine, Chemistry, Engineering, ordered by id, then shuffled "
    "with Python's random.Random(42).shuffle. Of its n questions the first floor(0.6 n) are train, the next "
    "(n - floor(0.6 n)) // 2 are val and the rest are test_id (60/20/20). OOD: every question in "
    "Humanities/Social Science or Other, ordered by id."
)
HOW_TO_PROVIDE = (
    "export the cais/hle test split yourself (it is gated: accept its terms on Hugging Face) as Parquet, JSON or "
    "JSONL, or pass the datasets cache directory that holds its .arrow files"
)


@dataclass(frozen=True)
class HleQuestion:
    id: str
    question: str
    image: str  # "" when the question has no image
    answer: str
    answer_type: AnswerType
    rationale: str
    raw_subject: str
    category: str


@dataclass(frozen=True)
class HleDataset:
    questions: list[HleQuestion]  # text-only
    dropped_multimodal: int
    source: Path


def load_hle(path: Path) -> HleDataset:
    """The text-only questions of a local HLE export; a missing or malformed copy is a one-line ConfigError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"HLE dataset: nothing at {path}; {HOW_TO_PROVIDE}")
    rows = list(_read_rows(path))
    if not rows:
        raise ConfigError(f"HLE dataset: {path} holds no rows; {HOW_TO_PROVIDE}")
    missing = [name for name in FIELDS if name not in rows[0]]
    if missing:
        raise ConfigError(
            f"HLE dataset: {path} lacks the field(s) {', '.join(missing)}; it is not an export of cais/hle "
            f"({HOW_TO_PROVIDE})"
        )
    questions, dropped, seen = [], 0, set()
    for number, row in enumerate(rows, 1):
        question = _question(row, number, path)
        if question.id in seen:
            raise ConfigError(f"HLE dataset: {path} row {number}: id {question.id!r} appears twice")
        seen.add(question.id)
        if question.image:
            dropped += 1
        else:
            questions.append(question)
    return HleDataset(questions, dropped, path)


def _question(row: dict[str, Any], number: int, path: Path) -> HleQuestion:
    where = f"HLE dataset: {path} row {number}"
    values = {name: "" if row.get(name) is None else row[name] for name in FIELDS}
    for name, value in values.items():
        if not isinstance(value, str):
            raise ConfigError(f"{where}: field {name} is {type(value).__name__}, expected text")
    if not values["id"] or not values["question"]:
        raise ConfigError(f"{where}: empty id or question")
    if values["answer_type"] not in ANSWER_TYPES:
        raise ConfigError(
            f"{where}: answer_type {values['answer_type']!r} is not one of {', '.join(ANSWER_TYPES)}"
        )
    if values["category"] not in CATEGORIES:
        raise ConfigError(f"{where}: unknown category {values['category']!r}")
    return HleQuestion(**values)


def _read_rows(path: Path) -> Iterable[dict[str, Any]]:
    try:
        if path.is_dir():
            yield from _read_directory(path)
        elif path.suffix == ".parquet":
            yield from _read_parquet(path)
        elif path.suffix == ".arrow":
            yield from _read_arrow(path)
        elif path.suffix == ".jsonl":
            yield from _read_jsonl(path)
        elif path.suffix == ".json":
            yield from _read_json(path)
        else:
            raise ConfigError(f"HLE dataset: {path} is not .parquet, .json, .jsonl, .arrow or a directory")
    except (OSError, ValueError) as exc:  # pyarrow's errors are ValueError/OSError subclasses
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(f"HLE dataset: cannot read {path} ({detail}); {HOW_TO_PROVIDE}") from None


def _read_directory(path: Path) -> Iterable[dict[str, Any]]:
    for suffix, reader in ((".arrow", _read_arrow), (".parquet", _read_parquet)):
        files = sorted(p for p in path.rglob(f"*{suffix}") if "test" in p.name)
        files = files or sorted(path.rglob(f"*{suffix}"))
        if files:
            for file in files:
                yield from reader(file)
            return
    raise ConfigError(f"HLE dataset: no .arrow or .parquet files under {path}; {HOW_TO_PROVIDE}")


def _read_parquet(path: Path) -> Iterable[dict[str, Any]]:
    import pyarrow.parquet as pq

    yield from pq.read_table(path, columns=_present(pq.read_schema(path).names)).to_pylist()


def _read_arrow(path: Path) -> Iterable[dict[str, Any]]:
    """A datasets cache file: Arrow IPC, stream format (what datasets writes) or file format."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    yield from table.select(_present(table.column_names)).to_pylist()


def _present(names: Sequence[str]) -> list[str]:
    """Only our fields: the image column holds megabytes of base64 per multimodal row."""
    return [n for n in names if n in FIELDS] or list(names)


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield _object(json.loads(line), path, number)


def _read_json(path: Path) -> Iterable[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("rows"), list):  # the datasets-server export shape
        data = [item.get("row", item) for item in data["rows"]]
    if not isinstance(data, list):
        raise ConfigError(f"HLE dataset: {path} is JSON but not a list of questions; {HOW_TO_PROVIDE}")
    for number, row in enumerate(data, 1):
        yield _object(row, path, number)


def _object(row: Any, path: Path, number: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ConfigError(f"HLE dataset: {path} row {number} is not an object")
    return row


# -- the split -------------------------------------------------------------------------------------


class Categorised(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def category(self) -> str: ...


Q = TypeVar("Q", bound=Categorised)


def split_by_category(questions: Sequence[Q], seed: int = SPLIT_SEED) -> dict[str, list[Q]]:
    """train/val/test_id from the six in-distribution categories, ood from the other two (SPLIT_PROCEDURE)."""
    pool = sorted((q for q in questions if q.category in TRAIN_CATEGORIES), key=lambda q: q.id)
    random.Random(seed).shuffle(pool)
    n_train = math.floor(TRAIN_SHARE * len(pool))
    n_val = (len(pool) - n_train) // 2
    ood = sorted((q for q in questions if q.category in OOD_CATEGORIES), key=lambda q: q.id)
    return {
        "train": pool[:n_train],
        "val": pool[n_train : n_train + n_val],
        "test_id": pool[n_train + n_val :],
        "ood": ood,
    }


def split_manifest(
    splits: dict[str, Sequence[Categorised]], seed: int = SPLIT_SEED, **extra: Any
) -> dict[str, Any]:
    """The versioned split record: ids per split, category counts per split, seed and procedure."""
    return {
        **extra,
        "split_seed": seed,
        "procedure": SPLIT_PROCEDURE,
        "sizes": {name: len(splits[name]) for name in SPLITS},
        "category_counts": {
            name: dict(sorted(Counter(q.category for q in splits[name]).items())) for name in SPLITS
        },
        "ids": {name: [q.id for q in splits[name]] for name in SPLITS},
    }
