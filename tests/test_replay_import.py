"""Importing logs: the reference's trajectories, our own run directories (v1 and v2), the generic JSONL.

The reference fixture under tests/fixtures/replay/reference is written by hand in the
reference's ``mini-agentic-router-1`` format; the v1 run directory is produced by the real
agent loop on the real ScienceWorld engine, because v1 is what this project wrote.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.batch import Player, prepare
from harness.benchmarks import REGISTRY, Benchmark, get_benchmark
from harness.config import Limits, RouterSpec, RunConfig
from harness.errors import ConfigError, TrajectoryError
from harness.records import FORMAT_VERSION
from harness.replay.importers import (
    REPORT_FILE,
    import_jsonl,
    import_reference,
    import_run,
    read_run_dir,
)
from harness.replay.redact import redact
from harness.trajectory import RunStore, append_line, episode_file_name, read_lines, write_json_atomic
from harness.types import TaskInstance
from routers.learned.dataset import load_samples

FIXTURES = Path(__file__).parent / "fixtures" / "replay"
REFERENCE = FIXTURES / "reference" / "trajectories"
FAKE_KEY = "sk-proj-abcdefghijklmnop0123456789"


@pytest.fixture(scope="module")
def reference_import(tmp_path_factory):
    dest = tmp_path_factory.mktemp("ref") / "out"
    return import_reference(REFERENCE, dest), dest


def test_reference_fixture_imports_with_expected_counts_and_skip_reasons(reference_import):
    report, dest = reference_import
    assert report.episodes == 4 and report.turns == 9
    assert sorted(Path(r).relative_to(dest).as_posix() for r in report.runs) == [
        "hle_roulette/run0",
        "roulette/run0",
        "roulette/run1",
    ]
    skipped = {(Path(path).name, s.item, s.reason) for path, s in report.skipped}
    assert skipped == {
        ("find-animal_var2_run0.traj.json", "file", "not valid JSON (line 12)"),
        (
            "melt_var3_run1.traj.json",
            "file",
            "no final score (neither info.final_score nor info.benchmark_data.judge_result.correct)",
        ),
        ("boil_var4_run0.traj.json", "file", "exit_status 'APIError' is not a finished episode"),
        ("results.json", "chemistry-mix_var0_run0", "listed in results.json but has no trajectory file"),
        (
            "q-404_run0.traj.json",
            "file",
            "HLE question 'q-404' is not a question of the hle plug-in's bank, so it has no task instance "
            "(category, position)",
        ),
    }
    stored = json.loads((dest / REPORT_FILE).read_text())
    assert stored["episodes"] == 4 and stored["skipped"] == 5 and stored["missing_propensities"] == 1
    assert len(stored["files"]) == 9  # eight trajectory files and one results.json, each reported
    summary = report.summary()
    assert (
        "skipped 1: not valid JSON (line 12)" in summary and "1 turn(s) have no logged propensity" in summary
    )


def test_reference_keys_are_stripped_and_reported_never_stored(reference_import):
    report, dest = reference_import
    keyed = next(f for f in report.files if f.path.endswith("boil_var0_run1.traj.json"))
    assert keyed.redacted == [
        "$.info.config.model.model_kwargs.api_key",
        "$.info.config.model.model_kwargs.extra_headers.Authorization",
        "$.messages[2].content",
    ]
    assert all(not f.redacted for f in report.files if f is not keyed)
    written = [p.read_text() for p in dest.rglob("*") if p.is_file()]
    assert written and not any(FAKE_KEY in text or "Bearer abcdef" in text for text in written)
    run1 = RunStore(dest / "roulette" / "run1")
    (episode,) = run1.episodes()
    assert episode.extra["reference_model_config"]["model_kwargs"] == {
        "temperature": 0.7,
        "extra_headers": {},
    }
    assert (
        run1.turns("scienceworld/boil/0")[0].messages[0].content.startswith("I will use the key [REDACTED]")
    )


def test_reference_turns_carry_model_propensity_tokens_and_cost(reference_import):
    _, dest = reference_import
    episodes, reports, config = read_run_dir(dest / "roulette" / "run0")
    assert config["format_version"] == FORMAT_VERSION and all(not r.skipped for r in reports)
    boil, melt = sorted(episodes, key=lambda e: e.episode)
    # model_name, else router_info.selected_model, else extra.response.model
    assert boil.models == ["gpt-5", "gpt-5-mini", "deepseek-v3.2"]
    assert [t.propensity for t in boil.turns] == [0.25, 0.25, 0.25]
    assert [t.dollars for t in boil.turns] == [0.003, 0.001, 0.002]
    assert [(t.prompt_tokens, t.completion_tokens) for t in boil.turns] == [(100, 10), (120, 12), (140, 8)]
    assert boil.score == 40.0 and boil.status == "submitted" and boil.task == "boil" and boil.variation == 0
    assert [len(t.history) for t in boil.turns] == [2, 4, 6]
    assert boil.turns[2].history[-1].content == "Observation: the stove is on."
    assert melt.turns[1].propensity is None  # missing stays missing, never 1
    raw = RunStore(dest / "roulette" / "run0").turns("scienceworld/melt/1")
    assert raw[1].propensity is None and raw[1].score == 100 and raw[1].done is True


def test_reference_hle_score_from_judge_and_tool_calls(reference_import):
    report, dest = reference_import
    (hle,), _, _ = read_run_dir(dest / "hle_roulette" / "run0")
    # Keyed as the hle plug-in keys the question: its category's slug and its position there.
    plugin = get_benchmark("hle")
    assert (hle.benchmark, hle.task, hle.variation, hle.score) == ("hle", "math", 2, 1.0)
    assert plugin.questions.get(TaskInstance("hle", hle.task, hle.variation, "test")).id == (
        "syn-00caf257d659881e1984"
    )
    assert hle.episode == "hle/math/2"
    # A question the plug-in does not have is reported by id, not imported under a key of its own.
    assert report.to_dict()["unmapped"] == ["q-404"]
    assert "1 question(s) not in the benchmark plug-in, not imported: q-404" in report.summary()
    call = hle.turns[0].messages[0].tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("call_1", "python", '{"code": "print(6*7)"}')
    assert [m.role for m in hle.turns[0].messages] == ["assistant", "tool"]
    assert hle.turns[0].messages[1].tool_call_id == "call_1"


class Gridworld(Benchmark):
    """A plug-in the importer has never heard of: it recognises the reference's records by their own field."""

    name = "gridworld"

    def make_environment(self):
        raise NotImplementedError

    def reference_item(self, info):
        return ("maze", int(info["level"])) if "level" in info else None


