"""The powered in-distribution test split and the power of a verdict, against hand calculations."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.benchmarks import get_benchmark
from harness.benchmarks.scienceworld.engine import ScienceWorldEnv
from harness.benchmarks.scienceworld.split import (
    DEFAULT_SPLIT_PATH,
    POWERED_MULTIPLIER,
    POWERED_SPLIT,
    POWERED_SPLIT_PATH,
    build_powered_split,
)
from harness.config import (
    BenchmarkDef,
    LearnedRouter,
    RouterSpec,
    RuleError,
    RunConfig,
    SelectStage,
    VerdictSpec,
    from_dict,
    load_benchmark,
    to_plain,
)
from harness.errors import ConfigError
from harness.frontier import hierarchical_paired_bootstrap
from harness.pipeline import BenchmarkRun
from harness.records import EpisodeRecord
from harness.splits import load_split
from harness.trajectory import RunStore
from harness.types import TaskInstance
from harness.verdict import (
    VarianceComponents,
    minimum_detectable_difference,
    planned_standard_error,
    power_plan,
    power_text,
    seed_variance,
    split_design,
    stratified_difference,
    variance_components,
    verdict_text,
)

V1 = load_split(DEFAULT_SPLIT_PATH, "scienceworld")
POWERED = load_split(POWERED_SPLIT_PATH, "scienceworld")


def _pairs(split, name: str) -> set[tuple[str, int]]:
    return {(t, v) for t, vs in split.assignments[name].items() for v in vs}


def test_the_committed_file_is_what_the_procedure_writes(tmp_path: Path):
    fresh = tmp_path / "powered.json"
    build_powered_split(fresh)
    assert fresh.read_bytes() == POWERED_SPLIT_PATH.read_bytes()


def test_v1_splits_are_carried_unchanged():
    for name in ("train", "val", "test_id", "test_ood"):
        assert POWERED.assignments[name] == V1.assignments[name]
        assert POWERED.quick[name] == V1.quick[name]


def test_no_variation_is_shared_with_train_val_or_ood():
    powered = _pairs(POWERED, POWERED_SPLIT)
    for name in ("train", "val", "test_ood"):
        assert not powered & _pairs(V1, name), name


def test_test_id_is_reused_only_where_a_type_has_too_few_spare_variations():
    content = json.loads(DEFAULT_SPLIT_PATH.read_text())
    for task, held_out in V1.assignments["test_id"].items():
        info = content["task_types"][task]
        spare = set(range(info["variations_used"], info["engine_max_variations"]))
        mine = set(POWERED.assignments[POWERED_SPLIT][task])
        if len(spare) >= POWERED_MULTIPLIER * len(held_out):
            assert mine <= spare and len(mine) == POWERED_MULTIPLIER * len(held_out)
            assert POWERED.plays(POWERED_SPLIT, task) == 1
        else:  # boil, melt, power-component, identify-life-stages-1 (no spares), chemistry-mix (two)
            assert mine == set(held_out) | spare
            assert POWERED.plays(POWERED_SPLIT, task) * len(mine) >= POWERED_MULTIPLIER * len(held_out)
    scarce = {t for t in POWERED.assignments[POWERED_SPLIT] if POWERED.plays(POWERED_SPLIT, t) > 1}
    assert scarce == {"boil", "melt", "power-component", "identify-life-stages-1", "chemistry-mix"}


def test_weights_are_test_ids_task_type_mix():
    counts = {t: len(v) for t, v in V1.assignments["test_id"].items()}
    weights = POWERED.weights(POWERED_SPLIT)
    assert weights == pytest.approx({t: n / sum(counts.values()) for t, n in counts.items()})
    assert V1.weights("test_id") is None


def test_a_runs_relative_split_file_is_read_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs record the split file as the definition names it, relative to the repository; a report
    regenerated from another directory weighs the results by the same file, and a missing one is refused."""
    from harness.results import split_weights

    monkeypatch.chdir(tmp_path)
    split_weights.cache_clear()
    relative = "benchmarks/splits/scienceworld-powered-v1.json"
    assert not Path(relative).exists()
    assert split_weights("scienceworld", relative, POWERED_SPLIT) == POWERED.weights(POWERED_SPLIT)
    with pytest.raises(ConfigError, match="no-such-split.json does not exist"):
        split_weights("scienceworld", "benchmarks/splits/no-such-split.json", POWERED_SPLIT)


