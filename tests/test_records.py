"""The run directory's two records: one owner in the source, lossless round trips, format 2 still read.

The format-2 fixtures under ``tests/fixtures/format2`` were written by the harness at
4ff6533 (the last format-2 release): a ScienceWorld run's shortest episode, an HLE
episode (the judge's score details) and an infrastructure failure from
``failed_record``, lines and config as that harness wrote them.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from harness.errors import TrajectoryError
from harness.layout import ResultsLayout
from harness.ledger import CostLedger
from harness.records import (
    FORMAT_VERSION,
    EpisodeRecord,
    TurnRecord,
    count_switches,
    switch_rate,
)
from harness.replay.importers import import_run
from harness.summary import summarize_run
from harness.trajectory import RunStore
from harness.types import Charge, Message, TaskInstance, ToolCall
from routers.learned.dataset import load_samples

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "harness", ROOT / "routers", ROOT / "benchmarks"]
RECORDS_MODULE = ROOT / "harness" / "records.py"
LAYOUT_MODULE = ROOT / "harness" / "layout.py"
FORMAT2 = Path(__file__).parent / "fixtures" / "format2"

# A dict display is a record literal when its constant keys hold the key every record line has,
# "episode", and at least two more fields of one record class.
RECORD_KEY = "episode"
# A directory listing is a listing of run directories when the statement it is in names what makes
# a directory a run directory, or its call names a directory of the results layout.
RUN_MARKERS = ("CONFIG_FILE", "config.json", "EPISODES_FILE", "episodes.jsonl")
LAYOUT_MARKERS = ("RUNS_DIR", "DATA_DIR", "SEEDS_DIR", "'runs", "'data", "'seeds", '"runs', '"data', '"seeds')
LISTINGS = {"glob", "rglob", "iterdir", "listdir", "scandir", "walk"}


def record_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, record class) of every dict display that spells out an episode or turn record."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict):
            continue
        keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        if RECORD_KEY not in keys:
            continue
        for cls in (EpisodeRecord, TurnRecord):
            if len(keys & set(cls.fields()) - {RECORD_KEY}) >= 2:
                found.append((node.lineno, cls.__name__))
    return found


def _headers(tree: ast.AST):
    """(source text, expressions) of each statement: a simple statement whole, a compound one's header."""
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.AsyncFor):
            parts = [node.target, node.iter]
        elif isinstance(node, ast.While | ast.If):
            parts = [node.test]
        elif isinstance(node, ast.With | ast.AsyncWith):
            parts = [item.context_expr for item in node.items]
        elif isinstance(node, ast.stmt) and not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Try
        ):
            parts = [node]
        else:
            continue
        yield " ".join(ast.unparse(part) for part in parts), parts


def run_dir_listings(tree: ast.AST) -> list[int]:
    """Lines of every glob or directory listing that looks for run directories."""
    found = []
    for text, parts in _headers(tree):
        for node in (n for part in parts for n in ast.walk(part)):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in LISTINGS:
                continue
            call = ast.unparse(node)
            if any(m in text for m in RUN_MARKERS) or any(m in call for m in LAYOUT_MARKERS):
                found.append(node.lineno)
    return sorted(set(found))


def offenders(check, skip: Path) -> list[str]:
    out = []
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            if path != skip:
                out += [f"{path.relative_to(ROOT)}:{hit}" for hit in check(ast.parse(path.read_text()))]
    return out


def test_no_episode_or_turn_record_is_spelled_out_outside_the_record_module():
    assert offenders(record_literals, RECORDS_MODULE) == []


def test_no_module_but_the_layout_looks_for_run_directories():
    assert offenders(run_dir_listings, LAYOUT_MODULE) == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ('x = {"episode": k, "turn": 0, "model": m}', [(1, "TurnRecord")]),
        ('x = {"episode": k, "benchmark": b, "task": t, "score": 1.0}', [(1, "EpisodeRecord")]),
        ('x = {"episode": k, "status": s}', []),  # a trace span's inputs: not a record
    ],
)
def test_the_record_check_sees_a_spelled_out_record(source, expected):
    assert [
        (line, cls) for line, cls in record_literals(ast.parse(source)) if cls in {c for _, c in expected}
    ] == (expected)


