"""Router plugins, found by name.

Built-ins are listed here; third-party packages add routers through the
``routing_harness.routers`` entry-point group (``name = "package.module:Class"``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from harness.errors import ConfigError, UnknownNameError
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
}


def available() -> dict[str, str]:
    """Router name -> 'module:attr' for built-ins and installed plugins."""
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def router_class(name: str) -> type[Router]:
    target = available().get(name)
    if target is None:
        raise UnknownNameError(f"unknown router {name!r} (available: {', '.join(sorted(available()))})")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Router)):
        raise ConfigError(f"router {name!r} ({target}) is not a routers.base.Router subclass")
    return cls


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


__all__ = ["Router", "available", "make_router", "router_class"]
