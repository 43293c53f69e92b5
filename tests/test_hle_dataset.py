"""The real-dataset loader on small HLE-format files written here, in every supported form, and the split."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.benchmarks.hle.dataset import (
    CATEGORIES,
    SPLIT_PROCEDURE,
    HleQuestion,
    load_hle,
    split_by_category,
    split_manifest,
)
from harness.errors import ConfigError

# The columns of the cais/hle test split, in its order (values are made up here).
ROWS = [
    {
        "id": "6687ffb1091058ff19128813",
        "question": "What is the smallest prime larger than 100?",
        "image": "",
        "image_preview": None,
        "answer": "101",
        "answer_type": "exactMatch",
        "author_name": "A. Writer",
        "rationale": "100 is even and 101 has no divisor up to 10.",
        "rationale_image": None,
        "raw_subject": "Mathematics",
        "category": "Math",
        "canary": "canary string",
    },
    {
        "id": "668825f80a642802bdfeadfa",
        "question": "Which gas is noble?\nAnswer Choices:\nA. Nitrogen\nB. Argon\nC. Oxygen",
        "image": "",
        "image_preview": None,
        "answer": "B",
        "answer_type": "multipleChoice",
        "author_name": "B. Writer",
        "rationale": "Argon is in group 18.",
        "rationale_image": None,
        "raw_subject": "Chemistry",
        "category": "Chemistry",
        "canary": "canary string",
    },
    {
        "id": "66ea3d3b0b8a6fa6a8e05c94",
        "question": "What does the figure show?",
        "image": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk",
        "image_preview": None,
        "answer": "A cat",
        "answer_type": "exactMatch",
        "author_name": "C. Writer",
        "rationale": "",
        "rationale_image": None,
        "raw_subject": "Art History",
        "category": "Humanities/Social Science",
        "canary": "canary string",
    },
    {
        "id": "66e8d4736299517dd7a5da8c",
        "question": "In which year did the treaty of the fictional Qelvar League end?",
        "image": "",
        "image_preview": None,
        "answer": "1602",
        "answer_type": "exactMatch",
        "author_name": "D. Writer",
        "rationale": None,
        "rationale_image": None,
        "raw_subject": "History",
        "category": "Humanities/Social Science",
        "canary": "canary string",
    },
]
TEXT_IDS = ["6687ffb1091058ff19128813", "668825f80a642802bdfeadfa", "66e8d4736299517dd7a5da8c"]


def check(dataset_path: Path) -> None:
    dataset = load_hle(dataset_path)
    assert [q.id for q in dataset.questions] == TEXT_IDS
    assert dataset.dropped_multimodal == 1
    first, second, third = dataset.questions
    assert first == HleQuestion(
        id="6687ffb1091058ff19128813",
        question="What is the smallest prime larger than 100?",
        image="",
        answer="101",
        answer_type="exactMatch",
        rationale="100 is even and 101 has no divisor up to 10.",
        raw_subject="Mathematics",
        category="Math",
    )
    assert second.answer_type == "multipleChoice" and second.answer == "B"
    assert third.rationale == ""  # a null rationale becomes ""


def test_parquet_export(tmp_path: Path) -> None:
    path = tmp_path / "hle-test.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    check(path)


def test_jsonl_and_json_exports(tmp_path: Path) -> None:
    jsonl = tmp_path / "hle.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    check(jsonl)
    as_list = tmp_path / "hle.json"
    as_list.write_text(json.dumps(ROWS))
    check(as_list)
    server_shape = tmp_path / "rows.json"
    server_shape.write_text(json.dumps({"rows": [{"row_idx": i, "row": row} for i, row in enumerate(ROWS)]}))
    check(server_shape)


def test_datasets_cache_directory_of_arrow_files(tmp_path: Path) -> None:
    cache = tmp_path / "datasets" / "cais___hle" / "default" / "0.0.0" / "5a81a4c7"
    cache.mkdir(parents=True)
    table = pa.Table.from_pylist(ROWS)
    with (
        pa.OSFile(str(cache / "hle-test.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    (cache / "dataset_info.json").write_text("{}")
    check(tmp_path / "datasets")
    check(cache / "hle-test.arrow")


def test_arrow_file_format_and_a_parquet_snapshot_directory(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(ROWS)
    with pa.OSFile(str(tmp_path / "x.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    check(tmp_path / "x.arrow")
    snapshot = tmp_path / "snapshot" / "data"
    snapshot.mkdir(parents=True)
    pq.write_table(table, snapshot / "test-00000-of-00001.parquet")
    check(tmp_path / "snapshot")


def test_missing_dataset_says_how_to_provide_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_hle(tmp_path / "nowhere.parquet")
    message = str(err.value)
    assert "\n" not in message and "nothing at" in message and "export the cais/hle test split" in message
    with pytest.raises(ConfigError, match="no .arrow or .parquet files under"):
        load_hle(tmp_path)


def test_malformed_or_empty_files_are_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ConfigError) as err:
        load_hle(garbage)
    assert str(err.value).startswith(f"HLE dataset: cannot read {garbage} (") and "\n" not in str(err.value)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS).slice(0, 0), empty)
    with pytest.raises(ConfigError, match="holds no rows"):
        load_hle(empty)


def test_malformed_rows_are_named(tmp_path: Path) -> None:
    path = tmp_path / "hle.jsonl"
    no_answer_type = [{k: v for k, v in row.items() if k != "answer_type"} for row in ROWS]
    path.write_text("".join(json.dumps(row) + "\n" for row in no_answer_type))
    with pytest.raises(
        ConfigError, match="lacks the field\\(s\\) answer_type; it is not an export of cais/hle"
    ):
        load_hle(path)
    path.write_text(json.dumps({**ROWS[0], "answer_type": "freeForm"}) + "\n")
    with pytest.raises(ConfigError, match="row 1: answer_type 'freeForm' is not one of"):
        load_hle(path)
    path.write_text(json.dumps({**ROWS[0], "category": "Astrology"}) + "\n")
    with pytest.raises(ConfigError, match="unknown category 'Astrology'"):
        load_hle(path)
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[0]) + "\n")
    with pytest.raises(ConfigError, match="appears twice"):
        load_hle(path)
    path.write_text("{not json\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_hle(path)
    with pytest.raises(ConfigError, match="is not .parquet"):
        (tmp_path / "hle.csv").write_text("id\n")
        load_hle(tmp_path / "hle.csv")


def question(i: int, category: str) -> HleQuestion:
    return HleQuestion(f"q{i:05d}", "?", "", "1", "exactMatch", "", "s", category)


def test_split_is_60_20_20_seeded_and_order_independent() -> None:
    pool = [question(i, CATEGORIES[i % 6]) for i in range(1789)]
    ood = [question(5000 + i, CATEGORIES[6 + i % 2]) for i in range(369)]
    splits = split_by_category(pool + ood)
    assert {k: len(v) for k, v in splits.items()} == {"train": 1073, "val": 358, "test_id": 358, "ood": 369}
    ids = [q.id for name in ("train", "val", "test_id") for q in splits[name]]
    assert sorted(ids) == sorted(q.id for q in pool)  # a partition of the pool
    assert {q.id for q in splits["ood"]} == {q.id for q in ood}
    shuffled = pool + ood
    random.Random(3).shuffle(shuffled)
    assert split_by_category(shuffled) == splits
    assert split_by_category(pool + ood, seed=7)["train"] != splits["train"]
    assert [q.id for q in splits["train"][:2]] != ["q00000", "q00001"]  # actually shuffled


def test_split_of_a_small_pool() -> None:
    splits = split_by_category([question(i, "Math") for i in range(10)])
    assert [len(splits[k]) for k in ("train", "val", "test_id", "ood")] == [6, 2, 2, 0]


def test_split_manifest_records_ids_counts_seed_and_procedure() -> None:
    splits = split_by_category([question(i, CATEGORIES[i % 8]) for i in range(40)])
    manifest = split_manifest(splits, version="t")
    assert (
        manifest["version"] == "t"
        and manifest["split_seed"] == 42
        and manifest["procedure"] == SPLIT_PROCEDURE
    )
    assert manifest["sizes"] == {"train": 18, "val": 6, "test_id": 6, "ood": 10}
    assert manifest["category_counts"]["ood"] == {"Humanities/Social Science": 5, "Other": 5}
    assert manifest["ids"]["val"] == [q.id for q in splits["val"]]