@pytest.mark.parametrize(
    "source, hit",
    [
        ('found = [p for p in root.glob("*/*") if (p / CONFIG_FILE).exists()]', True),
        ("runs = sorted((root / RUNS_DIR / split).iterdir())", True),
        ('seeds = sorted((root / "seeds").glob("s*"))', True),
        ("for run in sorted(p for p in split.iterdir() if (p / CONFIG_FILE).exists()):\n    pass", True),
        ('turns = sorted((run_dir / TURNS_DIR).glob("*.jsonl"))', False),
        ('pools = sorted(POOLS_DIR.glob("*.yaml"))', False),
    ],
)
def test_the_listing_check_sees_a_glob_of_run_directories(source, hit):
    assert bool(run_dir_listings(ast.parse(source))) is hit


def a_turn(turn: int = 0) -> TurnRecord:
    call = ToolCall("call-1", "python", '{"code": "print(1)"}')
    return TurnRecord(
        episode="hle/math/3",
        turn=turn,
        model="gpt-5",
        dollars=0.0123,
        messages=[
            Message("assistant", "", (call,)),
            Message("tool", "1", tool_call_id="call-1", name="python"),
        ],
        history_len=2,
        initial_messages=[Message("system", "be brief"), Message("user", "what is 1?")]
        if turn == 0
        else None,
        task_description="what is 1?" if turn == 0 else None,
        propensity=0.25,
        router_scores={"gpt-5": 0.7, "small": 0.3},
        prompt_tokens=1200,
        cached_prompt_tokens=1024,
        uncached_prompt_tokens=176,
        completion_tokens=30,
        charges=[
            {
                "kind": "model",
                "model": "gpt-5",
                "prompt_tokens": 1200,
                "completion_tokens": 30,
                "dollars": 0.0123,
                "price_version": "2026-01",
            }
        ],  # fmt: skip
        output="",
        action="python(print(1))",
        observation="1",
        valid=True,
        score=0.0,
        extra={"usage_note": "carried through"},
    )


def an_episode() -> EpisodeRecord:
    ledger = CostLedger()
    ledger.charge(0, Charge("model", "gpt-5", 1200, 30, 0.0123, "2026-01"))
    ledger.charge(1, Charge("model", "small", 1300, 20, 0.001, "2026-01"))
    ledger.charge(1, Charge("judge", "judge", 300, 5, 0.0005, "2026-01"))
    task = TaskInstance("hle", "math", 3, "test_id", repeat=2)
    return EpisodeRecord.of(
        task, 17, "random", ledger, models=["gpt-5", "small"], score=1.0, status="submitted", turns=2,
        duration_s=1.5, score_details={"verdict": "correct"}, extra={"exit_status": "Submitted"},
    )  # fmt: skip


def test_an_episode_record_survives_its_line_and_the_store(tmp_path):
    record = an_episode()
    assert (record.episode, record.repeat, record.switches, record.switch_rate) == (
        "hle/math/3/r2",
        2,
        1,
        1.0,
    )
    assert record.cost == pytest.approx(0.0133) and record.judge_cost == pytest.approx(0.0005)
    line = json.loads(json.dumps(record.to_line()))
    assert set(line) == set(EpisodeRecord.fields()) | {"exit_status"}  # every field on every line
    assert EpisodeRecord.from_line(line) == record
    store = RunStore(tmp_path / "run")
    store.open({"run": {}})
    store.record_episode(record)
    assert store.episodes() == [record]


def test_a_turn_record_survives_its_line_and_the_store(tmp_path):
    turns = [a_turn(0), a_turn(1)]
    for turn in turns:
        line = json.loads(json.dumps(turn.to_line()))
        assert set(line) == set(TurnRecord.fields()) | {"usage_note"}
        assert TurnRecord.from_line(line) == turn
    store = RunStore(tmp_path / "run")
    store.open({"run": {}})
    path = store.begin_episode("hle/math/3")
    for turn in turns:
        store.record_turn(path, turn)
    assert store.turns("hle/math/3") == turns
    assert store.turns("hle/math/3")[0].messages[0].tool_calls[0].arguments == '{"code": "print(1)"}'


def test_switches_are_counted_once():
    assert count_switches(["a", "a", "b", "a"]) == 2 and switch_rate(["a", "a", "b", "a"]) == pytest.approx(
        2 / 3
    )
    assert count_switches(["a"]) == 0 and switch_rate([]) == 0.0