def test_plays_multiply_repeats_and_keep_every_key_distinct():
    tasks = POWERED.tasks(POWERED_SPLIT, repeats=2)
    per_type: dict[str, int] = {}
    for t in tasks:
        per_type[t.task] = per_type.get(t.task, 0) + 1
    for task, variations in POWERED.assignments[POWERED_SPLIT].items():
        assert per_type[task] == 2 * POWERED.plays(POWERED_SPLIT, task) * len(variations)
    keys = [t.key for t in tasks]
    assert len(set(keys)) == len(keys)
    # Every variation's first play comes before any second play: an interrupted run holds whole repeats.
    first_repeat_one = next(i for i, t in enumerate(tasks) if t.repeat == 1)
    assert all(t.repeat >= 1 for t in tasks[first_repeat_one:])


def test_a_malformed_stratum_is_one_clear_error(tmp_path: Path):
    content = json.loads(POWERED_SPLIT_PATH.read_text())
    content["strata"][POWERED_SPLIT]["boil"]["weight"] = 0.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match="weights must sum to 1"):
        load_split(bad, "scienceworld")


def test_the_real_engine_plays_the_spare_variations():
    """The largest variation the split draws of each type exists in ScienceWorld 1.2.3."""
    with ScienceWorldEnv() as env:
        for task, variations in POWERED.assignments[POWERED_SPLIT].items():
            description, _ = env.reset(TaskInstance("scienceworld", task, max(variations), POWERED_SPLIT))
            assert description


def test_the_benchmark_reads_the_powered_split_file():
    split = get_benchmark("scienceworld").load_split(str(POWERED_SPLIT_PATH))
    assert POWERED_SPLIT in split.split_names and split.version == "scienceworld-powered-v1"


# --- the stratified estimate -------------------------------------------------------
def test_the_stratified_bootstrap_weighs_each_type_by_its_share():
    # Type a: two variations with differences +2 and +4; type b: one variation with difference -6.
    a = [np.array([[2.0, 0.0, 1.0, 1.0]]), np.array([[4.0, 0.0, 1.0, 1.0]])]
    b = [np.array([[0.0, 6.0, 1.0, 2.0]])]
    test = hierarchical_paired_bootstrap(
        [a + b], n_boot=200, seed=0, strata=[["a", "a", "b"]], weights={"a": 0.25, "b": 0.75}
    )
    assert test.score_diff == pytest.approx(0.25 * 3.0 + 0.75 * -6.0)
    assert test.cost_ratio == pytest.approx(1.0 / (0.25 * 1.0 + 0.75 * 2.0))
    # Within-stratum resampling: type a's mean is 2, 3 or 4, type b's always -6.
    assert 0.25 * 2 - 4.5 <= test.score_diff_ci[0] <= test.score_diff_ci[1] <= 0.25 * 4 - 4.5
    # Unweighted, the same pairs give the plain mean over variations.
    plain = hierarchical_paired_bootstrap([a + b], n_boot=200, seed=0)
    assert plain.score_diff == pytest.approx((2 + 4 - 6) / 3)


# --- power ------------------------------------------------------------------------
def test_minimum_detectable_difference_by_hand():
    # (z_0.975 + z_0.8) * se = (1.959964 + 0.841621) * 2
    assert minimum_detectable_difference(2.0) == pytest.approx(5.603171, abs=1e-5)
    plan = power_plan(VarianceComponents(between=0.0, within=16.0), {"t": (1.0, 4, 1)}, margin=5.0)
    assert plan["se"] == pytest.approx(2.0)  # sqrt(16 / 4)
    assert plan["halfwidth"] == pytest.approx(1.959964 * 2.0, abs=1e-5)
    assert plan["power_at_equal"] == pytest.approx(0.705405, abs=1e-5)  # Phi(5/2 - 1.959964)
    assert plan["powered"] is False
    assert power_plan(VarianceComponents(0.0, 16.0), {"t": (1.0, 4, 4)}, margin=5.0)["powered"] is True


