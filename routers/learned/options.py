"""The options of training a learned router, in a module light enough for the CLI to import.

:class:`TrainOptions` is the one place their defaults live: ``harness train --help`` shows
them, :func:`routers.learned.train.train_router` uses them and its fit report records them.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.config import coerce
from harness.errors import ConfigError

DEFAULT_TURN_BUCKETS = (0, 1, 3, 6, 10, 15, 20, 30, 40)  # left edges


@dataclass(frozen=True)
class TrainOptions:
    """How a learned family is fitted: every training option and its default, written once.

    ``harness train`` shows these defaults, a benchmark definition's ``learned`` params and
    ``harness train -p key=value`` overlay them (:meth:`from_params`), and the fit report
    records the options used. ``hyperparams`` are the family's value-model constructor
    parameters (:meth:`ValueModel.get_params` names), passed to it as given.

    ``pool``: the pool to train for (default: the one the runs name). ``seed`` seeds the
    model and, unless ``split_seed`` is given, the validation split (``val_fraction`` of the
    task instances). ``cache_dir``, ``mode`` and ``embedder`` build the history encoder.
    ``error_weight``, ``weight_clip``, ``score_target``, ``target``, ``td_lambda`` and
    ``fqi_iterations`` choose the regression targets (:mod:`routers.learned.targets`; None:
    the family's or :class:`TargetOptions`' default; ``fqi`` and ``dr`` bootstrap from the
    router greedy at ``lam``). ``ensemble`` > 1 fits that many members (seeds ``seed``,
    ``seed + 1``, ...; each on a bootstrap resample of the episodes with
    ``ensemble_mode="bootstrap"``) and ``defer_threshold`` is their routing fallback
    (:mod:`routers.learned.ensemble`). ``init_from`` warm-starts from a checkpoint of the same
    kind (its normalisation and targets are kept). ``lam``, ``turn_buckets`` and
    ``min_per_model`` drive the fit report's ranking accuracy.
    """

    pool: str | None = None
    lam: float = 0.5
    val_fraction: float = 0.2
    seed: int = 0
    split_seed: int | None = None
    cache_dir: str | None = None
    mode: str = "incremental"
    embedder: str | None = None
    error_weight: float | None = None
    weight_clip: float | None = None
    score_target: str | None = None
    target: str | None = None
    td_lambda: float | None = None
    fqi_iterations: int | None = None
    ensemble: int = 1
    ensemble_mode: str = "seeds"
    defer_threshold: float | None = None
    score_range: tuple[float, float] | None = None
    init_from: str | None = None
    turn_buckets: tuple[int, ...] = DEFAULT_TURN_BUCKETS
    min_per_model: int = 2
    hyperparams: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lam < 0:
            raise ConfigError(f"lam must be >= 0, got {self.lam}")

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "hyperparams"]

    @classmethod
    def from_params(cls, kind: str, params: Mapping[str, Any]) -> TrainOptions:
        """Flat ``key: value`` params (a definition's ``learned`` entry, ``harness train -p``) as options
        and ``kind``'s value-model hyperparameters, each checked by name and type before any work."""
        from routers import router_class, trainable

        family = router_class(kind)
        model_cls = family.model_class
        if not family.trainable or model_cls is None:
            raise ConfigError(
                f"router {kind!r} is not a trainable router family (trainable: {', '.join(trainable())})"
            )
        options = cls.option_names()
        model_params = model_cls.param_names()
        option_hints = typing.get_type_hints(cls)
        model_hints = typing.get_type_hints(model_cls.__init__)
        given: dict[str, Any] = {}
        hyperparams: dict[str, Any] = {}
        for key, value in params.items():
            if key in options:
                where = f"router {kind!r}: training option {key!r}"
                given[key] = None if value is None else coerce(option_hints[key], value, where)
            elif key in model_params:
                hint = model_hints.get(key)
                where = f"router {kind!r}: training hyperparameter {key!r}"
                hyperparams[key] = coerce(hint, value, where) if hint is not None else value
            else:
                raise ConfigError(
                    f"router {kind!r} has no training option or hyperparameter {key!r} (options: "
                    f"{', '.join(options)}; {kind} hyperparameters: {', '.join(model_params)})"
                )
        if isinstance(given.get("turn_buckets"), list):
            given["turn_buckets"] = tuple(given["turn_buckets"])
        if isinstance(given.get("score_range"), list):
            given["score_range"] = tuple(given["score_range"])
        return cls(**given, hyperparams=hyperparams)
