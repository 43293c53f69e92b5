"""Diagnostics of a learned router, on a tiny real logged run of the ScienceWorld engine.

The runs are sticky-random exploration of a two-model pool (so that every
comparable group holds both models) on two quick train task types; a ridge
router is trained on four seeds and diagnosed on two others. The numbers are
recomputed here from the decisions, independently of the report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from test_learned_on_scienceworld import play_logged_run
from test_learned_routers import hashing_encoder

from harness.benchmarks import get_benchmark
from harness.benchmarks.scienceworld import gold_paths
from harness.config import BENCHMARKS_DIR, Limits
from harness.errors import ConfigError
from harness.records import TurnRecord
from harness.types import TaskInstance
from routers.learned.dataset import build_training_set, encode_histories, load_samples
from routers.learned.diagnostics import diagnose, log_diagnosis, phase_of, sibling_ranking, write_diagnosis
from routers.learned.train import TrainOptions, ranking_accuracy, train_router
from routers.learned.value_model import load_value_model

LIMITS = Limits(max_turns=12, budget_dollars=2.0)
MODELS = ("gpt-5", "gpt-oss-120b")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = yaml.safe_load((BENCHMARKS_DIR / "pools" / "paper6.yaml").read_text())
    data["name"] = "two"
    data["models"] = [m for m in data["models"] if m["name"] in MODELS]
    del data["calibration"]  # the paper's rows are for the six-model pool
    path = tmp_path_factory.mktemp("pool") / "two.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def runs(env, pool: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("diag-runs")
    out: dict[str, list[Path]] = {"train": [], "held_out": []}
    for seed in range(6):
        run = play_logged_run(env, root / f"s{seed}", seed, 0.1, pool=str(pool), quick=True, limits=LIMITS)
        out["train" if seed < 4 else "held_out"].append(run)
    return out


@pytest.fixture(scope="module")
def checkpoint(runs, pool, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    cache = tmp_path_factory.mktemp("diag-cache")
    encoder = hashing_encoder(cache)
    out = tmp_path_factory.mktemp("diag-ckpt") / "ridge"
    train_router(
        "ridge",
        runs["train"],
        out,
        TrainOptions(pool=str(pool), lam=0.0, hyperparams={"alpha": 1.0}),
        encoder=encoder,
    )
    return out, encoder


def test_diagnosis_numbers_agree_with_the_decisions(runs, checkpoint):
    path, encoder = checkpoint
    lam = 0.3
    diagnosis = diagnose(path, runs["held_out"], lam, encoder=encoder, min_per_model=1)
    model = load_value_model(path)
    samples = load_samples(runs["held_out"])
    data = build_training_set(
        samples, encode_histories(samples, encoder), model.cards, model.stats, model.options
    )
    score, cost = model.predict(data.embeddings, model.cards)
    assert diagnosis.decisions == len(samples) and diagnosis.episodes == 8

    # Calibration: every logged decision in one decile; bin means are the predictions' and outcomes' means.
    bins = diagnosis.calibration["score"]
    assert sum(b.decisions for b in bins) == len(samples)
    logged = score[np.arange(len(data)), data.model_index]
    top = bins[-1]
    in_top = logged >= top.low
    assert top.predicted == pytest.approx(logged[in_top].mean())
    assert top.realised == pytest.approx(data.score[in_top].mean(), abs=1e-6)
    assert diagnosis.mse["score"] == pytest.approx(np.mean((logged - data.score) ** 2), rel=1e-6)

    # Ranking: the fit report's measure on the same decisions gives the same accuracy and coverage.
    reference = ranking_accuracy(samples, data, score - lam * cost, lam, 0, min_per_model=1)
    assert reference.covered > 0
    assert diagnosis.ranking.accuracy == pytest.approx(reference.accuracy)
    assert diagnosis.coverage == pytest.approx(reference.coverage)
    assert diagnosis.ranking.best_value >= max(diagnosis.ranking.router_value, diagnosis.ranking.single_value)
    assert diagnosis.fixed_model_accuracy[diagnosis.single_best] == pytest.approx(
        diagnosis.ranking.single_best_accuracy
    )  # two models: the baseline's pick is always its favourite
    assert sum(diagnosis.fixed_model_accuracy.values()) == pytest.approx(1.0)

    # Breakdowns partition the covered decisions.
    for kind in ("topic", "phase", "error_turn", "after_error", "critical"):
        assert sum(c.decisions for c in diagnosis.breakdowns[kind].values()) == reference.covered, kind
    assert set(diagnosis.breakdowns["topic"]) == {"biology", "electricity"}
    assert list(diagnosis.breakdowns["phase"]) == ["early", "middle", "late"]
    assert "yes" in diagnosis.breakdowns["critical"]  # find-animal has a focus step in its first turns

    # Switch pattern of the router's own picks.
    picks = (score - lam * cost).argmax(axis=1)
    switches = transitions = 0
    for rows in data.episode_rows():
        switches += int((picks[rows][1:] != picks[rows][:-1]).sum())
        transitions += len(rows) - 1
    assert diagnosis.switches["router_switch_rate"] == pytest.approx(switches / transitions)
    early = [
        model.cards[p].name
        for p, s in zip(picks, samples, strict=True)
        if phase_of(s.turn, s.episode_turns) == "early"
    ]
    for name, share in diagnosis.switches["models_by_phase"]["early"].items():
        assert share == pytest.approx(early.count(name) / len(early))


def test_diagnosis_is_written_and_logged_to_mlflow_once(runs, checkpoint, tmp_path):
    from mlflow import MlflowClient

    path, encoder = checkpoint
    diagnosis = diagnose(path, runs["held_out"], 0.0, encoder=encoder, min_per_model=1)
    files = write_diagnosis(diagnosis, tmp_path / "out")
    assert "## Ranking" in files[1].read_text() and "critical" in files[1].read_text()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = log_diagnosis(diagnosis, files, uri)
    assert log_diagnosis(diagnosis, files, uri) == first  # logging again updates the same run
    run = MlflowClient(tracking_uri=uri).get_run(first)
    assert run.data.params["kind"] == "ridge" and run.data.params["alpha"] == "1.0"
    assert run.data.metrics["ranking.all.accuracy"] == pytest.approx(diagnosis.ranking.accuracy)
    artifacts = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(first)}
    assert artifacts == {"diagnosis.json", "diagnosis.md"}
    assert str(tmp_path) in run.info.artifact_uri  # beside the store, not in the working directory


def test_critical_turns_follow_the_gold_path_over_the_logged_actions():
    benchmark = get_benchmark("scienceworld")
    task = TaskInstance("scienceworld", "find-animal", 0, "train")
    gold = gold_paths()[("find-animal", 0)]
    focus = [i for i, action in enumerate(gold) if action.startswith("focus on")]
    assert focus
    played = [TurnRecord("", i, "m", 0.0, [], action=action) for i, action in enumerate(gold)]
    assert benchmark.critical_turns(task, played) == frozenset(focus)
    # A wasted turn and a format error (no action) before the gold path shift every label by two.
    detour = [TurnRecord("", 0, "m", 0.0, [], action="inventory"), TurnRecord("", 1, "m", 0.0, [])]
    detour += [TurnRecord("", i + 2, "m", 0.0, [], action=action) for i, action in enumerate(gold)]
    assert benchmark.critical_turns(task, detour) == frozenset(i + 2 for i in focus) | (
        {0, 1} if 0 in focus else set()
    )
    assert benchmark.topic("find-animal") == "biology"


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="lam must be >= 0"):
        diagnose(tmp_path, [tmp_path], -1.0)
    with pytest.raises(ConfigError, match="no run directories"):
        diagnose(tmp_path, [], 0.0)
    with pytest.raises(ConfigError, match="not a router checkpoint"):
        diagnose(tmp_path, [tmp_path], 0.0)


def test_the_fit_report_says_why_no_ranking_was_measured():
    """A quick collection rarely logs every model in one task and turn bucket: no ratio of nothing."""
    from routers.learned.train import FitReport, RankingScore

    empty = RankingScore(None, None, 0.0, covered=0, decisions=412, groups=0, models=6, min_per_model=2)
    report = FitReport("ridge", "ckpt", 0.05, 20, 6, 900, 412, 1.0, 1.0, 1.2, 1.2, empty, 1 / 6, 0.1, 0.2)
    text = report.summary()
    assert "n/a" not in text and "of 0 comparable" not in text
    assert (
        "ranking   not measured: none of the 412 val decisions is in a group (same task and turn bucket)"
        in text
    )
    assert "where each of the 6 models was logged at least 2 times" in text
    measured = dataclasses.replace(
        empty, accuracy=0.5, single_best_accuracy=0.25, coverage=0.1, covered=40, groups=3
    )
    assert (
        "best observed in 0.500 of 40 comparable val decisions"
        in dataclasses.replace(report, ranking=measured).summary()
    )


def test_sibling_ranking_on_a_hand_made_pair_of_branch_points():
    """Point A: three siblings, the router's top model is the best observed one, the baseline's is not.
    Point B: two siblings that tie, so any pick is right. A lone sibling and an ordinary decision are left out."""
    branched = [SimpleNamespace(paired_group=g) for g in ("A", "A", "A", "B", "B", "C", None)]
    model_index = np.array([0, 1, 2, 0, 2, 1, 1])
    observed = np.array([0.2, 0.5, 0.1, 0.3, 0.3, 0.9, 0.9])
    q = np.zeros((7, 3))
    q[0] = [0.0, 1.0, 0.5]  # at A's state (the first sibling's row) the router prefers model 1
    q[3] = [0.0, 0.0, 1.0]  # at B's, model 2
    cell = sibling_ranking(branched, model_index, observed, q, preference=[0, 1, 2])
    assert cell is not None and cell.decisions == 2
    assert cell.accuracy == 1.0 and cell.single_best_accuracy == 0.5
    assert cell.chance == pytest.approx((1 / 3 + 1) / 2)
    assert (cell.router_value, cell.single_value, cell.best_value) == pytest.approx((0.4, 0.25, 0.4))
    q[0] = [1.0, 0.0, 0.5]  # now it prefers the worst of A's siblings but model 0
    assert sibling_ranking(branched, model_index, observed, q, preference=[0, 1, 2]).accuracy == 0.5
    assert sibling_ranking(branched[5:], model_index[5:], observed[5:], q[5:], [0, 1, 2]) is None


def test_held_out_branches_are_ranked_among_their_siblings(env, runs, checkpoint, tmp_path):
    """Branches of a held-out run on the real engine: the diagnosis ranks the router at each branch point
    among the two models branched there, from the siblings' own outcomes; plain held-out data has none."""
    from harness.branching import BranchDesign, collect_branches
    from harness.trajectory import RunStore

    path, encoder = checkpoint
    branches = tmp_path / "branches"
    collect_branches(runs["held_out"][0], branches, BranchDesign(states_per_episode=2), cache=False, env=env)
    records = RunStore(branches).episodes()
    points = {r.branch_of["group"] for r in records}
    assert len(records) == 2 * len(points) and points
    diagnosis = diagnose(path, [runs["held_out"][0], branches], 0.0, encoder=encoder, min_per_model=1)
    assert diagnosis.siblings is not None and diagnosis.siblings.decisions == len(points)
    assert diagnosis.siblings.chance >= 0.5  # two siblings: one half, or one where they tie
    assert diagnosis.siblings.best_value >= max(
        diagnosis.siblings.router_value, diagnosis.siblings.single_value
    )
    assert "| siblings | branch points |" in diagnosis.to_markdown()
    assert diagnose(path, runs["held_out"], 0.0, encoder=encoder, min_per_model=1).siblings is None
