"""The ScienceWorld layer against the real engine (each env object is its own JVM)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from harness.benchmarks import get_benchmark
from harness.benchmarks.scienceworld.engine import ScienceWorldEnv
from harness.benchmarks.scienceworld.gold import (
    DEFAULT_GOLD_PATH,
    generate_gold_paths,
    load_gold_entries,
    load_gold_paths,
)
from harness.benchmarks.scienceworld.split import OOD_TASK_TYPES, TOPICS, TRAIN_TASK_TYPES
from harness.config import BENCHMARKS_DIR
from harness.errors import EnvironmentCrashed, MissingDependencyError, UnknownNameError
from harness.protocols import Environment
from harness.types import TaskInstance


def instance(task: str, variation: int) -> TaskInstance:
    return TaskInstance("scienceworld", task, variation, "test")


@pytest.fixture(scope="module")
def gold() -> dict[tuple[str, int], list[str]]:
    return load_gold_paths(DEFAULT_GOLD_PATH)


@pytest.fixture(scope="module")
def env(gold):
    with ScienceWorldEnv(gold=gold) as environment:
        yield environment


def replay(environment: ScienceWorldEnv, task: TaskInstance, actions: list[str]) -> list[tuple]:
    description, first = environment.reset(task)
    trace = [(description, first)]
    for action in actions:
        result = environment.send(action)
        trace.append((result.observation, result.score, result.done, result.valid))
    return trace


def test_env_satisfies_protocol(env):
    assert isinstance(env, Environment)


def test_two_jvms_replay_identically_whatever_ran_before(env, gold):
    # Without -XX:hashCode=2 this fails: identity hashes depend on what the JVM did
    # earlier, and after these warm-up steps mendelian-genetics-known-plant/0 diverges
    # from a fresh JVM at its 3rd action.
    replay(
        env, instance("mendelian-genetics-known-plant", 1), gold[("mendelian-genetics-known-plant", 1)][:10]
    )
    task = instance("mendelian-genetics-known-plant", 0)
    actions = gold[("mendelian-genetics-known-plant", 0)][:20] + ["xyzzy", "look around", "focus on agent"]
    with ScienceWorldEnv() as fresh:
        assert replay(env, task, actions) == replay(fresh, task, actions)


def test_gold_replay_reaches_100_on_a_quick_task(env, gold):
    task = get_benchmark("scienceworld").load_split().tasks("train", quick=True)[0]
    trace = replay(env, task, gold[(task.task, task.variation)])
    _, score, done, valid = trace[-1]
    assert (score, done, valid) == (100, True, True)
    assert all(step[3] for step in trace[1:])
    assert load_gold_entries(DEFAULT_GOLD_PATH)[(task.task, task.variation)]["replay_score"] == 100


def test_valid_flag_and_ambiguity(env):
    env.reset(instance("boil", 0))
    garbage = env.send("xyzzy plugh")
    assert garbage.observation == "No known action matches that input." and not garbage.valid
    ambiguous = env.send("open door")
    assert ambiguous.observation.startswith("Ambiguous request:") and ambiguous.valid
    not_a_choice = env.send("go to kitchen")  # at an ambiguity prompt only a number is understood
    assert not_a_choice.observation.startswith("Unknown action.") and not not_a_choice.valid
    assert env.send("look around").valid


def test_wrong_focus_fails_with_negative_score(env):
    env.reset(instance("boil", 0))
    wrong = env.oracle.wrong_critical_actions(1)[0].text
    result = env.send(wrong)
    assert result.score == -100 and result.done


def test_oracle_advances_and_flags_the_focus_step(env, gold):
    task = instance("find-animal", 0)
    path = gold[(task.task, task.variation)]
    env.reset(task)
    oracle = env.oracle
    assert (oracle.progress(), oracle.length()) == (0, len(path))
    while not oracle.is_critical():
        expected = oracle.progress() + 1
        env.send(oracle.next_action().text)
        assert oracle.progress() == expected
    focus = oracle.next_action().text
    assert focus.startswith("focus on ")
    wrong = [action.text for action in oracle.wrong_critical_actions(3)]
    valid = env.valid_actions()
    assert wrong and len(wrong) <= 3 and focus not in wrong
    assert all(w.startswith("focus on ") and w in valid for w in wrong)
    ticks, before, score = env.ticks(), oracle.progress(), env.send("look around").score
    for action in oracle.wasted_actions():
        result = env.send(action.text)
        assert result.valid and result.score == score and not result.done
    assert env.ticks() == ticks and oracle.progress() == before
    assert env.send(f"  {focus.upper()} ").score > 0  # matched after strip/lower
    assert oracle.progress() == before + 1


def test_valid_actions_leave_the_engine_rng_alone(env):
    # The art studio holds look-alike paint cups, which the engine names with random draws.
    env.reset(instance("boil", 1))
    first = env.valid_actions()
    assert len(first) > 100 and first == sorted(first)
    assert env.valid_actions() == first


def test_unknown_task_raises(env):
    with pytest.raises(UnknownNameError, match="no-such-task"):
        env.reset(instance("no-such-task", 0))
    with pytest.raises(UnknownNameError, match="boil/999"):
        env.reset(instance("boil", 999))


def test_killed_jvm_raises_crash_and_restart_recovers():
    environment = ScienceWorldEnv()
    try:
        environment.reset(instance("find-animal", 0))
        pid = environment.jvm_pid
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(EnvironmentCrashed, match=r"died during step 'look around' of find-animal/0"):
            environment.send("look around")
        assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie
        environment.restart()
        _, observation = environment.reset(instance("find-animal", 0))
        assert observation.startswith("This room is called")
    finally:
        pid = environment.jvm_pid
        environment.close()
    assert not Path(f"/proc/{pid}").exists()


def test_missing_java_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingDependencyError, match="apt-get install"):
        ScienceWorldEnv()


# -- split -----------------------------------------------------------------


def test_split_counts_and_disjointness():
    split = get_benchmark("scienceworld").load_split()
    assert split.version == "scienceworld-v1"
    counts = {name: len(split.tasks(name)) for name in ("train", "val", "test_id", "test_ood")}
    assert counts == {"train": 218, "val": 73, "test_id": 73, "test_ood": 330}
    keys = {name: {(t.task, t.variation) for t in split.tasks(name)} for name in counts}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test_id"]
    assert not keys["val"] & keys["test_id"]
    in_distribution = {t for name in ("train", "val", "test_id") for t, _ in keys[name]}
    assert in_distribution == set(TRAIN_TASK_TYPES)
    assert {t for t, _ in keys["test_ood"]} == set(OOD_TASK_TYPES)
    assert set(split.topics) == set(TOPICS) == set(TRAIN_TASK_TYPES) | set(OOD_TASK_TYPES)


def test_quick_subset_is_a_subset():
    split = get_benchmark("scienceworld").load_split()
    for name, per_type in (("train", 2), ("val", 1), ("test_id", 1), ("test_ood", 1)):
        quick = split.tasks(name, quick=True)
        assert {(t.task, t.variation) for t in quick} <= {(t.task, t.variation) for t in split.tasks(name)}
        assert len(quick) == per_type * len({t.task for t in quick})
    boil = split.tasks("train", task_filter="boil")
    assert boil and {t.task for t in boil} == {"boil"}


def test_unknown_split_or_task_raises():
    split = get_benchmark("scienceworld").load_split()
    with pytest.raises(UnknownNameError, match="'dev'"):
        split.tasks("dev")
    with pytest.raises(UnknownNameError, match="'boiling'"):
        split.tasks("train", task_filter="boiling")


@pytest.mark.parametrize(
    "split_file", sorted(p.name for p in (BENCHMARKS_DIR / "splits").glob("scienceworld-*.json"))
)
def test_gold_cache_covers_every_shipped_split(split_file: str):
    """Simulated models play a variation only where its gold path is shipped (a missing one is refused)."""
    split = get_benchmark("scienceworld").load_split(str(BENCHMARKS_DIR / "splits" / split_file))
    entries = load_gold_entries(DEFAULT_GOLD_PATH)
    wanted = {(t.task, t.variation) for name in split.split_names for t in split.tasks(name)}
    assert not wanted - set(entries), sorted(wanted - set(entries))[:3]


def test_gold_generation_is_resumable(tmp_path):
    out = tmp_path / "gold.jsonl.gz"
    generate_gold_paths([("find-animal", 0)], workers=1, out=out)
    entry = load_gold_entries(out)[("find-animal", 0)]
    assert entry["actions"] == load_gold_paths(DEFAULT_GOLD_PATH)[("find-animal", 0)]
    assert entry["replay_score"] == 100 and entry["engine"]["jvm_flags"][1] == "-XX:hashCode=2"
    written = out.read_bytes()
    generate_gold_paths([("find-animal", 0)], workers=1, out=out)  # nothing missing: no JVM, no rewrite
    assert out.read_bytes() == written and list(tmp_path.iterdir()) == [out]
