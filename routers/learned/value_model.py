"""What every learned router predicts, and the checkpoint format they share.

A value model maps (history vector, model card) to two numbers: the expected
normalised final score and the expected normalised cost-to-go. Keeping them
apart makes the price-quality trade-off ``lam`` an inference-time knob: one
fitted model serves a whole Pareto sweep (the reference trains one network per
lambda).

A checkpoint is a directory: kind-specific weight files plus
``checkpoint.json`` (format version, kind, pool, encoder config, target
statistics, hyperparameters), written last so that a directory without it is
not a checkpoint. An ensemble of one kind (:mod:`routers.learned.ensemble`) is
a checkpoint of that kind whose state lists its members, so it loads wherever
the kind does.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.errors import ConfigError
from harness.trajectory import write_json_atomic
from harness.types import ModelCard, PriceCard
from routers.learned.dataset import TargetOptions, TargetStats, TrainingSet
from routers.learned.encoder_spec import EncoderConfig

FORMAT_VERSION = 1
META_FILE = "checkpoint.json"
MEMBERS_STATE = "members"  # in a checkpoint's state: it is an ensemble of that many members of its kind


def card_to_dict(card: ModelCard) -> dict:
    return dataclasses.asdict(card)


def card_from_dict(data: dict) -> ModelCard:
    return ModelCard(**{**data, "price": PriceCard(**data["price"])})


def save_array_file(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.exists():
        raise ConfigError(f"{directory} is not a router checkpoint (no {META_FILE})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"corrupt router checkpoint {path}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"router checkpoint {directory} has format version {meta.get('format_version')}, this harness reads {FORMAT_VERSION}"
        )
    return meta


def _price_text(price: PriceCard) -> str:
    return f"${price.input_per_mtok:g}/${price.output_per_mtok:g} per Mtok (version {price.version})"


class ValueModel(abc.ABC):
    """Base of the learned routers' predictors: fit on a TrainingSet, predict (score, cost) per model."""

    kind: ClassVar[str]
    supports_new_models: ClassVar[bool] = False  # True if a model's metadata alone yields a prediction
    # The score target the family needs (see TargetOptions); None: TargetOptions' default.
    score_target: ClassVar[str | None] = None

    def __init__(self) -> None:
        self.cards: list[ModelCard] = []
        self.stats: TargetStats | None = None
        self.options = TargetOptions()
        self.encoder: EncoderConfig | None = None
        self.allow_new_models = False

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's parameters: the hyperparameters a checkpoint stores (scikit-learn style)."""
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, read back from the attributes of the same names (scikit-learn's
        ``get_params``), so ``type(model)(**model.get_params())`` is the same unfitted model."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params: Any) -> ValueModel:
        """Change constructor parameters (scikit-learn's ``set_params``); returns the model, unfitted.

        The constructor runs again with the changed values, so they are checked as at
        construction and nothing derived from the old ones survives; refit afterwards.
        """
        names = self.param_names()
        unknown = [key for key in params if key not in names]
        if unknown:
            raise ConfigError(
                f"a {self.kind} value model has no parameter {unknown[0]!r} (its parameters: {', '.join(names)})"
            )
        merged = {**self.get_params(), **params}
        self.__dict__.clear()
        type(self).__init__(self, **merged)
        return self

    def raw_units(
        self, score: np.ndarray, cost: np.ndarray, score_before: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predictions back in the benchmark's units: the final score and the dollars still to spend.

        The "gain" score target is the score still to be gained, so the final score is
        ``score_before + gain * span`` (``score_before``: the score shown before each state,
        one per row); the "final" target is ``score_low + value * span``; cost-to-go is
        ``cost * mean_episode_cost``.
        """
        if self.stats is None:
            raise ConfigError(f"the {self.kind} value model is not fitted")
        span = self.stats.score_high - self.stats.score_low
        if self.options.score_target == "gain":
            if score_before is None:
                raise ConfigError("a 'gain' value model needs the score so far")
            raw_score = score_before[:, None] + score * span
        else:
            raw_score = self.stats.score_low + score * span
        return raw_score, cost * self.stats.mean_episode_cost

    @abc.abstractmethod
    def fit(
        self, train: TrainingSet, val: TrainingSet | None = None, init_from: ValueModel | None = None
    ) -> ValueModel:
        """Fit on ``train``; ``val`` drives early stopping or model selection; ``init_from`` warm-starts."""

    @abc.abstractmethod
    def predict(self, embeddings: np.ndarray, cards: list[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        """``(n, len(cards))`` arrays of predicted normalised score and cost-to-go."""

    def fit_details(self) -> dict[str, Any]:
        """What fitting decided (epochs run, alpha chosen, ...), for the fit report."""
        return {}

    @abc.abstractmethod
    def _save_state(self, directory: Path) -> dict[str, Any]:
        """Write weight files; return small JSON-able state for the meta file."""

    @abc.abstractmethod
    def _load_state(self, directory: Path, state: dict[str, Any]) -> None: ...

    def adopt(self, data: TrainingSet) -> None:
        """Take the pool, target statistics and encoder config of the data being fitted."""
        if len(data) == 0:
            raise ConfigError(f"cannot fit a {self.kind} router on zero decisions")
        self.cards = list(data.cards)
        self.stats = data.stats
        self.options = data.options
        self.encoder = data.encoder

    def model_positions(self, cards: list[ModelCard]) -> list[int | None]:
        """Each card's row in the training pool, None for a model the checkpoint never saw."""
        trained = {card.name: i for i, card in enumerate(self.cards)}
        positions: list[int | None] = []
        for card in cards:
            position = trained.get(card.name)
            if position is None and not (self.allow_new_models and self.supports_new_models):
                raise ConfigError(self._new_model_message(card.name))
            positions.append(position)
        return positions

    def _new_model_message(self, name: str) -> str:
        if self.supports_new_models:
            return (
                f"model {name!r} is not in the {self.kind} checkpoint's pool "
                f"({', '.join(c.name for c in self.cards)}); pass allow_new_models=True to score it from its metadata"
            )
        return (
            f"model {name!r} is not in the {self.kind} checkpoint's pool "
            f"({', '.join(c.name for c in self.cards)}) and a {self.kind} router cannot score unseen models; retrain"
        )

    def check_pool(self, cards: list[ModelCard] | list[str]) -> None:
        """Raise a one-line ConfigError naming the first model that differs from the training pool.

        Accepts cards (compared in full: a changed price changes every cost prediction)
        or bare names (what ``make_router`` knows).
        """
        trained = {card.name: card for card in self.cards}
        names = [card if isinstance(card, str) else card.name for card in cards]
        for name, card in zip(names, cards, strict=True):
            if name not in trained:
                if not (self.allow_new_models and self.supports_new_models):
                    raise ConfigError(self._new_model_message(name))
            elif not isinstance(card, str) and card != trained[name]:
                raise ConfigError(self._changed_card_message(card, trained[name]))
        for name in trained:
            if name not in names:
                raise ConfigError(
                    f"model {name!r} of the {self.kind} checkpoint's pool is missing from the given pool"
                )

    def _changed_card_message(self, given: ModelCard, trained: ModelCard) -> str:
        """Which part of a card changed since training: every cost prediction was made at the trained price."""
        if given.price != trained.price:
            return (
                f"model {given.name!r} has a different price card in this pool ({_price_text(given.price)}) "
                f"than in the {self.kind} checkpoint it was trained with ({_price_text(trained.price)}); "
                "use the training pool or retrain"
            )
        changed = [
            f.name
            for f in dataclasses.fields(ModelCard)
            if getattr(given, f.name) != getattr(trained, f.name)
        ]
        return (
            f"model {given.name!r} has a different {changed[0]} than in the {self.kind} checkpoint "
            f"({getattr(given, changed[0])!r}, trained with {getattr(trained, changed[0])!r}); retrain"
        )

    def save(self, directory: str | Path) -> None:
        if self.stats is None or self.encoder is None:
            raise ConfigError(
                f"cannot save a {self.kind} model that was not fitted on a TrainingSet with an encoder config"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stale = directory / META_FILE
        if stale.exists():
            stale.unlink()  # the directory is not a checkpoint until the new meta is written
        state = self._save_state(directory)
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "pool": [card_to_dict(card) for card in self.cards],
            "encoder": self.encoder.to_dict(),
            "stats": dataclasses.asdict(self.stats),
            "targets": dataclasses.asdict(self.options),
            "hyperparams": self.get_params(),
            "state": state,
        }
        write_json_atomic(directory / META_FILE, meta)

    @classmethod
    def load(
        cls, directory: str | Path, pool_cards: list[ModelCard] | None = None, allow_new_models: bool = False
    ) -> ValueModel:
        directory = Path(directory)
        meta = read_meta(directory)
        if meta["kind"] != cls.kind:
            raise ConfigError(f"checkpoint {directory} holds a {meta['kind']!r} router, not {cls.kind!r}")
        if MEMBERS_STATE in meta["state"]:
            from routers.learned.ensemble import EnsembleModel

            model: ValueModel = EnsembleModel(member_class=cls)
        else:
            model = cls(**meta["hyperparams"])
        model.cards = [card_from_dict(card) for card in meta["pool"]]
        model.stats = TargetStats(**meta["stats"])
        model.options = TargetOptions(**meta["targets"])
        model.encoder = EncoderConfig.from_dict(meta["encoder"])
        model.allow_new_models = allow_new_models
        model._load_state(directory, meta["state"])
        if pool_cards is not None:
            model.check_pool(pool_cards)
        return model


def model_class(kind: str) -> type[ValueModel]:
    """The value model behind a registered learned router name."""
    from routers import router_class

    cls = router_class(kind).model_class
    if cls is None:
        raise ConfigError(f"router {kind!r} is not a learned router with a checkpoint")
    return cls


def load_value_model(
    directory: str | Path, pool_cards: list[ModelCard] | None = None, allow_new_models: bool = False
) -> ValueModel:
    """Load any kind of checkpoint; the kind is read from its meta file."""
    return model_class(read_meta(directory)["kind"]).load(directory, pool_cards, allow_new_models)
