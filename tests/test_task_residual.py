"""The per-task table as a prior: its cross-fitted cells, the task vote, and mtrouter-task end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_learned_routers import CARDS, HELPER, HashingEmbedder, state_of

from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.errors import ConfigError
from routers import router_class
from routers.learned.dataset import TargetOptions, TargetStats, build_training_set, load_samples
from routers.learned.embedding import CachedEmbedder
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.q_router import MTRouterModel
from routers.learned.task_residual import TaskResidualModel
from routers.learned.task_table import NearestTasks, TaskTable, cross_fitted_table_scores
from routers.learned.train import TrainOptions, train_router
from routers.learned.value_model import load_value_model


def test_cross_fitted_cells_leave_out_the_episodes_own_fold():
    # Four one-model episodes of task "x" (finals 0.2, 0.4, 0.6, 1.0), two decisions each, folds 0, 0, 1, 1.
    final = np.repeat([0.2, 0.4, 0.6, 1.0], 2)
    opening = np.tile([True, False], 4)
    folds = np.repeat([0, 0, 1, 1], 2)
    task, model = np.array(["x"] * 8, dtype=object), np.zeros(8, dtype=np.int64)
    base = cross_fitted_table_scores(task, model, final, opening, folds, n_models=1, weight=1.0)
    # Fold 0 reads a table of episodes 3 and 4: (0.6 + 1.0 + 1 * 0.8) / (2 + 1) = 0.8 (model mean 0.8).
    # Fold 1 reads episodes 1 and 2: (0.2 + 0.4 + 1 * 0.3) / 3 = 0.3.
    np.testing.assert_allclose(base, [0.8] * 4 + [0.3] * 4, atol=1e-12)


def test_an_unseen_task_reads_each_models_mean():
    table = TaskTable.fit(
        np.array(["x", "x", "y"]), np.array([0, 1, 1]), np.array([[1.0, 1], [0, 2], [1, 4]]), 2
    )
    cells = table.lookup(table.rows_of(np.array(["z", "x"])), [0, 1])
    np.testing.assert_allclose(cells[0], table.means)
    # Task x, model 1: (0 + 2 * 0.5) / (1 + 2) for the score, (2 + 2 * 3) / 3 for the cost.
    np.testing.assert_allclose(cells[1, 1], [1 / 3, 8 / 3])


def test_the_task_vote_of_the_nearest_decisions_breaks_ties_by_distance():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]])
    finder = NearestTasks(
        vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.array([0, 0, 1, 1, 2]), k=3
    )
    # Nearest to (1, 0.05): rows 0, 1 (task 0) and 4 (task 2): task 0 by two votes.
    # Nearest to (0.6, 0.8) with k=2: row 4 (task 2) then row 3 (task 1): a tie, the nearer one wins.
    assert finder.find(np.array([[1, 0.05]])).tolist() == [0]
    finder.k = 2
    assert finder.find(np.array([[0.6, 0.8]])).tolist() == [2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("task-residual")
    encoder = HistoryEncoder(CachedEmbedder(HashingEmbedder(), work / "cache"), mode="incremental")
    stage_a = write_synthetic_run(
        work / "stage-a", CARDS, HELPER, episodes_per_task=30, seed=0, switch_prob=0.05
    )
    out = work / "mtrouter-task"
    report = train_router(
        "mtrouter-task",
        [stage_a],
        out,
        TrainOptions(lam=0.0, seed=0, hyperparams={"max_epochs": 5}),
        pool=CARDS,
        encoder=encoder,
    )
    held_out = load_samples(
        [write_synthetic_run(work / "held-out", CARDS, HELPER, episodes_per_task=6, seed=1)]
    )
    return out, encoder, held_out, report


def test_a_prediction_is_the_network_plus_the_table(trained):
    out, encoder, held_out, _ = trained
    model = load_value_model(out)
    assert isinstance(model, TaskResidualModel)
    vectors = encoder.encode_batch([(s.task_description, s.history) for s in held_out[:40]])
    score, cost = model.predict(vectors, CARDS)
    residual, network_cost = MTRouterModel.predict(model, vectors, CARDS)
    rows = model.finder.find(vectors)
    np.testing.assert_allclose(score - residual, model.table.lookup(rows, [0, 1, 2])[..., 0], atol=1e-9)
    np.testing.assert_allclose(cost, network_cost)
    # The vote names each held-out decision's own task.
    assert np.mean(np.array(model.table.tasks)[rows] == np.array([s.task for s in held_out[:40]])) >= 0.9


def test_routes_each_task_to_its_helpful_model(trained):
    out, encoder, held_out, report = trained
    assert report.val_mse_score < report.baseline_mse_score, "table plus network predicts final scores"
    assert report.details["tasks"] == 3 and report.details["prior_weight"] in (0.5, 2.0, 8.0, 32.0)
    router = router_class("mtrouter-task")(str(out), lam=0.0, encoder=encoder)
    right = [router.route(state_of(s), np.random.default_rng(0)).model == HELPER[s.task] for s in held_out]
    assert np.mean(right) >= 0.8, f"helpful model in {np.mean(right):.0%} of decisions (random 33%)"


def test_refuses_targets_it_does_not_fit_and_logs_without_tasks(trained, tmp_path):
    out, encoder, _, _ = trained
    stage_a = out.parent / "stage-a"
    with pytest.raises(ConfigError, match="Monte-Carlo"):
        train_router(
            "mtrouter-task",
            [stage_a],
            tmp_path / "td",
            TrainOptions(target="td"),
            pool=CARDS,
            encoder=encoder,
        )
    with pytest.raises(ConfigError, match="score_target=final"):
        train_router(
            "mtrouter-task",
            [stage_a],
            tmp_path / "gain",
            TrainOptions(score_target="gain"),
            pool=CARDS,
            encoder=encoder,
        )
    samples = load_samples([stage_a])[:60]
    vectors = encoder.encode_batch([(s.task_description, s.history) for s in samples])
    data = build_training_set(
        samples, vectors, CARDS, TargetStats.fit(samples), TargetOptions(score_target="final")
    )
    with pytest.raises(ConfigError, match="task"):
        TaskResidualModel().fit(dataclasses.replace(data, task=None))


def test_an_untrained_score_tower_leaves_the_table_alone(trained, tmp_path):
    out, encoder, held_out, _ = trained
    untrained = tmp_path / "untrained"
    report = train_router(
        "mtrouter-task",
        [out.parent / "stage-a"],
        untrained,
        TrainOptions(seed=0, hyperparams={"max_epochs": 0}),
        pool=CARDS,
        encoder=encoder,
    )
    assert report.details["best_epoch"] == {"score": 0, "cost": 0}
    model = load_value_model(untrained)
    vectors = encoder.encode_batch([(s.task_description, s.history) for s in held_out[:20]])
    score, _ = model.predict(vectors, CARDS)
    np.testing.assert_allclose(
        score, model.table.lookup(model.finder.find(vectors), [0, 1, 2])[..., 0], atol=1e-12
    )


def test_the_router_reads_the_table_at_its_states_own_task(trained):
    out, encoder, held_out, _ = trained
    router = router_class("mtrouter-task")(str(out), lam=0.0, encoder=encoder)
    model = router.model
    boil = [s for s in held_out if s.task == "boil"][:30]
    vectors = encoder.encode_batch([(s.task_description, s.history) for s in boil])
    # Given a label, the table row is that task's, whatever the history says; an unknown label is voted.
    labelled, _ = model.predict(vectors, CARDS, tasks=["grow-plant"] * len(boil))
    residual, _ = MTRouterModel.predict(model, vectors, CARDS)
    row = model.table.rows_of(np.array(["grow-plant"]))
    np.testing.assert_allclose(
        labelled - residual, np.repeat(model.table.lookup(row, [0, 1, 2])[..., 0], 30, axis=0)
    )
    np.testing.assert_allclose(
        model.predict(vectors, CARDS, tasks=["no-such-task"] * 30)[0], model.predict(vectors, CARDS)[0]
    )
    # Routed as a grow-plant episode, a boil history goes to grow-plant's helpful model.
    chosen = [
        router.route(dataclasses.replace(state_of(s), task="grow-plant"), np.random.default_rng(0)).model
        for s in boil
    ]
    assert np.mean([c == HELPER["grow-plant"] for c in chosen]) >= 0.8
