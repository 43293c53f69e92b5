"""Learned routers measured honestly: the non-inferiority selection rule, repeated plays of a variation
(distinct, reproducible episode seeds, intervals that resample variations before repeats), and the
verdict against the val-best single model on hand-made results with a known answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.agent import episode_seed
from harness.batch import prepare_check
from harness.benchmarks import get_benchmark
from harness.config import (
    BenchmarkDef,
    CollectStage,
    LearnedRouter,
    RouterSpec,
    RunConfig,
    SelectionRule,
    SelectStage,
    VerdictSpec,
    load_benchmark,
    to_plain,
)
from harness.errors import ConfigError
from harness.frontier import clustered_bootstrap_point, paired_bootstrap_point
from harness.pipeline import BenchmarkRun
from harness.records import EpisodeRecord, TurnRecord
from harness.report import write_report
from harness.results import load_points, select_point
from harness.trajectory import RunStore
from harness.verdict import paired_lower_bound, verdict_margin, verdict_rows, verdict_text


# --- the non-inferiority rule on hand-made val/test tables ----------------------
def table(rows: list[tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["lam", "mean_score", "mean_cost"])


# lam -> (score, $/episode): lam 0 scores most and costs most; lam 0.5 gives up 3 points for a third of the cost.
VAL = table([(0.0, 75.0, 1.0), (0.5, 69.0, 0.3), (2.0, 45.0, 0.05)])
TEST = table([(0.0, 70.0, 1.1), (0.5, 72.0, 0.35), (2.0, 60.0, 0.06)])


def test_cheapest_noninferior_takes_the_cheaper_point_within_the_margin():
    # The best single model scores 72 on val: only lam 0 reaches it; lam 0.5 is within 5 points.
    reaching = select_point(VAL, "cheapest_reaching_best_single", reference_score=72.0)
    within = select_point(VAL, "cheapest_noninferior", reference_score=72.0, margin=5.0)
    assert reaching["lam"] == 0.0
    assert (within["lam"], within["score"], within["margin"], within["reached_best_single"]) == (
        0.5,
        69.0,
        5.0,
        True,
    )
    # A margin of 2 points excludes lam 0.5 (69 < 70): back to lam 0.
    assert select_point(VAL, "cheapest_noninferior", reference_score=72.0, margin=2.0)["lam"] == 0.0
    # Nothing within the margin: the highest val score, saying so.
    none = select_point(VAL, "cheapest_noninferior", reference_score=90.0, margin=5.0)
    assert (none["lam"], none["reached_best_single"]) == (0.0, False)
    # Applied to the test table the same rule would pick another point: the choice depends on the split it sees.
    assert select_point(TEST, "cheapest_noninferior", reference_score=80.0, margin=10.0)["lam"] == 0.5
    assert select_point(VAL, "cheapest_noninferior", reference_score=80.0, margin=10.0)["lam"] == 0.0


def test_the_margin_belongs_to_the_noninferiority_rule_only():
    with pytest.raises(ValueError, match="needs a margin"):
        select_point(VAL, "cheapest_noninferior", reference_score=72.0)
    with pytest.raises(ValueError, match="takes no margin"):
        select_point(VAL, "highest_val_score", margin=5.0)
    with pytest.raises(ConfigError, match="needs select.margin"):
        SelectStage(rule="cheapest_noninferior")
    with pytest.raises(ConfigError, match="select.margin applies to rule cheapest_noninferior"):
        SelectStage(margin=5.0)
    with pytest.raises(ConfigError, match="select.repeats"):
        SelectStage(repeats=0)
    with pytest.raises(ConfigError, match="verdict.margin"):
        VerdictSpec(margin=-1.0)


def test_an_unstated_margin_is_five_points_of_the_benchmarks_own_score(tmp_path: Path):
    """5 ScienceWorld points, but 0.05 of HLE's accuracy: a margin of 5 on a 0-1 score would call anything
    non-inferior."""
    from harness.config import load_benchmark

    assert verdict_margin({"benchmark": "scienceworld", "definition": {"verdict": {}}}) == 5.0
    assert verdict_margin({"benchmark": "hle", "definition": {"verdict": {"margin": None}}}) == 0.05
    assert verdict_margin({"benchmark": "hle", "definition": {"verdict": {"margin": 0.1}}}) == 0.1
    assert BenchmarkRun(load_benchmark("hle-quick"), tmp_path).margin == 0.05
    assert BenchmarkRun(load_benchmark("quick"), tmp_path / "sw").margin == 5.0


def test_the_bound_rule_takes_the_cheapest_point_that_would_pass_the_verdict_on_val():
    # lam 0.5's mean is within 5 points (69 vs 72) but its paired bound is -8: a lucky draw would pass the
    # point-estimate rule; only lam 0, bound -4, passes the verdict's own test on val.
    candidates = VAL.assign(score_diff_low=[-4.0, -8.0, -30.0])
    chosen = select_point(candidates, "cheapest_bound_noninferior", margin=5.0)
    assert (chosen["lam"], chosen["reached_best_single"], chosen["score_diff_low"]) == (0.0, True, -4.0)
    assert select_point(candidates, "cheapest_bound_noninferior", margin=10.0)["lam"] == 0.5
    # Nothing passes: the point with the highest bound (not the highest score), saying so.
    shifted = VAL.assign(score_diff_low=[-9.0, -7.0, -30.0])
    none = select_point(shifted, "cheapest_bound_noninferior", margin=5.0)
    assert (none["lam"], none["reached_best_single"]) == (0.5, False)
    with pytest.raises(ValueError, match="needs each candidate's score_diff_low"):
        select_point(VAL, "cheapest_bound_noninferior", margin=5.0)
    with pytest.raises(ValueError, match="needs a margin"):
        select_point(candidates, "cheapest_bound_noninferior")
    assert SelectStage(rule="cheapest_bound_noninferior", margin=5.0).margin == 5.0


def test_the_val_bound_is_the_verdicts_lower_bound_on_one_replicate(tmp_path: Path):
    single, learned = RouterSpec("single", {"model": "b"}), RouterSpec("mtrouter", {"lam": 0.1})
    _write_run(tmp_path / "single", single, "val", 0, _base, 2.0)
    _write_run(tmp_path / "close", learned, "val", 0, lambda t, v, r: _base(t, v, r) + _gap(t, v, r), 0.5)
    _write_run(tmp_path / "flat", learned, "val", 0, lambda t, v, r: _base(t, v, r) - 3.0, 0.5)
    # Every paired difference lies in [-4, -2], so every resample's mean and the bound do too.
    assert -4.0 <= paired_lower_bound(tmp_path / "close", tmp_path / "single") <= -2.0
    # A constant difference of -3 has no spread: the bound is -3 exactly.
    assert paired_lower_bound(tmp_path / "flat", tmp_path / "single") == pytest.approx(-3.0)
    # No shared episode: no bound.
    (tmp_path / "empty").mkdir()
    assert np.isnan(paired_lower_bound(tmp_path / "empty", tmp_path / "single"))


# --- repeats: distinct, deterministic episode seeds ----------------------------
def test_repeats_give_each_play_its_own_reproducible_episode_seed():
    split = get_benchmark("scienceworld").load_split(None)
    once = split.tasks("val", quick=True)
    thrice = split.tasks("val", quick=True, repeats=3)
    assert len(thrice) == 3 * len(once)
    assert thrice[: len(once)] == once  # repeat 0 is the unrepeated run: same keys, same seeds
    keys = [t.key for t in thrice]
    assert len(set(keys)) == len(keys) and keys[len(once)].endswith("/r1")
    seeds = [episode_seed(0, t) for t in thrice]
    assert len(set(seeds)) == len(seeds)  # every play of every variation draws differently
    assert seeds == [episode_seed(0, t) for t in split.tasks("val", quick=True, repeats=3)]
    assert seeds != [episode_seed(1, t) for t in thrice]  # and the draws follow the definition's seed
    # The run configuration carries it through to the batch's task list.
    config = RunConfig(router=RouterSpec("single", {"model": "gpt-5"}), split="val", quick=True, repeats=3)
    assert [t.key for t in prepare_check(config)[3]] == keys
    with pytest.raises(ConfigError, match="repeats"):
        RunConfig(router=RouterSpec("random"), repeats=0)


def test_the_pipeline_plays_val_and_test_with_their_own_repeats(tmp_path: Path):
    d = BenchmarkDef(
        name="rep",
        fixed_routers=[RouterSpec("single", {"model": "gpt-5"})],
        learned=[LearnedRouter("mtrouter", lambdas=[0.0])],
        collect=CollectStage(seeds=[0]),
        select=SelectStage(rule="cheapest_noninferior", margin=5.0, repeats=3),
        eval_repeats=5,
        seed=7,
    )
    run = BenchmarkRun(d, tmp_path)
    assert (run.repeats("val"), run.repeats("test_id"), run.repeats("test_ood"), run.repeats("train")) == (
        3,
        5,
        5,
        1,
    )
    config = run.config(d.fixed_routers[0], "val", True, repeats=run.repeats("val"))
    assert (config.seed, config.repeats) == (7, 3)
    run.validate()


def test_a_definition_that_selects_and_evaluates_one_split_with_two_repeat_counts_is_refused(tmp_path: Path):
    path = tmp_path / "clash.yaml"
    path.write_text(
        "name: clash\nfixed_routers: [{name: single, params: {model: gpt-5}}]\n"
        "select: {rule: highest_val_score, split: val, repeats: 3}\neval_splits: [val]\neval_repeats: 5\n"
    )
    with pytest.raises(ConfigError, match="different repeats"):
        load_benchmark(str(path))


def test_repeats_of_a_variation_are_resampled_together():
    # Two variations, each played five times with the same outcome: 0 and 100.
    scores = [0.0] * 5 + [100.0] * 5
    clusters = ["a"] * 5 + ["b"] * 5
    clustered = clustered_bootstrap_point(scores, [1.0] * 10, clusters, n_boot=4000)
    naive = paired_bootstrap_point(scores, [1.0] * 10, n_boot=4000)
    # Resampling the two variations gives means 0, 50 or 100: the interval spans all of it; treating the ten
    # plays as ten independent episodes claims a far narrower one.
    assert clustered.score == 50.0 and clustered.score_ci == (0.0, 100.0)
    assert 10.0 < naive.score_ci[0] < naive.score_ci[1] < 90.0


def test_the_repeats_noise_is_counted_once_through_the_variation_means():
    # Every variation has the same mean (50) over its repeats: the mean over variations cannot move, so a
    # cluster bootstrap gives a zero-width interval. Resampling the repeats too would count their spread
    # again and claim an interval around 50.
    scores = [0.0, 100.0] * 4
    clusters = ["a", "a", "b", "b", "c", "c", "d", "d"]
    point = clustered_bootstrap_point(scores, [1.0] * 8, clusters, n_boot=2000)
    assert point.score == 50.0 and point.score_ci == (50.0, 50.0)


# --- the verdict on a hand-made results directory ------------------------------
PRICES = {m: {"input_per_mtok": 1.0, "output_per_mtok": 1.0, "version": "test"} for m in ("a", "b")}
VARIATIONS = [("boil", v) for v in range(4)] + [("melt", v) for v in range(4)]
REPEATS = 3


def _base(task: str, variation: int, repeat: int) -> float:
    """What the single model scores: spread over the whole range, so an unpaired test could tell nothing."""
    return float((37 * variation + 11 * repeat + (50 if task == "melt" else 0)) % 181 - 90)


def _gap(task: str, variation: int, repeat: int) -> float:
    """The learned router's score minus the single model's on the same episode: always in [-4, -2]."""
    return -2.0 - (variation + repeat + (task == "melt")) % 3


def _write_run(path: Path, router: RouterSpec, split: str, seed: int, score, cost: float) -> None:
    store = RunStore(path)
    store.open(
        {
            "run": to_plain(
                RunConfig(router=router, pool="toy-pool", split=split, seed=seed, repeats=REPEATS)
            ),
            "pool_sha256": "f" * 64,
            "price_cards": PRICES,
            "split_version": "v1",
            "engine": "fake",
        }
    )
    for repeat in range(REPEATS):
        for task, variation in VARIATIONS:
            key = f"scienceworld/{task}/{variation}" + (f"/r{repeat}" if repeat else "")
            store.record_episode(
                EpisodeRecord(
                    episode=key,
                    benchmark="scienceworld",
                    task=task,
                    variation=variation,
                    split=split,
                    seed=seed,
                    router=router.label,
                    score=score(task, variation, repeat),
                    cost=cost,
                    cost_by_model={"b": cost},
                    turns=2,
                    switch_rate=0.0,
                    repeat=repeat,
                )
            )
            turns = store.begin_episode(key)
            for turn in range(2):
                store.record_turn(turns, TurnRecord(key, turn, "b", cost / 2, []))
    store.close()


ALSO = "cheapest_bound_noninferior@5"  # the further rule of verdict_bench's definition


def verdict_bench(root: Path, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """A seeded benchmark with two replicates: mtrouter's val-selected point is 2 to 4 points below the
    val-best single model on every paired test episode, at a quarter of its cost; the further rule
    ``ALSO`` chose lam 0 instead, exactly one point above the single model at half its cost."""
    single = RouterSpec("single", {"model": "b"})
    at_zero = RouterSpec("mtrouter", {"lam": 0.0, "label": "mtrouter@lam=0"})
    for seed in seeds:
        bench = root / "seeds" / f"s{seed}"
        lam = 0.1 * (seed + 1)
        learned = RouterSpec("mtrouter", {"lam": lam, "label": f"mtrouter@lam={lam:g}"})
        for split in ("test_id", "test_ood"):
            _write_run(bench / "runs" / split / single.label, single, split, seed, _base, 2.0)
            _write_run(
                bench / "runs" / split / learned.label,
                learned,
                split,
                seed,
                lambda t, v, r: _base(t, v, r) + _gap(t, v, r),
                0.5,
            )
            _write_run(
                bench / "runs" / split / at_zero.label,
                at_zero,
                split,
                seed,
                lambda t, v, r: _base(t, v, r) + 1,
                1.0,
            )
        (bench / "benchmark.json").write_text(
            json.dumps(
                {
                    "name": f"s{seed}",
                    "selected": {
                        "mtrouter": {
                            "lam": lam,
                            "score": 70.0,
                            "cost": 0.5,
                            "best_single": single.label,
                            "split": "val",
                            "also": {ALSO: {"lam": 0.0, "score": 74.0, "cost": 1.0, "score_diff_low": -1.5}},
                        }
                    },
                    "selection": {
                        "rule": "cheapest_noninferior",
                        "split": "val",
                        "margin": 5.0,
                        "repeats": 3,
                    },
                    "definition": {"seed": seed, "eval_repeats": REPEATS},
                }
            )
        )
    (root / "benchmark.json").write_text(
        json.dumps(
            {
                "name": "verdictbench",
                "replicates": {str(s): f"seeds/s{s}" for s in seeds},
                "definition": {
                    "verdict": {"margin": 5.0},
                    "eval_repeats": REPEATS,
                    "select": {
                        "rule": "cheapest_noninferior",
                        "split": "val",
                        "margin": 5.0,
                        "repeats": 3,
                        "also": [{"rule": "cheapest_bound_noninferior", "margin": 5.0}],
                    },
                },
            }
        )
    )
    return root


def test_verdict_flips_with_the_margin_on_a_known_answer(tmp_path: Path):
    bench = verdict_bench(tmp_path / "verdictbench")
    gaps = [_gap(t, v, r) for t, v in VARIATIONS for r in range(REPEATS)]
    at5 = {row["split"]: row for row in verdict_rows(bench, margin=5.0)}
    at1 = {row["split"]: row for row in verdict_rows(bench, margin=1.0)}
    assert set(at5) == {"test_id", "test_ood"}
    for split in ("test_id", "test_ood"):
        row = at5[split]
        # Every paired difference is in [-4, -2], so every resample's mean is too, whatever the draws.
        assert row["score_diff"] == pytest.approx(np.mean(gaps))
        assert -4.0 <= row["score_diff_ci"][0] <= row["score_diff_ci"][1] <= -2.0
        assert row["cost_ratio"] == pytest.approx(0.25) and row["cost_ratio_ci"] == pytest.approx(
            [0.25, 0.25]
        )
        assert (row["n_seeds"], row["n_variations"], row["n_episodes"]) == (2, 16, 48)
        assert row["lam"] == [0.1, 0.2] and row["best_single"] == ["single:b", "single:b"]
        # Lower bound >= -4 > -5: non-inferior at 5 points; upper bound <= -2 < -1: not at 1 point, nor better.
        assert (row["non_inferior"], row["better"]) == (True, False)
        assert (at1[split]["non_inferior"], at1[split]["better"]) == (False, False)
        assert (
            at1[split]["score_diff_ci"] == row["score_diff_ci"]
        )  # the margin moves the bar, not the interval


def test_failed_episodes_leave_the_verdict_undecided_whatever_the_pairs_left_say(tmp_path: Path):
    """The pairs that survive failures are not the split (failures cluster by task): the verdict of the
    known non-inferior answer above becomes undecided once the single model failed two episodes."""
    from harness.records import EPISODE_FAILURE

    bench = verdict_bench(tmp_path / "verdictbench")
    run = bench / "seeds" / "s1" / "runs" / "test_id" / "single:b" / "episodes.jsonl"
    lines = run.read_text().splitlines()
    for i in (0, 1):
        record = json.loads(lines[i]) | {"status": "failed", "failure": EPISODE_FAILURE, "score": None}
        lines[i] = json.dumps(record | {"error": "ConfigError: no gold path"})
    run.write_text("\n".join(lines) + "\n")
    rows = {row["split"]: row for row in verdict_rows(bench, margin=5.0)}
    assert rows["test_id"]["failed_episodes"] == 2 and rows["test_ood"]["failed_episodes"] == 0
    assert (rows["test_id"]["non_inferior"], rows["test_id"]["better"]) == (False, False)
    assert rows["test_ood"]["non_inferior"] is True
    assert verdict_text(rows["test_id"]) == "undecided: 2 failed episodes leave pairs that are not the split"


def test_a_seed_replicates_failed_run_is_a_problem_of_the_benchmark(tmp_path: Path):
    """The exit code of ``harness benchmark`` reads these: a replicate's runs count like the parent's."""
    from harness.config import load_benchmark
    from harness.records import INFRASTRUCTURE_FAILURE

    bench = verdict_bench(tmp_path / "verdict")
    run = BenchmarkRun(load_benchmark("verdict"), tmp_path)
    assert run.problems() == []
    path = bench / "seeds" / "s1" / "runs" / "test_ood" / "single:b" / "episodes.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = json.dumps(json.loads(lines[0]) | {"status": "failed", "failure": INFRASTRUCTURE_FAILURE})
    path.write_text("\n".join(lines) + "\n")
    (problem,) = run.problems()
    assert "1 of 24 episodes of" in problem and "seeds/s1/runs/test_ood/single:b" in problem


def test_a_further_rule_gets_its_own_verdict_on_the_same_episodes(tmp_path: Path):
    bench = verdict_bench(tmp_path / "verdictbench")
    rows = {row["split"]: row for row in verdict_rows(bench, margin=5.0, rule=ALSO)}
    for split in ("test_id", "test_ood"):
        row = rows[split]  # lam 0 is one point above the single model on every episode, at half its cost
        assert row["lam"] == [0.0, 0.0] and row["score_diff"] == pytest.approx(1.0)
        assert row["score_diff_ci"] == pytest.approx([1.0, 1.0]) and row["cost_ratio"] == pytest.approx(0.5)
        assert (row["better"], row["n_episodes"]) == (True, 48)
    assert verdict_rows(bench, margin=5.0, rule="highest_val_score") == []  # a rule nobody stated: no rows
    text = write_report(bench, tmp_path / "reports").read_text()
    verdict = text.split("## Verdict")[1].split("## Across seeds")[0]
    beside = verdict.split("Beside it, rule `cheapest_bound_noninferior` (margin 5)")[1]
    assert "| mtrouter | test_id | 0, 0 | `single:b` |" in beside and "**better" in beside
    child = (tmp_path / "reports" / "verdictbench" / "s0.md").read_text()
    assert "`cheapest_bound_noninferior@5` chose λ=0 for mtrouter" in child and "paired bound -1.5" in child


def test_further_rules_are_checked_like_the_headline_one(tmp_path: Path):
    with pytest.raises(
        ConfigError, match="select.also.rule cheapest_bound_noninferior needs select.also.margin"
    ):
        SelectStage(also=[SelectionRule("cheapest_bound_noninferior")])
    with pytest.raises(ConfigError, match="select.also repeats a rule"):
        SelectStage(
            rule="cheapest_noninferior", margin=5.0, also=[SelectionRule("cheapest_noninferior", 5.0)]
        )
    stage = SelectStage(rule="cheapest_noninferior", margin=5.0, also=[SelectionRule("highest_val_score")])
    assert [(r.rule, r.margin) for r in stage.rules] == [
        ("cheapest_noninferior", 5.0),
        ("highest_val_score", None),
    ]
    stray = SelectStage(also=[SelectionRule("highest_val_score", splits=["val"])])
    with pytest.raises(
        ConfigError, match="select.also rule highest_val_score names 'val', which is not an eval"
    ):
        BenchmarkDef(name="stray", fixed_routers=[RouterSpec("single", {"model": "gpt-5"})], select=stray)


def test_the_report_opens_with_the_verdict(tmp_path: Path):
    bench = verdict_bench(tmp_path / "verdictbench")
    text = write_report(bench, tmp_path / "reports").read_text()
    assert text.index("## Verdict") < text.index("## Across seeds")
    verdict = text.split("## Verdict")[1].split("## Across seeds")[0]
    assert "non-inferior at margin 5" in verdict and "cheapest_noninferior" in verdict
    assert "| mtrouter | test_id | 0.1, 0.2 | `single:b` |" in verdict
    assert "| mtrouter | OOD |" in verdict
    # Each seed's own report has its verdict too, over its one replicate.
    child = (tmp_path / "reports" / "verdictbench" / "s0.md").read_text()
    assert "## Verdict" in child.split("## Comparison")[0] and "| mtrouter | test_id | 0.1 |" in child


def test_the_reports_opening_quotes_the_verdict_where_there_is_one(tmp_path: Path):
    bench = verdict_bench(tmp_path / "verdictbench", seeds=(0,))
    write_report(bench, tmp_path / "reports")
    child = (tmp_path / "reports" / "verdictbench" / "s0.md").read_text()
    opening = child.split("\n\n")[1]
    row = next(r for r in verdict_rows(bench / "seeds" / "s0", 5.0) if r["split"] == "test_id")
    low, high = row["score_diff_ci"]
    # 2 to 4 points below the val-best single model at a quarter of its cost: non-inferior at margin 5.
    assert opening.startswith("On test_id the val-best single model is `single:b`")
    assert (
        f"The cheapest that matches it (non-inferior at margin 5) is `mtrouter@lam=0.1` at its val-selected λ:"
        f" Δscore {row['score_diff']:+.1f} [{low:+.1f}, {high:+.1f}] at 25% of its cost" in opening
    )
    assert "mtrouter@lam=0`" not in opening  # evaluated, but chosen only by the further rule


def test_companion_verdicts_follow_the_headline_one(tmp_path: Path):
    bench = verdict_bench(tmp_path / "verdictbench")
    other = verdict_bench(tmp_path / "other-pool", seeds=(0,))
    manifest = json.loads((other / "benchmark.json").read_text())
    manifest["name"] = "other-pool"
    manifest["definition"]["description"] = "The verdict on another pool."  # where a benchmark run keeps it
    (other / "benchmark.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="companion .*missing-bench"):
        write_report(bench, tmp_path / "refused", companions=[tmp_path / "missing-bench"])
    assert not (tmp_path / "refused").exists()
    text = write_report(bench, tmp_path / "reports", companions=[other]).read_text()
    verdict = text.split("## Verdict")[1].split("## Across seeds")[0]
    headline, companion = verdict.split("### other-pool")
    assert "| mtrouter | test_id | 0.1, 0.2 |" in headline
    assert "The verdict on another pool. Its own report: `other-pool.md`." in companion
    assert "| mtrouter | test_id | 0.1 | `single:b` |" in companion  # its one seed's λ


def test_stage_a_spend_of_each_replicate_stands_beside_the_companions(tmp_path: Path):
    """Sticky and branching Stage A are compared at equal budget: the report puts each replicate's spend,
    as its benchmark.json records it, in one table with the companion's."""
    bench = verdict_bench(tmp_path / "verdictbench")
    other = verdict_bench(tmp_path / "branchy", seeds=(0,))
    manifest = json.loads((other / "benchmark.json").read_text())
    (other / "benchmark.json").write_text(json.dumps({**manifest, "name": "branchy"}))
    sticky = {
        "router": {"name": "sticky-random", "params": {"switch_prob": 0.03}},
        "split": "train",
        "seeds": [0, 1],
    }
    for root, collect, dollars in ((bench, sticky, 36.0), (other, {**sticky, "seeds": [0], "branch": {
        "continuation": {"name": "sticky-random"}, "episodes": 115, "states_per_episode": 1, "models": 3,
        "prefix": "log"}}, 24.5)):  # fmt: skip
        for child in sorted((root / "seeds").iterdir()):
            manifest = json.loads((child / "benchmark.json").read_text())
            manifest["definition"]["collect"] = collect
            manifest["exploration_spend"] = {"episodes": 654, "model_calls": 20790, "prompt_tokens": 33_000_000,
                                             "completion_tokens": 12_900_000, "tokens": 45_900_000,
                                             "dollars": dollars, "engine_resets": 654, "engine_steps": 18319}  # fmt: skip
            (child / "benchmark.json").write_text(json.dumps(manifest))
    text = write_report(bench, tmp_path / "reports", companions=[other]).read_text()
    section = text.split("## Stage A: exploration spend")[1].split("## Across seeds")[0]
    rows = [
        line
        for line in section.splitlines()
        if line.startswith("| verdictbench") or line.startswith("| branchy")
    ]
    assert [r.split(" | ")[:2] for r in rows] == [
        ["| verdictbench", "0"],
        ["| verdictbench", "1"],
        ["| branchy", "0"],
    ]
    assert (
        "`sticky-random` (switch_prob=0.03) on train, 2 collection seed(s) | 654 | 20,790 | 45.9 | 36.0 | 18,319 |"
        in rows[0]
    )
    assert (
        "branched: 115 parents x 1 state(s) x 3 models, `sticky-random` continuation, prefix log" in rows[2]
    )
    assert "| 24.5 |" in rows[2]
    plain = write_report(verdict_bench(tmp_path / "plain"), tmp_path / "plain-reports").read_text()
    assert "## Stage A" not in plain  # nothing recorded, no empty table


