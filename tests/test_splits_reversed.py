"""The held-out settings of the verdict: the reversed ScienceWorld split and the spec4 pool, checked
against what their files state."""

from __future__ import annotations

import json
from pathlib import Path

from harness.benchmarks import get_benchmark
from harness.benchmarks.scienceworld.split import (
    POWERED_SPLIT,
    REVERSED_POWERED_SPLIT_PATH,
    REVERSED_POWERED_VERSION,
    REVERSED_SPLIT_PATH,
    REVERSED_VERSION,
    TOPICS,
    build_powered_split,
    build_reversed_split,
)
from harness.pool import load_pool

SPLITS = Path(__file__).resolve().parent.parent / "benchmarks" / "splits"


def _types(split, names: tuple[str, ...]) -> set[str]:
    return {task for name in names for task in split.assignments[name]}


def test_reversed_split_swaps_the_roles_of_the_task_types():
    benchmark = get_benchmark("scienceworld")
    v1 = benchmark.load_split(None)
    reversed_ = benchmark.load_split(str(SPLITS / "scienceworld-reversed-v1.json"))
    assert reversed_.version == REVERSED_VERSION != v1.version
    for name in ("train", "val", "test_id"):
        assert set(reversed_.assignments[name]) == set(v1.assignments["test_ood"])
    assert set(reversed_.assignments["test_ood"]) == _types(v1, ("train", "val", "test_id"))
    # No variation is in two splits, and together they use exactly the variations v1 uses.
    seen: dict[tuple[str, int], str] = {}
    for name, per_task in reversed_.assignments.items():
        for task, variations in per_task.items():
            for v in variations:
                assert (task, v) not in seen, f"{task}/{v} is in {seen[(task, v)]} and {name}"
                seen[(task, v)] = name
    used = {(t, v) for per_task in v1.assignments.values() for t, vs in per_task.items() for v in vs}
    assert set(seen) == used
    # Quick subsets are drawn from their splits.
    for name, per_task in reversed_.quick.items():
        for task, variations in per_task.items():
            assert set(variations) <= set(reversed_.assignments[name][task]) and variations


def test_reversed_split_file_is_what_the_code_builds(tmp_path: Path):
    shipped = json.loads(REVERSED_SPLIT_PATH.read_text())
    counts = {task: info["engine_max_variations"] for task, info in shipped["task_types"].items()}
    rebuilt = build_reversed_split(tmp_path / "r.json", max_variations=counts)
    assert (tmp_path / "r.json").read_text() == REVERSED_SPLIT_PATH.read_text()
    assert rebuilt["procedure"].startswith("scienceworld-v1 with the roles of its task types swapped")
    assert {info["role"] for t, info in rebuilt["task_types"].items() if t in rebuilt["splits"]["train"]} == {
        "in_distribution"
    }


def test_the_reversed_split_has_a_powered_counterpart_built_the_same_way(tmp_path: Path):
    fresh = tmp_path / "reversed-powered.json"
    build_powered_split(fresh, REVERSED_SPLIT_PATH, version=REVERSED_POWERED_VERSION)
    assert (
        fresh.read_bytes() == REVERSED_POWERED_SPLIT_PATH.read_bytes()
    )  # deterministic, and what is shipped
    benchmark = get_benchmark("scienceworld")
    reversed_ = benchmark.load_split(str(REVERSED_SPLIT_PATH))
    powered = benchmark.load_split(str(REVERSED_POWERED_SPLIT_PATH))
    assert powered.version == REVERSED_POWERED_VERSION
    assert json.loads(fresh.read_text())["procedure"].startswith(
        "scienceworld-reversed-v1's splits unchanged"
    )
    for name in ("train", "val", "test_id", "test_ood"):
        assert powered.assignments[name] == reversed_.assignments[name]
    test_powered = {(t, v) for t, vs in powered.assignments[POWERED_SPLIT].items() for v in vs}
    for name in ("train", "val", "test_ood"):
        used = {(t, v) for t, vs in reversed_.assignments[name].items() for v in vs}
        assert not test_powered & used, name
    # Its types and weights are test_id's; test_id's own variations come back only where a type has too few
    # spare ones (those are played more often instead).
    test_id = reversed_.assignments["test_id"]
    assert set(powered.assignments[POWERED_SPLIT]) == set(test_id)
    weights = powered.weights(POWERED_SPLIT)
    for task, variations in test_id.items():
        assert weights[task] == len(variations) / sum(map(len, test_id.values()))
        reused = set(powered.assignments[POWERED_SPLIT][task]) & set(variations)
        assert not reused or powered.plays(POWERED_SPLIT, task) > 1, task


def test_spec4_pool_has_the_pattern_its_header_states():
    pool = load_pool("spec4")
    profiles = {m.name: m.simulated for m in pool.spec.models}
    assert (
        len(profiles) == 4
        and not pool.spec.calibration
        and "No model is strong everywhere" in (pool.spec.specialization)
    )
    topics = sorted(set(TOPICS.values()))

    def ordinary(name: str, topic: str) -> float:
        return profiles[name].skill_for(topic)

    def critical(name: str, topic: str) -> float:
        return ordinary(name, topic) * profiles[name].critical_skill

    best_ordinary = {t: max(profiles, key=lambda n, t=t: ordinary(n, t)) for t in topics}
    assert {best_ordinary[t] for t in ("biology", "genetics")} == {"specialist-life"}
    assert {best_ordinary[t] for t in topics if t not in ("biology", "genetics")} == {"specialist-physical"}
    assert all(max(profiles, key=lambda n, t=t: critical(n, t)) == "critic-large" for t in topics)
    # No model is strong on every topic on ordinary turns; critic-large is the dearest, generalist-mini the cheapest.
    assert all(min(ordinary(n, t) for t in topics) < 0.8 for n in profiles)
    price = {m.name: m.price.output_per_mtok for m in pool.spec.models}
    assert max(price, key=price.get) == "critic-large" and min(price, key=price.get) == "generalist-mini"
