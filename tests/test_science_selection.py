"""Selection on val and seed variance: the rule on a hand-made val/test table, the report's headline
from the val-selected point (the test-selected one labelled oracle), and the hierarchical bootstrap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.config import (
    BenchmarkDef,
    CollectStage,
    LearnedRouter,
    RouterSpec,
    RunConfig,
    SelectStage,
    to_plain,
)
from harness.errors import ConfigError
from harness.frontier import hierarchical_paired_bootstrap
from harness.pipeline import BenchmarkRun, replicate
from harness.records import EpisodeRecord, TurnRecord
from harness.report import write_report
from harness.trajectory import RunStore

PRICES = {
    "cheap": {"input_per_mtok": 0.1, "output_per_mtok": 0.4, "version": "test"},
    "strong": {"input_per_mtok": 5.0, "output_per_mtok": 20.0, "version": "test"},
}
# point -> split -> (per-episode scores, cost per episode). On val the rule picks lam=1 (the cheapest
# point reaching strong's 65); on test_id the same rule would pick lam=5 (85 >= 75 at $0.05).
TABLE = {
    "single:cheap": {"val": ([10, 20, 30, 40], 0.02), "test_id": ([10, 20, 30, 40], 0.02)},
    "single:strong": {"val": ([50, 60, 70, 80], 1.0), "test_id": ([60, 70, 80, 90], 1.2)},
    "toy@lam=0": {"val": ([60, 70, 80, 90], 1.0), "test_id": ([70, 80, 90, 100], 1.0)},
    "toy@lam=1": {"val": ([55, 65, 75, 85], 0.3), "test_id": ([40, 50, 60, 70], 0.3)},
    "toy@lam=5": {"val": ([30, 40, 50, 60], 0.05), "test_id": ([70, 80, 90, 100], 0.05)},
}
TASKS = ["boil", "boil", "melt", "melt"]


def records(point: str, split: str, shift: float = 0.0) -> list[EpisodeRecord]:
    scores, cost = TABLE[point][split]
    return [
        EpisodeRecord(
            episode=f"scienceworld/{TASKS[i]}/{i}",
            benchmark="scienceworld",
            task=TASKS[i],
            variation=i,
            split=split,
            seed=0,
            router=point,
            score=s + shift,
            cost=cost,
            model_cost=cost,
            cost_by_model={"strong": cost},
            turns=2,
            switches=0,
            switch_rate=0.0,
        )
        for i, s in enumerate(scores)
    ]


def definition(**extra) -> BenchmarkDef:
    return BenchmarkDef(
        name="toybench",
        fixed_routers=[RouterSpec("single", {"model": "cheap"}), RouterSpec("single", {"model": "strong"})],
        learned=[LearnedRouter("mtrouter", lambdas=[0.0, 1.0, 5.0])],
        collect=CollectStage(seeds=[0, 1]),
        **extra,
    )


def candidates(split: str) -> pd.DataFrame:
    rows = []
    for lam in (0.0, 1.0, 5.0):
        scores, cost = TABLE[f"toy@lam={lam:g}"][split]
        rows.append({"lam": lam, "mean_score": float(np.mean(scores)), "mean_cost": cost})
    return pd.DataFrame(rows)


# --- the rule ----------------------------------------------------------------
def test_cheapest_reaching_best_single_on_val_differs_from_test():
    from harness.results import select_point

    on_val = select_point(candidates("val"), "cheapest_reaching_best_single", reference_score=65.0)
    on_test = select_point(candidates("test_id"), "cheapest_reaching_best_single", reference_score=75.0)
    assert (on_val["lam"], on_val["score"], on_val["reached_best_single"]) == (1.0, 70.0, True)
    assert on_test["lam"] == 5.0


def test_highest_val_score_and_unreachable_reference():
    from harness.results import select_point

    assert select_point(candidates("val"), "highest_val_score")["lam"] == 0.0
    fallback = select_point(candidates("val"), "cheapest_reaching_best_single", reference_score=90.0)
    assert (fallback["lam"], fallback["reached_best_single"]) == (0.0, False)
    with pytest.raises(ValueError, match="unknown selection rule"):
        select_point(candidates("val"), "best_on_test")


def test_select_stage_refuses_a_test_split_and_an_unknown_rule():
    with pytest.raises(ConfigError, match="test split"):
        SelectStage(split="test_id")
    with pytest.raises(ConfigError, match="select.rule"):
        SelectStage(rule="lowest_cost")


# --- the pipeline's selection stage and the report ----------------------------
class TableRun(BenchmarkRun):
    """The real selection stage over the hand-made table instead of played episodes."""

    def __init__(self, d: BenchmarkDef, results: Path, shift: float = 0.0):
        super().__init__(d, results)
        self.shift = shift
        self.played: list[tuple[str, str]] = []

    def run(self, config: RunConfig, out: Path, label: str) -> list[dict]:
        point = config.router.label
        self.played.append((config.split, point))
        return records(point.replace("mtrouter@", "toy@"), config.split, self.shift)


def write_runs(bench: Path, shift: float = 0.0) -> None:
    for point, splits in TABLE.items():
        family = "single" if point.startswith("single") else "toy"
        params: dict = {"label": point}
        if family == "single":
            params["model"] = point.split(":")[1]
        else:
            params["lam"] = float(point.split("=")[1])
        for split in splits:
            store = RunStore(bench / "runs" / split / point)
            config = RunConfig(router=RouterSpec(family, params), pool="toy-pool", split=split)
            store.open(
                {
                    "run": to_plain(config),
                    "pool_sha256": "f" * 64,
                    "price_cards": PRICES,
                    "split_version": "v1",
                    "engine": "fake",
                }
            )
            for record in records(point, split, shift):
                store.record_episode(record)
                path = store.begin_episode(record.episode)
                for turn in range(2):
                    store.record_turn(path, TurnRecord(record.episode, turn, "strong", record.cost / 2, []))


def selected_bench(root: Path, shift: float = 0.0, name: str = "toybench") -> Path:
    run = TableRun(definition(select=SelectStage()), root, shift)
    run.d = BenchmarkDef(**{**run.d.__dict__, "name": name})
    chosen = run.select({"mtrouter": Path("unused")}, {})
    # the toy family stands for mtrouter in the stored runs
    assert set(run.played) == {("val", p) for p in ("single:cheap", "single:strong")} | {
        ("val", f"mtrouter@lam={lam:g}") for lam in (0.0, 1.0, 5.0)
    }
    bench = root / name
    write_runs(bench, shift)
    (bench / "benchmark.json").write_text(
        json.dumps(
            {
                "name": name,
                "selected": {"toy": chosen["mtrouter"]},
                "selection": {"rule": "cheapest_reaching_best_single", "split": "val", "quick": False},
                "reference": {"score": 0.0, "cost": 2.0},
            }
        )
    )
    return bench


def test_selection_stage_runs_only_val_and_picks_by_the_rule(tmp_path: Path):
    run = TableRun(definition(select=SelectStage()), tmp_path)
    chosen = run.select({"mtrouter": Path("unused")}, {})["mtrouter"]
    assert {split for split, _ in run.played} == {"val"}
    assert (chosen["lam"], chosen["best_single"], chosen["best_single_score"]) == (1.0, "single:strong", 65.0)


def _row(markdown: str, first_cell: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r}")


def test_report_headline_is_the_val_selected_point_and_the_oracle_is_labelled(tmp_path: Path):
    bench = selected_bench(tmp_path)
    text = write_report(bench, tmp_path / "reports").read_text()
    headline = _row(text, "toy@lam=1")
    assert headline[-2:] == ["-20.0", "-75.0%"]  # 55 vs strong's 75 on test_id; $0.3 vs $1.2
    assert (
        "toy@lam=5" not in text.split("## Selection on val")[0]
    )  # the better test point is not the headline
    selection = _row(text.split("## Selection on val")[1], "toy")
    assert selection[1] == "1" and selection[5] == "55.0" and selection[6] == "5 (oracle)"
    assert "highest val score" in text


# --- seeds -------------------------------------------------------------------
def _episodes(*per_seed: np.ndarray) -> list[list[np.ndarray]]:
    """Score differences as paired episodes, one variation each (reference 0, both costing $1)."""
    return [[np.array([[d, 0.0, 1.0, 1.0]]) for d in diffs] for diffs in per_seed]


def test_hierarchical_bootstrap_on_hand_made_numbers():
    constant = hierarchical_paired_bootstrap(_episodes(np.full(20, 5.0), np.full(30, 5.0)), n_boot=500)
    assert constant.score_diff == 5.0 and constant.score_diff_ci == (5.0, 5.0) and constant.p_le_zero == 0.0
    assert constant.cost_ratio == 1.0 and constant.cost_ratio_ci == (1.0, 1.0)
    # Two seeds that disagree completely: the seed level dominates the interval.
    split = hierarchical_paired_bootstrap(_episodes(np.full(50, 10.0), np.full(50, -10.0)), n_boot=2000)
    assert split.score_diff == 0.0 and split.score_diff_ci == (-10.0, 10.0)
    assert 0.6 < split.p_le_zero < 0.9  # resamples (B,B) and (A,B) in either order: 3/4 at or below 0
    # Seed means 2, 4 and 6, each with spread inside: the mean is their mean.
    three = hierarchical_paired_bootstrap(
        _episodes(np.array([1.0, 3.0]), np.array([3.0, 5.0]), np.array([5.0, 7.0]))
    )
    assert three.score_diff == pytest.approx(4.0) and three.score_diff_ci[0] < 4.0 < three.score_diff_ci[1]
    assert (three.seeds, three.variations, three.episodes) == (3, 6, 6)
    with pytest.raises(ValueError):
        hierarchical_paired_bootstrap([])


def test_replicate_shifts_exploration_and_training_seeds():
    d = definition(seeds=[0, 1, 2])
    r = replicate(d, 2)
    assert (r.name, r.seed, r.seeds, r.collect.seeds) == ("s2", 2, None, [2000, 2001])
    assert r.learned[0].params["seed"] == 2
    assert replicate(d, 0).collect.seeds == [0, 1]


def test_seed_report_gives_spread_and_paired_test(tmp_path: Path):
    parent = tmp_path / "seeded"
    for seed, shift in ((0, 0.0), (1, 10.0), (2, -10.0)):
        selected_bench(parent / "seeds", shift, name=f"s{seed}")
    (parent / "benchmark.json").write_text(
        json.dumps({"name": "seeded", "replicates": {str(s): f"seeds/s{s}" for s in (0, 1, 2)}})
    )
    text = write_report(parent, tmp_path / "reports").read_text()
    row = _row(text, "toy (val-selected)")
    # the learned router and the best single move together per seed: the paired difference is exactly -20
    assert row[1:5] == ["test_id", "3", "1, 1, 1", "55.0 ± 10.0"]
    assert row[7] == "-20.0 [-20.0, -20.0]" and row[8] == "1.000"
    assert (tmp_path / "reports" / "seeded" / "s1.md").exists()