def test_a_format3_line_missing_a_field_and_an_unknown_version_are_refused_by_name():
    line = a_turn().to_line()
    del line["charges"]
    with pytest.raises(TrajectoryError, match="has no 'charges'"):
        TurnRecord.from_line(line)
    assert TurnRecord.from_line(line, version=2).charges == []  # format 2 lines may lack it
    with pytest.raises(TrajectoryError, match="format version 1 is not one this harness reads"):
        EpisodeRecord.from_line(an_episode().to_line(), version=1)
    with pytest.raises(TrajectoryError, match="message role 'robot'"):
        TurnRecord.from_line(a_turn().to_line() | {"messages": [{"role": "robot", "content": "x"}]})


def raw_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("name", ["scienceworld", "hle"])
def test_a_format2_run_reads_with_every_field_it_wrote(name):
    run = FORMAT2 / name
    store = RunStore(run)
    assert store.format_version == 2
    records = store.episodes()
    for raw, record in zip(raw_lines(run / "episodes.jsonl"), records, strict=True):
        line = record.to_line()
        assert {k: line[k] for k in raw} == raw  # nothing it wrote is lost or changed
    for turn_file in sorted((run / "turns").iterdir()):
        (record,) = [r for r in records if turn_file.name == r.episode.replace("/", "__") + ".jsonl"]
        turns = store.turns(record.episode)
        assert len(turns) == record.turns
        for raw, turn in zip(raw_lines(turn_file), turns, strict=True):
            line = turn.to_line()
            assert {k: line[k] for k in raw} == raw


def test_a_format2_run_gets_the_defaults_of_the_fields_it_lacks():
    records = {r.episode: r for r in RunStore(FORMAT2 / "scienceworld").episodes()}
    done, failed = records["scienceworld/lifespan-longest-lived/2"], records["scienceworld/boil/0"]
    assert (done.failure, done.unrecorded_charges, done.repeat, done.score_details) == (None, [], 0, {})
    assert failed.infrastructure_failure and failed.score is None
    assert (failed.switches, failed.switch_rate, failed.duration_s) == (None, None, None)
    assert failed.unrecorded_charges[0]["dollars"] == pytest.approx(0.001)
    hle = RunStore(FORMAT2 / "hle").episodes()[0]
    assert hle.score_details["judge"] == "rule" and hle.judge_cost == 0


def test_a_format2_run_feeds_summaries_and_training():
    summary = summarize_run(FORMAT2 / "scienceworld")
    assert (summary.episodes, summary.failed) == (1, 1)
    samples = load_samples([FORMAT2 / "scienceworld"])
    assert [s.turn for s in samples] == [0, 1, 2]
    assert samples[2].history[: len(samples[1].history)] == samples[1].history


def test_a_format2_run_is_not_appended_to_but_converts(tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(FORMAT2 / "scienceworld", copy)
    config = json.loads((copy / "config.json").read_text())
    config.pop("format_version")
    with pytest.raises(TrajectoryError, match="version 2; this harness appends only to version 3"):
        RunStore(copy).open(config)
    import_run(copy, tmp_path / "new")
    new = RunStore(tmp_path / "new")
    assert new.format_version == FORMAT_VERSION
    (old_done,) = [r for r in RunStore(copy).episodes() if not r.failed]
    (new_done,) = new.episodes()  # a failed episode is not imported
    assert new_done.score == old_done.score and new_done.cost == old_done.cost
    assert new.turns(new_done.episode) == RunStore(copy).turns(old_done.episode)


def test_the_layout_lists_runs_data_runs_and_replicates(tmp_path):
    layout = ResultsLayout(tmp_path / "bench")
    assert layout.point_runs() == [] and layout.data_runs() == [] and layout.replicates() == []
    for path in (layout.run("val", "random"), layout.run("test_id", "single:gpt-5"), layout.data("stage-a")):
        shutil.copytree(FORMAT2 / "scienceworld", path)
    layout.runs("val").joinpath("not-a-run").mkdir()
    assert [(r.split, r.point) for r in layout.point_runs()] == [
        ("test_id", "single:gpt-5"),
        ("val", "random"),
    ]
    assert [r.point for r in layout.point_runs("val")] == ["random"]
    assert layout.data_runs() == [layout.data("stage-a")]
    assert layout.all_runs() == [
        layout.data("stage-a"),
        layout.run("test_id", "single:gpt-5"),
        layout.run("val", "random"),
    ]
    assert layout.point_of(layout.run("val", "random")).point == "random"
    assert layout.point_of(layout.data("stage-a")) is None
    (layout.root / "seeds" / "s1").mkdir(parents=True)
    assert [r.root.name for r in layout.replicates()] == ["s1"]
