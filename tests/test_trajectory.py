"""The trajectory store's guarantees: atomic lines, torn-line tolerance, corrupt-file errors, resume."""

import json
import shutil

import pandas as pd
import pytest

from harness.errors import ConfigError, TrajectoryError
from harness.records import EpisodeRecord, TurnRecord
from harness.trajectory import RunStore, read_lines


def test_lines_round_trip_and_pandas_reads_them(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open({"run": {"seed": 1}})
    for i in range(3):
        store.record_episode(
            EpisodeRecord(f"sw/boil/{i}", "scienceworld", "boil", i, score=i * 10.0, cost=0.01 * i)
        )
    frame = pd.read_json(store.episodes_path, lines=True)
    assert list(frame["score"]) == [0.0, 10.0, 20.0]
    assert store.finished_keys() == {"sw/boil/0", "sw/boil/1", "sw/boil/2"}


def test_torn_last_line_is_dropped_but_inner_corruption_is_an_error(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_lines(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(TrajectoryError, match=r"x.jsonl: line 2"):
        read_lines(path)


def test_reopening_with_another_config_names_the_field(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open({"run": {"seed": 1}, "pool_sha256": "abc"})
    store.open({"run": {"seed": 1}, "pool_sha256": "abc"})  # same run: resumable
    with pytest.raises(ConfigError, match="pool_sha256"):
        RunStore(tmp_path / "run").open({"run": {"seed": 1}, "pool_sha256": "def"})


def test_interrupted_attempt_is_kept_aside(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open({})
    first = store.begin_episode("scienceworld/boil/3")
    store.record_turn(first, TurnRecord("scienceworld/boil/3", 0, "gpt-5", 0.01, []))
    second = store.begin_episode("scienceworld/boil/3")
    assert second == first and second.read_text() == ""  # each attempt's file exists from its start
    kept = list(store.turns_dir.glob("*.interrupted-1.jsonl"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["turn"] == 0
    store.begin_episode("scienceworld/boil/3")  # an attempt killed before its first turn counts too
    assert [p.name for p in store.interrupted_files("scienceworld/boil/3")] == [
        "scienceworld__boil__3.interrupted-1.jsonl",
        "scienceworld__boil__3.interrupted-2.jsonl",
    ]


def test_unwritable_output_directory_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        RunStore(blocker / "run").open({})


def test_a_run_with_another_config_is_refused_naming_the_field_and_both_values(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open({"run": {"router": {"name": "ridge", "params": {"lam": 0.0}}}})
    store.close()
    with pytest.raises(ConfigError) as refused:
        RunStore(tmp_path / "run").open({"run": {"router": {"name": "ridge", "params": {"lam": 0.5}}}})
    assert "run.router.params.lam is 0.0 there, 0.5 now" in str(refused.value)


def test_paths_inside_the_results_directory_are_recorded_relative_to_the_run(tmp_path):
    from harness.trajectory import relative_paths

    root = tmp_path / "results"
    (root / "models" / "ridge").mkdir(parents=True)
    run = root / "runs" / "val" / "ridge"
    params = {"checkpoint": str(root / "models" / "ridge"), "outside": str(tmp_path), "label": "ridge"}
    recorded = relative_paths(params, run, root)
    assert recorded == {
        "checkpoint": {"relative_path": "../../../models/ridge"},
        "outside": str(tmp_path),  # not the results directory's: kept as given
        "label": "ridge",
    }
    store = RunStore(run)
    store.open({"run": {"router": {"params": recorded}}})
    store.close()
    shutil.copytree(root, tmp_path / "copy")
    copied = RunStore(tmp_path / "copy" / "runs" / "val" / "ridge").config()["run"]["router"]["params"]
    assert copied["checkpoint"] == str(tmp_path / "copy" / "models" / "ridge")  # resolved where it now is
