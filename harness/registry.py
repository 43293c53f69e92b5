"""Plug-ins found by name: built-ins listed in code, third-party ones through an entry-point group.

Routers and benchmarks are both found this way, so a package adds either by
declaring ``name = "package.module:Class"`` in its ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from harness.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Registry:
    kind: str  # "router", "benchmark": used in messages
    group: str  # the entry-point group
    builtin: dict[str, str]  # name -> "module:attr"
    base: type

    def available(self) -> dict[str, str]:
        """Name -> 'module:attr' for built-ins and installed plugins."""
        found = dict(self.builtin)
        for ep in entry_points(group=self.group):
            found.setdefault(ep.name, ep.value)
        return found

    def load(self, name: str) -> Any:
        target = self.available().get(name)
        if target is None:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r} (available: {', '.join(sorted(self.available()))})"
            )
        module, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{self.kind} {name!r} ({target}) cannot be imported: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ConfigError(
                f"{self.kind} {name!r} ({target}) is not a {self.base.__module__}.{self.base.__name__} subclass"
            )
        return cls
