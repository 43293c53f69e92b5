"""Router plugins, found by name.

Built-ins are listed here; third-party packages add routers through the
``routing_harness.routers`` entry-point group (``name = "package.module:Class"``).
"""

from __future__ import annotations

from harness.errors import ConfigError
from harness.registry import Registry
from routers.base import Router

ENTRY_POINT_GROUP = "routing_harness.routers"

BUILTIN = {
    "single": "routers.baselines:SingleModelRouter",
    "random": "routers.baselines:RandomRouter",
    "round-robin": "routers.baselines:RoundRobinRouter",
    "heuristic": "routers.baselines:HeuristicRouter",
    "sticky-random": "routers.baselines:StickyRandomRouter",
    "mtrouter": "routers.learned.q_router:MTRouter",
    "lgbm": "routers.learned.lgbm_router:LightGBMRouter",
    "ridge": "routers.learned.classic:RidgeRouter",
    "cluster": "routers.learned.classic:ClusterRouter",
    "beta-mix": "routers.learned.beta_mix:BetaMixRouter",
    "episode-knn": "routers.episode_level:EpisodeKNNRouter",
    "episode-classifier": "routers.episode_level:EpisodeClassifierRouter",
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


def make_router(name: str, params: dict, model_names: list[str]) -> Router:
    """Instantiate a router for a pool; unknown parameters are one-line errors."""
    cls = router_class(name)
    params = {k: v for k, v in params.items() if k != "label"}
    try:
        router = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"router {name!r}: {exc}") from None
    check = getattr(router, "check_pool", None)
    if check is not None:
        check(model_names)
    return router


__all__ = ["Router", "available", "make_router", "router_class", "trainable"]