def test_planned_standard_error_by_hand():
    c = VarianceComponents(between=9.0, within=36.0)
    design = {"a": (0.5, 3, 2), "b": (0.5, 6, 1)}
    # 0.25 * (9/3 + 36/6) + 0.25 * (9/6 + 36/6) = 2.25 + 1.875, over two seeds
    assert planned_standard_error(c, design, seeds=2) == pytest.approx(math.sqrt((2.25 + 1.875) / 2))


def test_seed_spread_and_stratified_difference_by_hand():
    # Seeds' val means 10 and 40 (variance 450 with one degree of freedom), each mean's own sampling
    # variance 50 on average: 400 is what training seeds add. A spread val's noise explains is zero.
    assert seed_variance([(10.0, 40.0), (40.0, 60.0)]) == pytest.approx(450.0 - 50.0)
    assert seed_variance([(10.0, 500.0), (40.0, 500.0)]) == 0.0
    with pytest.raises(ValueError, match="two seeds"):
        seed_variance([(10.0, 1.0)])
    # Type a's variations differ by 1 and 3 (mean 2), b's by 6; weights 0.75 and 0.25, c absent.
    groups = {"a": [np.array([[1.0, 0.0]]), np.array([[3.0, 0.0]])], "b": [np.array([[8.0, 2.0]])]}
    design = {"a": (0.6, 2, 1), "b": (0.2, 1, 1), "c": (0.2, 5, 1)}
    assert stratified_difference(groups, design) == pytest.approx((0.6 * 2 + 0.2 * 6) / 0.8)
    c = VarianceComponents(between=9.0, within=36.0)
    one = {"a": (1.0, 3, 2)}  # 9/3 + 36/6 = 9 per seed, 16 more from the seeds' spread, over 5 seeds
    assert planned_standard_error(c, one, seeds=5, seed_variance=16.0) == pytest.approx(math.sqrt(25 / 5))


def test_variance_components_by_hand():
    # One type, two variations with two repeats each: differences (1, 3) and (5, 7).
    groups = {"t": [np.array([[1.0, 0.0], [3.0, 0.0]]), np.array([[5.0, 0.0], [7.0, 0.0]])]}
    c = variance_components(groups)
    assert c.within == pytest.approx(2.0)  # (1 + 1 + 1 + 1) / 2
    assert c.between == pytest.approx(8.0 - 2.0 / 2)  # means 2 and 6: 8, less within / repeats


def test_split_design_of_the_powered_split():
    design = split_design(POWERED, POWERED_SPLIT, quick=False, repeats=3)
    assert design["boil"] == (pytest.approx(6 / 73), 6, 36)
    assert design["find-animal"] == (pytest.approx(6 / 73), 72, 3)
    unweighted = split_design(V1, "test_id", quick=False, repeats=1)
    assert sum(w for w, _, _ in unweighted.values()) == pytest.approx(1.0)


# --- the benchmark plans its verdict's power before any test episode ----------------
def _val_run(path: Path, router: RouterSpec, scores: dict[tuple[str, int, int], float]) -> None:
    store = RunStore(path)
    store.open({"run": to_plain(RunConfig(router=router, split="val", repeats=2)), "engine": "fake"})
    for (task, variation, repeat), score in sorted(scores.items()):
        key = f"scienceworld/{task}/{variation}" + (f"/r{repeat}" if repeat else "")
        store.record_episode(
            EpisodeRecord(
                episode=key,
                benchmark="scienceworld",
                task=task,
                variation=variation,
                split="val",
                repeat=repeat,
                score=score,
                cost=1.0,
                turns=1,
                router=router.label,
            )
        )
    store.close()