def test_a_benchmark_plug_in_keys_the_reference_records_it_recognises(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY.builtin, "gridworld", "test_replay_import:Gridworld")
    source = tmp_path / "trajectories" / "roulette"
    melt = REFERENCE / "roulette" / "melt_var1_run0" / "melt_var1_run0.traj.json"
    for name, info in {
        "maze3": {"level": 3},
        "named": {"benchmark": "gridworld", "level": 5},
        "unknown": {"benchmark": "nowhere", "level": 1},
        "unclaimed": {"puzzle": 1},
    }.items():
        document = json.loads(melt.read_text())
        document["info"] = {"exit_status": "Submitted", "final_score": 1, **info}
        (source / f"{name}_run0").mkdir(parents=True)
        (source / f"{name}_run0" / f"{name}_run0.traj.json").write_text(json.dumps(document))
    report = import_reference(source.parent, tmp_path / "out")
    (run,) = report.runs
    assert sorted(e.episode for e in read_run_dir(Path(run))[0]) == ["gridworld/maze/3", "gridworld/maze/5"]
    assert {Path(path).name: s.reason for path, s in report.skipped} == {
        "unknown_run0.traj.json": "info.benchmark 'nowhere' is not a registered benchmark",
        "unclaimed_run0.traj.json": "no registered benchmark recognises info",
    }