def test_per_point_intervals_resample_variations_when_they_repeat(tmp_path: Path):
    bench = verdict_bench(tmp_path / "verdictbench", seeds=(0,)) / "seeds" / "s0"
    points = load_points(bench).set_index(["split", "point"])
    row = points.loc[("test_id", "single:b")]
    scores = [_base(t, v, r) for r in range(REPEATS) for t, v in VARIATIONS]
    assert row["n"] == 24 and row["mean_score"] == pytest.approx(np.mean(scores))
    naive = paired_bootstrap_point(scores, [2.0] * len(scores), n_boot=2000)
    assert row["score_hi"] - row["score_lo"] > (naive.score_ci[1] - naive.score_ci[0]) * 0.5


def test_only_the_val_best_single_model_is_evaluated_when_asked(tmp_path: Path):
    fixed = [RouterSpec("single", {"model": m}) for m in ("gpt-5", "gpt-oss-120b")] + [RouterSpec("random")]
    d = BenchmarkDef(name="few", fixed_routers=fixed, select=SelectStage(), eval_fixed="val_best_single")
    run = BenchmarkRun(d, tmp_path)
    chosen = run.evaluated_fixed({"mtrouter": {"lam": 0.0, "best_single": "single:gpt-oss-120b"}})
    assert [s.label for s in chosen] == ["single:gpt-oss-120b", "random"]
    with pytest.raises(ConfigError, match="needs a select stage"):
        BenchmarkDef(name="x", fixed_routers=fixed, eval_fixed="val_best_single")