def test_the_benchmark_plans_power_before_testing_and_refuses_when_asked(tmp_path: Path, caplog):
    single = RouterSpec("single", {"model": "gpt-5"})
    d = BenchmarkDef(
        name="plan",
        fixed_routers=[single],
        learned=[LearnedRouter("ridge", lambdas=[0.0]), LearnedRouter("episode-task", lambdas=[0.0])],
        select=SelectStage(rule="cheapest_noninferior", margin=5.0, repeats=2),
        eval_splits=["test_id", POWERED_SPLIT],
        eval_repeats=2,
        eval_split_repeats={POWERED_SPLIT: 4},
        split_file=str(POWERED_SPLIT_PATH),
        quick=False,
    )
    run = BenchmarkRun(d, tmp_path)
    run.planned_seeds = 3
    mine = run.learned_spec("ridge", tmp_path / "ckpt", 0.0)
    # Paired val differences: variation means 0 and 20 within each type, repeats +-10 around them.
    cells = [(t, v, r) for t in ("boil", "melt") for v in (0, 1) for r in (0, 1)]
    _val_run(run.layout.run("val", single.label), single, dict.fromkeys(cells, 0.0))
    _val_run(
        run.layout.run("val", mine.label),
        mine,
        {(t, v, r): 20.0 * v + (10.0 if r else -10.0) for t, v, r in cells},
    )
    selected = {"ridge": {"lam": 0.0, "best_single": single.label}}
    with caplog.at_level("INFO", logger="harness.pipeline"):
        plans = run.plan_power({"ridge": tmp_path / "ckpt"}, selected)["ridge"]
    # Within: (4 * 100 * 2 types) / 4 = 200; between: 200 (means 0, 20 per type) - 200 / 2 = 100.
    components = VarianceComponents(between=100.0, within=200.0)
    for name, plays in (("test_id", 2), (POWERED_SPLIT, 4)):  # test_powered's own plays
        design = split_design(POWERED, name, quick=False, repeats=plays)
        assert plans[name]["se"] == pytest.approx(planned_standard_error(components, design, seeds=3))
    assert plans[POWERED_SPLIT]["se"] < plans["test_id"]["se"] / 2
    assert "power: plan ridge on test_powered (this seed's val alone): " in caplog.text
    assert run.repeats(POWERED_SPLIT) == 4 and run.repeats("test_id") == 2
    refusing = BenchmarkRun(replace(d, verdict=VerdictSpec(margin=1.0, power="refuse")), tmp_path)
    refusing.power = refusing.plan_power({"ridge": tmp_path / "ckpt"}, selected)
    with pytest.raises(ConfigError, match="ridge on test_id is not powered"):
        refusing.refuse_unpowered()
    # Only a judged family's unpowered plan refuses: an exploratory row's is reported.
    judged_other = VerdictSpec(margin=1.0, power="refuse", judged=["episode-task"])
    exploratory = BenchmarkRun(replace(d, verdict=judged_other), tmp_path)
    exploratory.power = exploratory.plan_power({"ridge": tmp_path / "ckpt"}, selected)
    exploratory.refuse_unpowered()
    assert not exploratory.power["ridge"]["test_id"]["powered"]
    with pytest.raises(RuleError, match="eval_split_repeats names 'val'"):
        replace(d, eval_split_repeats={"val": 2})
    with pytest.raises(RuleError, match="eval_split_repeats.test_id must be >= 1"):
        replace(d, eval_split_repeats={"test_id": 0})
    with pytest.raises(ConfigError, match="power"):
        from_dict(VerdictSpec, {"power": "maybe"}, "definition.verdict")


