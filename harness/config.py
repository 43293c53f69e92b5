"""Typed run configuration loaded from YAML; the single place where defaults live.

Loading is strict: an unknown key, a wrong type or an out-of-range value raises
``ConfigError`` naming the file and the field, before any work starts. Numbers
must be finite (NaN and infinities are refused wherever a float is expected),
mappings are checked value by value, and :func:`coerce` applies the same rules
to anything annotated (router constructor parameters use it).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
# What plays a batch's episodes (harness.executors): this machine's worker processes, or actors on Ray.
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Limits:
    """Per-episode limits; a field left None takes the benchmark plug-in's (the reference's) value."""

    max_turns: int | None = None
    budget_dollars: float | None = None

    def __post_init__(self) -> None:
        if self.max_turns is not None and self.max_turns <= 0:
            raise ConfigError(f"limits.max_turns must be positive, got {self.max_turns}")
        if self.budget_dollars is not None and not self.budget_dollars > 0:
            raise ConfigError(f"limits.budget_dollars must be positive, got {self.budget_dollars}")

    def over(self, default: Limits) -> Limits:
        """These limits with every unset field taken from ``default``."""
        return Limits(
            max_turns=default.max_turns if self.max_turns is None else self.max_turns,
            budget_dollars=default.budget_dollars if self.budget_dollars is None else self.budget_dollars,
        )


@dataclass(frozen=True)
class RouterSpec:
    """A router by registry name plus its constructor parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.params.get("label") or (
            f"{self.name}:{self.params['model']}" if "model" in self.params else self.name
        )


@dataclass(frozen=True)
class RunConfig:
    """One batch: one router over one split with one pool. A run directory holds exactly one.

    ``limits`` None means the benchmark's own; ``split_file`` None its shipped split;
    ``judge`` names the pool model a judge-based scorer calls; ``repeats`` plays each
    variation that many times, each play with its own episode seed (:class:`TaskInstance`).
    ``executor`` says where the episodes are played (see :data:`EXECUTORS`); ``prefix_cache`` is a
    directory where the engine prefix cache lives (:mod:`harness.replay.prefix_store`), None: no
    cache. ``constrained`` turns on constrained decoding where the benchmark's format offers it (the
    reply limited by a JSON schema sent as the request's ``response_format``; a real backend only).
    Neither ``executor`` nor ``prefix_cache`` changes what is recorded, so both are left out of the run's config snapshot
    (:data:`UNRECORDED_FIELDS`): a run may be resumed on another executor, with or without the cache.
    """

    router: RouterSpec
    pool: str = "paper6"
    benchmark: str = "scienceworld"
    split: str = "test_id"
    split_file: str | None = None
    quick: bool = False
    task_filter: str | None = None
    seed: int = 0
    workers: int = 1
    limits: Limits | None = None
    backend: str = "simulated"  # or "litellm"
    judge: str | None = None
    repeats: int = 1
    executor: str = "local"
    prefix_cache: str | None = None
    constrained: bool = False

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.backend not in ("simulated", "litellm"):
            raise ConfigError(f"backend must be 'simulated' or 'litellm', got {self.backend!r}")
        if self.constrained and self.backend != "litellm":
            raise ConfigError("constrained decoding needs a real backend (backend: litellm)")
        if self.constrained and self.prefix_cache is not None:
            raise ConfigError(
                "constrained decoding reads the live engine's valid actions: turn off the prefix cache"
            )


UNRECORDED_FIELDS = frozenset({"prefix_cache", "executor"})


def recorded(config: RunConfig) -> dict[str, Any]:
    """The config as a run directory records it: every field that can change its episodes (``repeats``
    only when above 1 and ``constrained`` only when on, so run directories written before they existed
    hold the same run)."""
    run = {k: v for k, v in to_plain(config).items() if k not in UNRECORDED_FIELDS}
    if config.repeats == 1:
        del run["repeats"]
    if not config.constrained:
        del run["constrained"]
    return run


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from plain YAML data, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = coerce(hints[name], value, f"{where}.{name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


_EXPECTED = {float: "a finite number", int: "an integer", str: "a string", bool: "true or false"}


def describe(hint: Any) -> str:
    """A type annotation as a user reads it in an error: ``float`` is "a finite number (float)"."""
    if hint in _EXPECTED:
        return f"{_EXPECTED[hint]} ({hint.__name__})"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against (and, int to float, converted to) annotation ``hint``; ``where`` prefixes errors."""
    return _coerce(hint, value, where)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        if len(real) == 1:
            return _coerce(real[0], value, where)
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {describe(hint)}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            allowed = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"{where}: expected one of {allowed}, got {value!r}")
        return value
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_hint, value_hint = typing.get_args(hint) or (Any, Any)
        return {
            _coerce(key_hint, k, f"{where} key"): _coerce(value_hint, v, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(item, v, f"{where}[{_item_name(i, v)}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (
        not isinstance(value, hint) or (hint in (int, float) and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}: expected {describe(hint)}, got {value!r}")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"{where}: expected {describe(hint)}, got {value!r}")
    if isinstance(hint, type) and hint.__module__ != "builtins" and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {describe(hint)}, got {value!r}")
    return value


def _item_name(index: int, item: Any) -> str:
    """A list item as errors name it: by its ``name`` if it has one (a pool's model), else by position."""
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return repr(item["name"])
    return str(index)


def load_yaml(path: Path) -> Any:
    """Read a YAML file, turning I/O and syntax problems into one-line ConfigErrors."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{at}") from None


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain data for YAML/JSON snapshots."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