# --- end to end on the counter plug-in (no Java) --------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("rule", ["cheapest_noninferior", "cheapest_bound_noninferior"])
def test_benchmark_with_repeats_writes_its_verdict_and_resumes(
    plugin_distribution, tmp_path: Path, rule: str
):
    import yaml
    from typer.testing import CliRunner

    from harness.cli import app

    definition = {
        "name": "counter-verdict",
        "benchmark": "counter",
        "pool": str(plugin_distribution / "toy_pool.yaml"),
        "quick": True,
        "workers": 1,
        "collect": {"router": {"name": "sticky-random", "params": {"switch_prob": 0.3}}, "seeds": [0]},
        "fixed_routers": [
            {"name": "single", "params": {"model": m}} for m in ("careful", "sloppy", "middling")
        ],
        "learned": [{"name": "toy-ridge", "lambdas": [0.0, 0.5]}],
        "select": {
            "rule": rule,
            "also": [{"rule": "highest_val_score", "splits": ["test_id"]}],
            "margin": 5.0,
            "split": "val",
            "quick": True,
            "repeats": 2,
        },
        "eval_repeats": 3,
        "eval_grid": False,
        "eval_fixed": "val_best_single",
        "verdict": {"margin": 10.0},
    }
    path = tmp_path / "counter-verdict.yaml"
    path.write_text(yaml.safe_dump(definition))
    argv = ["benchmark", str(path), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "r")]
    argv += ["--no-track"]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    bench = tmp_path / "results" / "counter-verdict"
    manifest = json.loads((bench / "benchmark.json").read_text())
    choice = manifest["selected"]["toy-ridge"]
    assert (choice["rule"], choice["margin"], choice["repeats"]) == (rule, 5.0, 2)
    if (
        rule == "cheapest_bound_noninferior"
    ):  # every candidate carries its paired val bound, the choice its own
        bounds = {c["lam"]: c["score_diff_low"] for c in choice["candidates"]}
        assert sorted(bounds) == [0.0, 0.5] and choice["score_diff_low"] == bounds[choice["lam"]]
        for c in choice["candidates"]:  # a lower bound sits below its own point estimate
            assert c["score_diff_low"] <= c["mean_score"] - choice["best_single_score"] + 1e-9
    val = RunStore(bench / "runs" / "val" / choice["best_single"]).episodes()
    assert len(val) == 2 * 2 and len({r.seed for r in val}) == 4  # two quick variations, two plays each
    tested = sorted(p.name for p in (bench / "runs" / "test_id").iterdir())
    chosen = {
        choice["lam"],
        choice["also"]["highest_val_score"]["lam"],
    }  # the further rule's point is played too
    assert tested == sorted([choice["best_single"], *(f"toy-ridge@lam={lam:g}" for lam in chosen)])
    also_rows = manifest["verdict"]["also"]["highest_val_score"]  # played on test_id only, as stated
    assert [(r["split"], r["lam"]) for r in also_rows] == [
        ("test_id", [choice["also"]["highest_val_score"]["lam"]])
    ]
    ood = sorted(p.name for p in (bench / "runs" / "test_ood").iterdir())
    assert ood == sorted([choice["best_single"], f"toy-ridge@lam={choice['lam']:g}"])
    records = RunStore(bench / "runs" / "test_ood" / tested[0]).episodes()
    assert len(records) == 2 * 3 and sorted(r.repeat for r in records) == [0, 0, 1, 1, 2, 2]
    rows = manifest["verdict"]["rows"]
    assert manifest["verdict"]["margin"] == 10.0 and [(r["family"], r["split"]) for r in rows] == [
        ("toy-ridge", "test_id"),
        ("toy-ridge", "test_ood"),
    ]
    assert rows[0]["n_episodes"] == 3 * 3 and rows[0]["n_variations"] == 3
    assert all(r["non_inferior"] == (r["score_diff_ci"][0] > -10.0) for r in rows)
    assert "## Verdict" in (tmp_path / "r" / "counter-verdict.md").read_text().split("## Comparison")[0]
    # Rerunning plays nothing new: every repeat of every variation is found in its run directory.
    before = {p: len(RunStore(p).episodes()) for p in (bench / "runs").glob("*/*")}
    again = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert {p: len(RunStore(p).episodes()) for p in (bench / "runs").glob("*/*")} == before