def test_every_replicates_plan_counts_the_spread_of_the_seeds_on_val(tmp_path: Path, caplog):
    single = RouterSpec("single", {"model": "gpt-5"})
    d = BenchmarkDef(
        name="spread",
        seeds=[0, 1],
        fixed_routers=[single],
        learned=[LearnedRouter("ridge", lambdas=[0.0])],
        select=SelectStage(rule="cheapest_noninferior", margin=5.0, repeats=2),
        eval_splits=[POWERED_SPLIT],
        eval_repeats=2,
        split_file=str(POWERED_SPLIT_PATH),
        quick=False,
    )
    parent = BenchmarkRun(d, tmp_path)
    runs = parent.replicates()
    cells = [(t, v, r) for t in ("boil", "melt") for v in (0, 1) for r in (0, 1)]
    prepared = []
    for run, shift in zip(runs, (0.0, 30.0), strict=True):  # the seeds' val means: 10 and 40
        run.planned_seeds = 2
        mine = run.learned_spec("ridge", tmp_path / "ckpt", 0.0)
        _val_run(run.layout.run("val", single.label), single, dict.fromkeys(cells, 0.0))
        _val_run(
            run.layout.run("val", mine.label),
            mine,
            {(t, v, r): 20.0 * v + (10.0 if r else -10.0) + shift for t, v, r in cells},
        )
        selected = {"ridge": {"lam": 0.0, "best_single": single.label}}
        run.power = run.plan_power({"ridge": tmp_path / "ckpt"}, selected)
        assert run.power["ridge"][POWERED_SPLIT]["seed_variance"] == 0.0  # alone, a replicate cannot see it
        prepared.append(({"ridge": tmp_path / "ckpt"}, selected))
    assert [round(run.val_differences["ridge"][0], 9) for run in runs] == [10.0, 40.0]
    components = VarianceComponents(between=100.0, within=200.0)
    sampling = planned_standard_error(components, split_design(POWERED, "val", quick=False, repeats=2)) ** 2
    with caplog.at_level("INFO", logger="harness.pipeline"):
        parent.plan_seed_power(runs, prepared)
    assert f"power: s1 ridge on {POWERED_SPLIT} (with the seeds' spread): NOT powered" in caplog.text
    design = split_design(POWERED, POWERED_SPLIT, quick=False, repeats=2)
    for run in runs:
        plan = run.power["ridge"][POWERED_SPLIT]
        assert plan["seed_variance"] == pytest.approx(450.0 - sampling)
        assert plan["se"] == pytest.approx(
            planned_standard_error(components, design, seeds=2, seed_variance=450.0 - sampling)
        )
        assert not plan["powered"]  # seeds 30 points apart: no margin of 5 can be decided
        assert "seeds' spread sd" in power_text(plan)
    refusing = BenchmarkRun(replace(d, verdict=VerdictSpec(power="refuse")), tmp_path)
    replicates = refusing.replicates()  # they read the same val runs
    for run, (checkpoints, selected) in zip(replicates, prepared, strict=True):
        run.planned_seeds = 2
        run.power = run.plan_power(checkpoints, selected)  # each one alone is powered
    with pytest.raises(ConfigError, match="not powered.*seeds' spread sd"):
        refusing.plan_seed_power(replicates, prepared)
    for run in replicates:  # a refused plan is kept for the report, before any test episode
        recorded = json.loads(run.layout.manifest.read_text())["power"]["ridge"][POWERED_SPLIT]
        assert not recorded["powered"] and recorded["seed_variance"] > 0
    # One replicate has no spread to add: its own plan decides, and an unpowered one still refuses.
    strict = BenchmarkRun(replace(d, verdict=VerdictSpec(margin=0.5, power="refuse")), tmp_path)
    lone = strict.replicates()[:1]
    lone[0].power = lone[0].plan_power(*prepared[0])
    with pytest.raises(ConfigError, match="ridge on test_powered is not powered"):
        strict.plan_seed_power(lone, prepared[:1])
    # A stated spread is a floor: seeds that agree on val are planned with at least it.
    agreeing = BenchmarkRun(replace(d, name="agree", verdict=VerdictSpec(seed_sd=12.0)), tmp_path)
    alike = agreeing.replicates()
    for run in alike:
        run.planned_seeds = 2
        mine = run.learned_spec("ridge", tmp_path / "ckpt", 0.0)
        _val_run(run.layout.run("val", single.label), single, dict.fromkeys(cells, 0.0))
        _val_run(run.layout.run("val", mine.label), mine, dict.fromkeys(cells, 1.0))
        run.power = run.plan_power({"ridge": tmp_path / "ckpt"}, prepared[0][1])
    agreeing.plan_seed_power(alike, prepared)
    assert [run.power["ridge"][POWERED_SPLIT]["seed_variance"] for run in alike] == [144.0, 144.0]


def test_a_verdict_row_says_whether_it_was_judged_and_powered():
    row = {"margin": 5.0, "better": False, "non_inferior": True, "judged": False}
    assert verdict_text(row) == "exploratory: non-inferior at margin 5"
    row |= {"judged": True, "powered": False, "planned_mdd": 7.25}
    assert (
        verdict_text(row)
        == "non-inferior at margin 5; not powered (planned minimum detectable difference 7.2)"
    )
    # On HLE's accuracy (margin 0.05) the plan is told to three decimals, not rounded to 0.1.
    row |= {"margin": 0.05, "planned_mdd": 0.0808}
    assert verdict_text(row).endswith("not powered (planned minimum detectable difference 0.081)")
    plan = power_plan(VarianceComponents(between=0.0, within=0.3), {"math": (1.0, 358, 1)}, margin=0.05)
    assert "planned interval +-0.057, minimum detectable difference 0.081 at margin 0.05" in power_text(plan)


