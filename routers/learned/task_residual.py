"""``mtrouter-task``: MTRouter's Q-network fitted on what a per-task table leaves unexplained.

The Q-network learns little from single returns (its score head explained about 3% of
held-out variance on paper6), while the per (task, model) table of :mod:`routers.learned.task_table`
pools every episode of a task and carries the pool's specialisation. Here the table is the
prior and the network the correction: each decision's score target becomes the episode's final
score minus its (task, model) cell, the cell *cross-fitted* (estimated without the episode's own
fold of episodes, so its luck is not subtracted from itself), and a prediction adds the table
back. Where the network finds nothing, the router is the table applied at every turn; where
histories say more than the task does (a critical turn, a model stuck in a loop) the network
moves it. The cost-to-go tower is MTRouter's, unchanged: cost is learned well without help.

At routing time the table row is the state's own task label, which every router sees. A caller
with history vectors only (diagnostics, off-policy replay) or a task the table never saw gets the
vote of the nearest training decisions (:class:`~routers.learned.task_table.NearestTasks`); the
label matters: voted at every turn, a 4-7% share of decisions read another task's row, and each
such turn switched to that task's model (on paper6's val, 7.8% of turns switched against none for
episode-task, and the episodes scored 12 points less).
It trains on final scores (``score_target=final``), not on the gain still to come, because a
table cell is a final score and at routing time the score so far is not known to subtract; the
score so far is the same for every candidate at a state, so the ranking is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.errors import ConfigError
from harness.types import ModelCard, TurnState
from routers.learned.dataset import TrainingSet
from routers.learned.q_router import MTRouter, MTRouterModel
from routers.learned.state_baseline import episode_folds
from routers.learned.task_table import NearestTasks, TaskTable, cross_fitted_table_scores
from routers.learned.value_model import ValueModel, save_array_file

TABLE_FILE = "task_table.npz"


class TaskResidualModel(MTRouterModel):
    kind = "mtrouter-task"
    # Table cells are final scores; a gain target would differ from them by the score so far.
    score_target = "final"

    table: TaskTable | None = None
    finder: NearestTasks | None = None

    def _new_networks(self) -> nn.ModuleDict:
        """The score tower's output layer starts at zero: before it learns anything the router is the table,
        and early stopping (which weighs this untrained tower too) keeps it so when the residuals are noise."""
        networks = super()._new_networks()
        output = networks["score"].mlp[-1]
        with torch.no_grad():
            output.weight.zero_()
            output.bias.zero_()
        return networks

    def _untrained_val_loss(self, network, target: str, features, positions, val_tensors) -> float:
        """The zero-started score tower is the table itself, a candidate early stopping must weigh."""
        if target != "score":
            return super()._untrained_val_loss(network, target, features, positions, val_tensors)
        return self._val_loss(network, target, features, positions, val_tensors)

    def fit_details(self) -> dict[str, Any]:
        details = super().fit_details()
        if self.table is not None:
            details.update(prior_weight=self.table.weight, tasks=len(self.table.tasks))
        return details

    def fit(
        self, train: TrainingSet, val: TrainingSet | None = None, init_from: ValueModel | None = None
    ) -> TaskResidualModel:
        """The table from train's openings (its prior weight chosen on val's), then the network on residuals."""
        if train.task is None or train.turn is None or train.episode_index is None:
            raise ConfigError(
                "mtrouter-task needs each decision's task, turn and episode; this training set lacks them"
            )
        if train.options.score_target != "final":
            raise ConfigError("mtrouter-task predicts final scores; it needs score_target=final")
        if train.options.target != "mc":
            raise ConfigError(
                f"mtrouter-task fits Monte-Carlo residuals; target {train.options.target!r} is not supported"
            )
        n_models = len(train.cards)
        final, opening = train.score.astype(np.float64), train.turn == 0
        outcomes = np.stack([final[opening], train.cost[opening]], axis=1)
        table = TaskTable.fit(train.task[opening], train.model_index[opening], outcomes, n_models)
        residual_val = None
        if val is not None and len(val):
            if val.task is None or val.turn is None:
                raise ConfigError("mtrouter-task needs each validation decision's task and turn")
            val_final, val_opening = val.score.astype(np.float64), val.turn == 0
            if val_opening.any():
                table.choose_weight(
                    table.rows_of(val.task[val_opening]),
                    val.model_index[val_opening],
                    val_final[val_opening],
                    val.weight[val_opening],
                )
            val_base = table.logged(table.rows_of(val.task), val.model_index)[:, 0]
            residual_val = val.with_targets(val_final - val_base, val.cost)
        folds = episode_folds(train.episode_index, self.seed)
        base = cross_fitted_table_scores(
            train.task, train.model_index, final, opening, folds, n_models, table.weight
        )
        super().fit(train.with_targets(final - base, train.cost), residual_val, init_from)
        self.table = table
        self.finder = NearestTasks.sample(train.embeddings, table.rows_of(train.task), self.seed)
        return self

    def table_rows(self, embeddings: np.ndarray, tasks: Sequence[str] | None) -> np.ndarray:
        """Each decision's table row: its task's, where the task is given and in the table, else the vote
        of the nearest training decisions (a task never trained on borrows the most similar one's)."""
        if self.table is None or self.finder is None:
            raise ConfigError("mtrouter-task model is not fitted")
        rows = (
            np.full(len(embeddings), -1)
            if tasks is None
            else self.table.rows_of(np.asarray(tasks, dtype=object))
        )
        unknown = rows < 0
        if unknown.any():
            rows[unknown] = self.finder.find(embeddings[unknown])
        return rows

    def table_scores(
        self, embeddings: np.ndarray, cards: list[ModelCard], tasks: Sequence[str] | None = None
    ) -> np.ndarray:
        """``(n, len(cards))`` each candidate's table score in the decision's task; a model the table never
        saw (scored from its metadata) gets the mean over the table's models."""
        rows = self.table_rows(np.asarray(embeddings), tasks)
        assert self.table is not None
        positions = self.model_positions(cards)
        known = [p for p in positions if p is not None]
        cells = self.table.lookup(rows, known)[..., 0]
        out = np.empty((len(embeddings), len(cards)))
        column = dict(zip(known, range(len(known)), strict=True))
        for j, position in enumerate(positions):
            out[:, j] = cells[:, column[position]] if position is not None else self.table.means[:, 0].mean()
        return out

    def predict(
        self, embeddings: np.ndarray, cards: list[ModelCard], tasks: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``tasks``: each decision's public task label, where the caller has it (the router does, from its
        state); without it the task is voted from the history vector."""
        residual, cost = super().predict(embeddings, cards)
        return residual + self.table_scores(embeddings, cards, tasks), cost

    def _save_state(self, directory: Path) -> dict[str, Any]:
        assert self.table is not None and self.finder is not None
        save_array_file(
            directory / TABLE_FILE, vectors=self.finder.vectors, rows=self.finder.rows, **self.table.arrays()
        )
        return {
            **super()._save_state(directory),
            "tasks": self.table.tasks,
            "prior_weight": self.table.weight,
            "neighbours": self.finder.k,
        }

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        super()._load_state(directory, state)
        with np.load(directory / TABLE_FILE) as arrays:
            self.table = TaskTable.from_arrays(state["tasks"], state["prior_weight"], arrays)
            self.finder = NearestTasks(arrays["vectors"], arrays["rows"], int(state["neighbours"]))


class TaskResidualRouter(MTRouter):
    """Registry name ``mtrouter-task``: reads the table at the state's own task label."""

    name = "mtrouter-task"
    model_class = TaskResidualModel

    def predict(self, vectors: np.ndarray, states: Sequence[TurnState]) -> tuple[np.ndarray, np.ndarray]:
        model = self.model
        if not isinstance(model, TaskResidualModel):  # an ensemble of them: each member votes the task
            return super().predict(vectors, states)
        return model.predict(vectors, list(states[0].candidates), tasks=[state.task for state in states])
