"""A trained router as an MLflow pyfunc model, so a logged router can be loaded and queried anywhere.

The model stores the checkpoint directory, the router family, its default lambda
and the pool's model cards; loading rebuilds the router through the router
registry (:func:`routers.make_router`) with ``{checkpoint, lam}``, so every
registered router family works without a wrapper of its own. Lambda is an
inference-time knob and may be overridden per call (``params={"lam": ...}``).

Input: a DataFrame with one turn state per row. Required columns are
``task_description``, ``history`` (a list of ``{role, content}``) and ``turn``;
``candidates`` (model names, default: the whole pool), ``benchmark``, ``task``,
``variation``, ``dollars_spent``, ``budget_dollars``, ``max_turns``,
``last_action_valid``, ``consecutive_errors`` and ``previous_model`` are optional. Output: one row per
input row with the chosen ``model``, its ``propensity`` and the router's per-model
``scores`` (empty when the router reports none).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Object, ParamSchema, ParamSpec, Property, Schema

from harness.config import Limits, resolved_limits
from harness.errors import UnknownNameError
from harness.seeding import derive_seed
from harness.types import Message, ModelCard, PriceCard, TurnState
from routers import make_router

CHECKPOINT_ARTIFACT = "checkpoint"
SPEC_ARTIFACT = "router"


def signature(lam: float) -> ModelSignature:
    history = Array(Object([Property("role", "string"), Property("content", "string")]))
    optional = [
        ColSpec(Array("string"), "candidates", required=False),
        ColSpec("string", "benchmark", required=False),
        ColSpec("string", "task", required=False),
        ColSpec("long", "variation", required=False),
        ColSpec("double", "dollars_spent", required=False),
        ColSpec("double", "budget_dollars", required=False),
        ColSpec("long", "max_turns", required=False),
        ColSpec("boolean", "last_action_valid", required=False),
        ColSpec("long", "consecutive_errors", required=False),
        ColSpec("string", "previous_model", required=False),
    ]
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "task_description"),
                ColSpec(history, "history"),
                ColSpec("long", "turn"),
                *optional,
            ]
        ),
        params=ParamSchema([ParamSpec("lam", "double", float(lam)), ParamSpec("seed", "long", 0)]),
    )


def card_from_plain(data: dict[str, Any]) -> ModelCard:
    return ModelCard(**{**data, "price": PriceCard(**data["price"])})


def _given(row: dict[str, Any], key: str, default: Any) -> Any:
    """An optional column's value; absent columns and missing cells both mean the default."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return value


class RouterModel(mlflow.pyfunc.PythonModel):
    """Routes turn states with a router rebuilt from the registry; see the module docstring."""

    def load_context(self, context: Any) -> None:
        spec = json.loads(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        self.family: str = spec["family"]
        self.lam: float = float(spec["lam"])
        self.params: dict[str, Any] = spec["params"]
        self.benchmark: str = spec["benchmark"]
        self.limits = resolved_limits(Limits(**spec["limits"]), self.benchmark)
        self.cards = [card_from_plain(c) for c in spec["cards"]]
        self.checkpoint = context.artifacts[CHECKPOINT_ARTIFACT]
        self._routers: dict[float, Any] = {}

    def router(self, lam: float):
        if lam not in self._routers:
            params = {**self.params, "checkpoint": self.checkpoint, "lam": lam}
            self._routers[lam] = make_router(self.family, params, [c.name for c in self.cards])
        return self._routers[lam]

    def state(self, row: dict[str, Any]) -> TurnState:
        by_name = {c.name: c for c in self.cards}
        names = _given(row, "candidates", None)
        unknown = [str(n) for n in names or [] if str(n) not in by_name]
        if unknown:
            raise UnknownNameError(
                f"candidate model {unknown[0]!r} is not in the router's pool ({', '.join(by_name)})"
            )
        candidates = self.cards if names is None else [by_name[str(n)] for n in names]
        return TurnState(
            benchmark=_given(row, "benchmark", self.benchmark),
            task=_given(row, "task", ""),
            variation=int(_given(row, "variation", 0)),
            task_description=row["task_description"],
            history=[Message(m["role"], m["content"]) for m in row["history"]],
            turn=int(row["turn"]),
            dollars_spent=float(_given(row, "dollars_spent", 0.0)),
            budget_dollars=float(_given(row, "budget_dollars", self.limits.budget_dollars)),
            max_turns=int(_given(row, "max_turns", self.limits.max_turns)),
            candidates=candidates,
            last_action_valid=bool(_given(row, "last_action_valid", True)),
            consecutive_errors=int(_given(row, "consecutive_errors", 0)),
            previous_model=_given(row, "previous_model", None),
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = params or {}
        router = self.router(float(params.get("lam", self.lam)))
        seed = int(params.get("seed", 0))
        decisions = [
            router.route(self.state(row), np.random.default_rng(derive_seed(seed, i)))
            for i, row in enumerate(model_input.to_dict("records"))
        ]
        return pd.DataFrame(
            {
                "model": [d.model for d in decisions],
                "propensity": [d.propensity for d in decisions],
                "scores": [dict(d.scores or {}) for d in decisions],
            }
        )