def test_the_powered_definition_names_what_is_judged_before_testing(tmp_path: Path):
    d = load_benchmark("verdict-powered")
    assert (d.verdict.judged, d.verdict.power, d.split_file) == (
        ["mtrouter"],
        "refuse",
        "benchmarks/splits/scienceworld-powered-v1.json",
    )
    assert POWERED_SPLIT in d.eval_splits
    with pytest.raises(ConfigError, match="verdict.judged names 'nonesuch'"):
        replace(d, verdict=VerdictSpec(judged=["nonesuch"]))


def test_the_across_seed_table_weighs_a_stratified_split_like_the_verdict(tmp_path: Path):
    """One boil variation 10 points up, three find-animal variations level: unweighted the mean difference
    is 2.5; the split gives the two types equal weight, so it is 5, as the verdict's estimate is."""
    from harness.report import seed_section
    from harness.results import seed_rows

    boil, animal = (POWERED.assignments[POWERED_SPLIT][t] for t in ("boil", "find-animal"))
    cells = [("boil", boil[0], 10.0)] + [("find-animal", v, 0.0) for v in animal[:3]]
    single = RouterSpec("single", {"model": "b"})
    learned = RouterSpec("mtrouter", {"lam": 0.1, "label": "mtrouter@lam=0.1"})
    child = tmp_path / "seeds" / "s0"
    for router, gain in ((single, False), (learned, True)):
        store = RunStore(child / "runs" / POWERED_SPLIT / router.label)
        config = RunConfig(router=router, split=POWERED_SPLIT, split_file=str(POWERED_SPLIT_PATH))
        store.open({"run": to_plain(config), "engine": "fake"})
        for task, variation, up in cells:
            key = f"scienceworld/{task}/{variation}"
            store.record_episode(
                EpisodeRecord(
                    episode=key,
                    benchmark="scienceworld",
                    task=task,
                    variation=variation,
                    split=POWERED_SPLIT,
                    score=50.0 + (up if gain else 0.0),
                    cost=1.0,
                    turns=1,
                    router=router.label,
                )
            )
        store.close()
    selected = {"mtrouter": {"lam": 0.1, "best_single": single.label}}
    (child / "benchmark.json").write_text(json.dumps({"name": "s0", "selected": selected}))
    (tmp_path / "benchmark.json").write_text(json.dumps({"name": "b", "replicates": {"0": "seeds/s0"}}))
    rows = seed_rows(tmp_path)
    mine = rows[rows["router"] == "mtrouter (val-selected)"].iloc[0]
    assert mine["weights"] == POWERED.weights(POWERED_SPLIT) and sorted(mine["strata"]) == [
        "boil",
        "find-animal",
        "find-animal",
        "find-animal",
    ]
    line = next(r for r in seed_section(tmp_path) if r.startswith("| mtrouter (val-selected) | test_powered"))
    assert "| +5.0 [+5.0, +5.0] |" in line


