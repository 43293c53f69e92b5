"""Model pools: the candidate models, their price cards, and how to simulate them.

A pool is a YAML file under ``benchmarks/pools/`` so that users add a model or a
whole pool without touching code. The file's sha256 is recorded with every run.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import BENCHMARKS_DIR, RuleError, RunConfig, from_dict, load_yaml
from harness.errors import ConfigError, UnknownNameError
from harness.local.servers import LocalServer
from harness.types import ModelCard, PriceCard

POOLS_DIR = BENCHMARKS_DIR / "pools"


@dataclass(frozen=True)
class SimulatedProfile:
    """How a simulated model behaves; see :mod:`harness.backends.simulated` for the mechanics.

    ``skill`` maps a task topic (or ``default``) to the chance of emitting the next
    correct action on an ordinary turn. At a critical step (``focus on``) that chance
    is multiplied by ``critical_skill``, and a share ``wrong_focus_share`` of the
    misses focuses on the wrong object, which fails the task. ``premature_finish`` is
    the chance per turn of declaring the task completed before it is (weak models'
    habit, which also ends their episodes early and cheaply). ``task_difficulty`` is a
    logit offset per task type of the chance of getting a critical step right (held-out
    task types of a seen topic can be harder there), ``task_verbosity`` a
    completion length multiplier per task type on top of the topic's, and
    ``task_premature_finish`` the per-turn chance of declaring done on that task type
    in place of ``premature_finish`` (a model that gives up on unfamiliar tasks).
    """

    skill: dict[str, float]
    critical_skill: float = 1.0
    wrong_focus_share: float = 0.5
    persistence: float = 0.0
    premature_finish: float = 0.0
    error_mix: dict[str, float] = field(
        default_factory=lambda: {"wasted": 0.5, "invalid": 0.3, "malformed": 0.2}
    )
    completion_tokens: float = 150.0
    completion_sigma: float = 0.4
    topic_verbosity: dict[str, float] = field(default_factory=dict)  # completion length multiplier by topic
    task_difficulty: dict[str, float] = field(default_factory=dict)  # critical-step logit offset by task
    task_verbosity: dict[str, float] = field(default_factory=dict)  # completion length multiplier by task
    task_premature_finish: dict[str, float] = field(default_factory=dict)  # premature_finish by task

    def __post_init__(self) -> None:
        for topic, p in self.skill.items():
            if not 0.0 <= p <= 1.0:
                raise RuleError(f"skill[{topic!r}] must be in [0, 1], got {p}")
        for name in ("critical_skill", "wrong_focus_share", "persistence", "premature_finish"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise RuleError(f"{name} must be in [0, 1], got {value}")
        for task, p in self.task_premature_finish.items():
            if not 0.0 <= p <= 1.0:
                raise RuleError(f"task_premature_finish[{task!r}] must be in [0, 1], got {p}")
        if set(self.error_mix) - {"wasted", "invalid", "malformed"} or sum(self.error_mix.values()) <= 0:
            raise RuleError(f"error_mix must weigh wasted/invalid/malformed, got {self.error_mix}")
        if self.completion_tokens <= 0:
            raise RuleError(f"completion_tokens must be positive, got {self.completion_tokens}")
        for name in ("topic_verbosity", "task_verbosity"):
            for key, factor in getattr(self, name).items():
                if not factor > 0:
                    raise RuleError(f"{name}[{key!r}] must be positive, got {factor}")

    def skill_for(self, topic: str) -> float:
        if topic in self.skill:
            return self.skill[topic]
        if "default" in self.skill:
            return self.skill["default"]
        raise ConfigError(f"no skill for topic {topic!r} and no 'default'")


TOOL_CALL_PATHS = ("native", "text")


@dataclass(frozen=True)
class PoolModel:
    name: str
    price: PriceCard
    provider_model: str = ""
    context_window: int = 128_000
    max_output_tokens: int = 16_384
    knowledge_cutoff: str = "2024-06"
    reasoning: bool = False
    api_base: str | None = None
    api_key_env: str | None = None
    simulated: SimulatedProfile | None = None
    local: LocalServer | None = None  # served on this machine by llama.cpp (see harness.local)
    # How tool calls travel: "native" (the provider's tool-call API) or "text" (written into the
    # prompt and parsed from the reply by the harness, see harness.backends.text_tools).
    tool_calls: str = "native"
    price_basis: str = ""  # how the price card was set

    def __post_init__(self) -> None:
        if self.tool_calls not in TOOL_CALL_PATHS:
            raise ConfigError(
                f"tool_calls must be one of {', '.join(TOOL_CALL_PATHS)}, got {self.tool_calls!r}"
            )
        if self.local is not None and self.api_base is not None:
            raise ConfigError("a local model's api_base comes from its port; give one or the other")

    @property
    def card(self) -> ModelCard:
        return ModelCard(
            name=self.name,
            price=self.price,
            context_window=self.context_window,
            max_output_tokens=self.max_output_tokens,
            knowledge_cutoff=self.knowledge_cutoff,
            reasoning=self.reasoning,
            provider_model=self.provider_model or (f"openai/{self.name}" if self.local else ""),
        )


@dataclass(frozen=True)
class PoolFile:
    """A pool file under ``benchmarks/pools/``: its models in order, each with a price card and (for the
    simulated backend) a profile; ``calibration`` holds the targets ``harness calibrate`` fits to."""

    name: str
    models: list[PoolModel]
    description: str = ""
    specialization: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def calibrated_on(self) -> str:
        """The benchmark the calibration targets (and so the simulated profiles) are for."""
        return self.calibration.get("benchmark", RunConfig.benchmark)

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if not names:
            raise RuleError("pool has no models")
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise RuleError(f"duplicate model name {sorted(duplicates)[0]!r}")
        for model in self.models:
            check_price(model.price, f"model {model.name!r}")


@dataclass(frozen=True)
class Pool:
    """A loaded pool: its models in file order plus provenance (path and content hash)."""

    spec: PoolFile
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.spec.name

    def check_simulates(self, benchmark: str) -> None:
        """Refuse a pool whose simulated profiles were calibrated on another benchmark: their skills would
        stand in for ``benchmark``'s by their defaults, and its scores would mean nothing."""
        if not self.spec.calibration or not any(m.simulated is not None for m in self.spec.models):
            return
        calibrated = self.spec.calibrated_on
        if calibrated != benchmark:
            shipped = sorted(
                path.stem
                for path in POOLS_DIR.glob("*.yaml")
                if load_pool(str(path)).spec.calibrated_on == benchmark
            )
            hint = f", e.g. {', '.join(shipped)}" if shipped else ""
            raise ConfigError(
                f"pool {self.name!r} simulates {calibrated}, not {benchmark}: name a pool calibrated on"
                f" {benchmark} (--pool{hint})"
            )

    @property
    def cards(self) -> list[ModelCard]:
        return [m.card for m in self.spec.models]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.spec.models]

    def model(self, name: str) -> PoolModel:
        for m in self.spec.models:
            if m.name == name:
                return m
        raise UnknownNameError(
            f"unknown model {name!r} in pool {self.name!r} (known: {', '.join(self.names)})"
        )


def check_price(price: PriceCard, where: str) -> None:
    """A price the ledger can charge: finite and non-negative (the loader already refused NaN and infinities)."""
    for name in ("input_per_mtok", "output_per_mtok"):
        value = getattr(price, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise RuleError(f"{where}: price.{name} must be a finite number >= 0, got {value!r}")


def resolve_pool_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise UnknownNameError(f"pool file {path} does not exist")
        return path
    candidate = POOLS_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = sorted(p.stem for p in POOLS_DIR.glob("*.yaml"))
        raise UnknownNameError(f"unknown pool {name_or_path!r} (known: {', '.join(known)})")
    return candidate


def load_pool(name_or_path: str) -> Pool:
    path = resolve_pool_path(name_or_path)
    raw = path.read_bytes()
    spec = from_dict(PoolFile, load_yaml(path), str(path))
    return Pool(spec=spec, path=path, sha256=hashlib.sha256(raw).hexdigest())
