"""Router plugins, found by name.

Built-ins are listed here; third-party packages add routers through the
``routing_harness.routers`` entry-point group (``name = "package.module:Class"``).
"""

from __future__ import annotations

import inspect
import typing

from harness.config import coerce
from harness.errors import ConfigError
from harness.registry import Registry
from harness.types import ModelCard
from routers.base import Router

ENTRY_POINT_GROUP = "routing_harness.routers"

BUILTIN = {
    "single": "routers.baselines:SingleModelRouter",
    "random": "routers.baselines:RandomRouter",
    "round-robin": "routers.baselines:RoundRobinRouter",
    "heuristic": "routers.baselines:HeuristicRouter",
    "sticky-random": "routers.baselines:StickyRandomRouter",
    "mtrouter": "routers.learned.q_router:MTRouter",
    "mtrouter-task": "routers.learned.task_residual:TaskResidualRouter",
    "lgbm": "routers.learned.lgbm_router:LightGBMRouter",
    "ridge": "routers.learned.classic:RidgeRouter",
    "cluster": "routers.learned.classic:ClusterRouter",
    "beta-mix": "routers.learned.beta_mix:BetaMixRouter",
    "episode-knn": "routers.episode_level:EpisodeKNNRouter",
    "episode-classifier": "routers.episode_level:EpisodeClassifierRouter",
    "episode-task": "routers.episode_level:EpisodeTaskRouter",
    "llm-router": "routers.llm_router:LLMRouter",
}


REGISTRY = Registry(kind="router", group=ENTRY_POINT_GROUP, builtin=BUILTIN, base=Router)


def available() -> dict[str, str]:
    """Router name -> 'module:attr' for built-ins and installed plugins."""
    return REGISTRY.available()


def router_class(name: str) -> type[Router]:
    return REGISTRY.load(name)


def trainable() -> list[str]:
    """Names of the routers that ``harness train`` can fit, built-in or plugin."""
    names = []
    for name in sorted(available()):
        try:
            if router_class(name).trainable:
                names.append(name)
        except ConfigError:
            continue
    return names


def coerce_params(name: str, cls: type[Router], params: dict) -> dict:
    """Router parameters checked against the constructor's annotations, before the router is built.

    Errors name the router, the parameter and the expected type; a float parameter
    refuses NaN and infinities. A parameter without an annotation (or whose
    annotation cannot be resolved) is passed through as given.
    """
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - a plugin's annotation naming an import-time-only type
        hints = {}
    signature = inspect.signature(cls.__init__)
    coerced = {}
    for key, value in params.items():
        hint = hints.get(key)
        if key in signature.parameters and hint is not None:
            value = coerce(hint, value, f"router {name!r}: parameter {key!r}")
        coerced[key] = value
    return coerced


def make_router(name: str, params: dict, models: list[str] | list[ModelCard]) -> Router:
    """Instantiate a router for a pool; unknown, missing or ill-typed parameters are one-line errors.

    Given the pool's cards (not just names), a router holding a checkpoint also has
    them compared with the cards it was trained with, so a changed price is refused
    here, before any episode.
    """
    cls = router_class(name)
    params = coerce_params(name, cls, {k: v for k, v in params.items() if k != "label"})
    check_arguments(name, cls, params)
    try:
        router = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"router {name!r}: {exc}") from None
    router.check_pool(models)
    return router


def check_arguments(name: str, cls: type[Router], params: dict) -> None:
    """The parameters against the constructor's signature: a missing one is named (with how to give it),
    an unknown one is named with the ones the router takes."""
    signature = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    accepted = [p for p in list(signature.parameters.values())[1:] if p.kind is not p.VAR_POSITIONAL]
    names = [p.name for p in accepted]
    unknown = [key for key in params if key not in names]
    if unknown:
        raise ConfigError(
            f"router {name!r} has no parameter {unknown[0]!r} (its parameters: {', '.join(names) or 'none'})"
        )
    missing = [p.name for p in accepted if p.default is p.empty and p.name not in params]
    if missing:
        hint = f"; `harness train {name}` writes one" if cls.trainable and missing[0] == "checkpoint" else ""
        raise ConfigError(f"router {name!r} needs parameter {missing[0]!r} (-p {missing[0]}=...){hint}")


__all__ = ["Router", "available", "make_router", "router_class", "trainable"]