# --- the sizing script, on any benchmark -------------------------------------------
def _plan_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "powered_split_plan.py"
    spec = importlib.util.spec_from_file_location("powered_split_plan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hle_val_run(path: Path, model: str, scores: dict[tuple[str, int], float]) -> None:
    router = RouterSpec("single", {"model": model})
    store = RunStore(path)
    store.open({"run": to_plain(RunConfig(benchmark="hle", router=router, split="val")), "engine": "fake"})
    for (task, variation), score in sorted(scores.items()):
        store.record_episode(
            EpisodeRecord(
                episode=f"hle/{task}/{variation}",
                benchmark="hle",
                task=task,
                variation=variation,
                split="val",
                score=score,
                cost=0.01,
                turns=1,
                router=router.label,
            )
        )
    store.close()


def test_the_sizing_script_plans_hle_in_accuracy_units_at_its_own_margin(tmp_path: Path, monkeypatch, capsys):
    """Two seeds of a right-or-wrong model against one always wrong: math's questions differ (both right,
    both wrong), physics's are coin flips. Within-question variance (0 + 0 + 0.5 + 0.5) / 4 = 0.25; between
    (math's means 1 and 0: 0.5; physics's: 0) / 2 - 0.25 / 2 = 0.125. On test_id's 358 questions played once
    the standard error is sqrt(0.375 / 358), whatever their category mix."""
    script = _plan_script()
    a = {0: {("math", 0): 1.0, ("math", 1): 0.0, ("physics", 0): 1.0, ("physics", 1): 0.0},
         1: {("math", 0): 1.0, ("math", 1): 0.0, ("physics", 0): 0.0, ("physics", 1): 1.0}}  # fmt: skip
    for seed in (0, 1):
        _hle_val_run(tmp_path / f"a{seed}", "gpt-5", a[seed])
        _hle_val_run(tmp_path / f"b{seed}", "deepseek-v3.2", dict.fromkeys(a[seed], 0.0))
    a_runs, b_runs = ([str(tmp_path / f"{r}{s}") for s in (0, 1)] for r in "ab")
    runs = ["--a", *a_runs, "--b", *b_runs]
    monkeypatch.setattr("sys.argv", ["plan", *runs, "--designs", "1x1", "3x3"])
    script.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "8 paired val episodes of hle (margin 0.05): between-variation variance 0.1250, "
        "within-variation (repeat) variance 0.2500"
    )
    assert [line.split()[0] for line in lines[2:]] == ["test_id", "test_id"]  # HLE has no powered split file
    once = 1.959964 * math.sqrt(0.375 / 358)
    nine = 1.959964 * math.sqrt((0.125 / 358 + 0.25 / (358 * 3)) / 3)
    assert lines[2].split()[1:5] == ["1", "1", "358", f"{once:.4f}"] and lines[2].endswith("False")
    assert lines[3].split()[1:5] == ["3", "3", "3222", f"{nine:.4f}"] and lines[3].endswith("True")
    monkeypatch.setattr("sys.argv", ["plan", *runs, "--benchmark", "scienceworld"])
    with pytest.raises(SystemExit):
        script.main()
    assert "the runs were played on hle" in capsys.readouterr().err


def test_the_sizing_script_finds_each_benchmarks_powered_split_files():
    from harness.benchmarks import get_benchmark

    script = _plan_script()
    assert list(script.planned_splits(get_benchmark("scienceworld"))) == ["test_id", POWERED_SPLIT]
    assert list(script.planned_splits(get_benchmark("hle"))) == ["test_id"]


def test_a_refused_verdict_reports_the_plans_that_stopped_it(tmp_path: Path):
    """A benchmark ``power: refuse`` stopped before its test has no verdict rows: its report gives each
    replicate's recorded plan of each judged family instead of asking for a selection stage."""
    from harness.report import verdict_section

    design = split_design(POWERED, POWERED_SPLIT, quick=False, repeats=3)
    weak = power_plan(VarianceComponents(between=0.0, within=10_000.0), design, 5.0, 3, seed_variance=30.0)
    strong = power_plan(VarianceComponents(between=0.0, within=100.0), design, 5.0, 3)
    definition = {
        "name": "refused",
        "definition": {"verdict": {"power": "refuse", "judged": ["mtrouter"]}},
        "replicates": {"0": "seeds/s0"},
    }
    (tmp_path / "benchmark.json").write_text(json.dumps(definition))
    replicate = tmp_path / "seeds" / "s0"
    (replicate / "runs").mkdir(parents=True)
    selected = {f: {"lam": 0.05, "best_single": "single:gpt-5"} for f in ("mtrouter", "episode-task")}
    for plans, expected in (
        ({"mtrouter": {POWERED_SPLIT: weak}, "episode-task": {POWERED_SPLIT: strong}}, True),
        ({"mtrouter": {POWERED_SPLIT: strong}, "episode-task": {POWERED_SPLIT: weak}}, False),
    ):
        (replicate / "benchmark.json").write_text(json.dumps({"selected": selected, "power": plans}))
        text = "\n".join(verdict_section(tmp_path, definition, 1))
        assert ("stopped the benchmark before its test" in text) is expected, text
        if expected:  # the judged family's plan, not the exploratory one's
            assert (
                f"seed 0, mtrouter at λ 0.05 against `single:gpt-5` on {POWERED_SPLIT}: NOT powered" in text
            )
            assert "episode-task" not in text