def test_import_refuses_a_destination_with_episodes(reference_import):
    _, dest = reference_import
    with pytest.raises(ConfigError, match="already holds episodes"):
        import_reference(REFERENCE, dest)


def test_command_line_prints_the_summary(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "import",
            "reference",
            str(REFERENCE),
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("imported 4 episodes (9 turns)")
    assert (tmp_path / "cli" / REPORT_FILE).exists()
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "import",
            "run",
            str(tmp_path / "nothing"),
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert (
        failed.returncode == 2
        and failed.stderr.startswith("error: ")
        and "is not a run directory" in failed.stderr
    )
    assert len(failed.stderr.strip().splitlines()) == 1


def test_generic_jsonl_counts_and_reasons(tmp_path):
    report = import_jsonl(FIXTURES / "generic.jsonl", tmp_path / "run")
    assert report.episodes == 2 and report.turns == 3
    reasons = {(s.item, s.reason) for _, s in report.skipped}
    assert reasons == {
        ("line 9", "not valid JSON"),
        ("line 13", "type is 'note', not 'episode' or 'turn'"),
        ("toy/c/0", "1 turn line(s) but no episode line"),
        ("toy/b/0", "no final score"),
        ("toy/d/0", "turn indices are not 0..1"),
    }
    episodes, _, _ = read_run_dir(tmp_path / "run")
    first = next(e for e in episodes if e.episode == "toy/a/0")
    assert first.models == ["small", "big"] and first.split == "test_id"
    assert first.turns[1].history[-1].content == "Observation: a room"
    second = next(e for e in episodes if e.episode == "toy/a/1")
    assert second.turns[0].propensity is None and second.split == "unknown"
    assert report.to_dict()["missing_propensities"] == 1


@pytest.fixture(scope="module")
def v1_run(env, tmp_path_factory) -> Path:
    """A v1 run directory: a real run of the agent loop on ScienceWorld, written back in the v1 format
    (no per-turn messages, no task description, no judge cost), then the odd files a real run leaves.
    The v2 original is kept beside it so tests can check that the rebuilt messages are the real ones."""
    root = tmp_path_factory.mktemp("v1")
    config = RunConfig(
        router=RouterSpec("sticky-random", {"switch_prob": 0.3}),
        split="train",
        task_filter="^find-animal$",
        seed=0,
        limits=Limits(max_turns=8),
    )
    original = root / "v2"
    batch = prepare(config, original)
    player = Player(config, original, env)
    for task in batch.pending[:3]:
        batch.store.record_episode(player.play(task))
    run = root / "run"
    shutil.copytree(original, run)
    config_file = run / "config.json"
    write_json_atomic(config_file, json.loads(config_file.read_text()) | {"format_version": 1})
    episodes = run / "episodes.jsonl"
    episodes.write_text("".join(
        json.dumps({k: v for k, v in json.loads(line).items() if k != "judge_cost"}) + "\n"
        for line in episodes.read_text().splitlines()
    ))  # fmt: skip
    for turns in (run / "turns").glob("*.jsonl"):
        turns.write_text("".join(
            json.dumps({k: v for k, v in json.loads(line).items() if k not in ("messages", "task_description")}) + "\n"
            for line in turns.read_text().splitlines()
        ))  # fmt: skip
    assert json.loads(config_file.read_text())["format_version"] == 1
    root = run
    # A failed episode, an interrupted attempt kept aside, and a turn file whose episode never finished.
    append_line(
        root / "episodes.jsonl", {"episode": "scienceworld/boil/9", "status": "failed", "error": "JVM died"}
    )
    (root / "turns" / "scienceworld__find-animal__0.interrupted-1.jsonl").write_text('{"turn": 0}\n')
    (root / "turns" / "scienceworld__melt__2.jsonl").write_text('{"turn": 0}\n')
    return root


def test_v1_run_is_rebuilt_as_the_agent_loop_saw_it(v1_run, tmp_path):
    episodes, reports, _ = read_run_dir(v1_run)
    assert len(episodes) == 3
    # The histories rebuilt from v1 lines are the ones the real loop logged in format 2, turn by turn.
    samples = {(s.episode, s.turn): s for s in load_samples([v1_run.parent / "v2"])}
    assert len(samples) == sum(len(e.turns) for e in episodes)
    for episode in episodes:
        for turn in episode.turns:
            assert list(turn.history) == samples[(episode.episode, turn.turn)].history
            assert turn.propensity == samples[(episode.episode, turn.turn)].propensity
    skipped = {(Path(r.path).name, s.item, s.reason) for r in reports for s in r.skipped}
    assert skipped == {
        ("episodes.jsonl", "scienceworld/boil/9", "episode failed: JVM died"),
        (
            "scienceworld__find-animal__0.interrupted-1.jsonl",
            "file",
            "an interrupted attempt kept aside by a rerun",
        ),
        (
            "scienceworld__melt__2.jsonl",
            "file",
            "no usable episode line in episodes.jsonl (unfinished, failed or skipped episode)",
        ),
    }


def test_v1_to_current_round_trip_keeps_every_field(v1_run, tmp_path):
    report = import_run(v1_run, tmp_path / "v2")
    assert report.episodes == 3 and len(report.skipped) == 3
    new = RunStore(tmp_path / "v2")
    config = new.config()
    assert config["format_version"] == FORMAT_VERSION and config["imported_from"]["format_version"] == 1
    assert config["run"] == json.loads((v1_run / "config.json").read_text())["run"]
    with pytest.raises(TrajectoryError, match="version 1; this harness reads versions 2, 3"):
        RunStore(v1_run).episodes()  # the store reads format 1 only through an import
    for record in read_lines(v1_run / "episodes.jsonl"):
        if record.get("status") == "failed":
            continue
        # Every field the v1 line had is kept; the judge's cost, which v1 runs did not name, is 0.
        line = next(e for e in new.episodes() if e.episode == record["episode"]).to_line()
        assert {k: line[k] for k in record} == record and line["judge_cost"] == 0.0
        real = RunStore(v1_run.parent / "v2").turns(record["episode"])
        old_turns = read_lines(v1_run / "turns" / episode_file_name(record["episode"]))
        for before, after, logged in zip(old_turns, new.turns(record["episode"]), real, strict=True):
            line = after.to_line()
            assert {k: line[k] for k in before} == before
            # The rebuilt messages and task description are what the real loop wrote.
            assert after.messages == logged.messages
            assert after.task_description == logged.task_description
    again, _, _ = read_run_dir(tmp_path / "v2")
    first, _, _ = read_run_dir(v1_run)

    def shape(episodes):
        return [
            (e.episode, [(t.turn, t.model, t.propensity, t.dollars, t.messages) for t in e.turns])
            for e in episodes
        ]

    assert shape(again) == shape(first)
    # The learned routers' loader still reads the imported directory.
    assert len(load_samples([tmp_path / "v2"])) == sum(len(e.turns) for e in first)


def test_unknown_format_version_is_one_line_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_json_atomic(run / "config.json", {"format_version": 7})
    with pytest.raises(Exception, match=r"format_version 7 is not one this importer reads \(1, 2, 3\)"):
        read_run_dir(run)


def test_redaction_keeps_usage_counters_and_removes_credentials():
    record = {
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "max_tokens": 9},
        "hf_token": "abc",
        "Authorization": "x",
        "client_secret": "y",
        "api_key": None,
        "text": "call with Bearer abcdefghijklmnop and AKIAABCDEFGHIJKLMNOP please",
    }
    cleaned, removed = redact(record)
    assert cleaned["usage"] == record["usage"] and cleaned["api_key"] is None
    assert "hf_token" not in cleaned and "Authorization" not in cleaned and "client_secret" not in cleaned
    assert cleaned["text"] == "call with [REDACTED] and [REDACTED] please"
    assert sorted(removed) == ["$.Authorization", "$.client_secret", "$.hf_token", "$.text"]
