"""Benchmark plug-ins: one folder per benchmark, registered by name.

Built-ins are listed here; a package adds a benchmark through the
``routing_harness.benchmarks`` entry-point group (``name = "package.module:Class"``),
where ``Class`` subclasses :class:`harness.benchmarks.base.Benchmark`.
"""

from __future__ import annotations

import functools

from harness.benchmarks.base import Benchmark
from harness.registry import Registry

REGISTRY = Registry(
    kind="benchmark",
    group="routing_harness.benchmarks",
    builtin={
        "scienceworld": "harness.benchmarks.scienceworld:ScienceWorld",
        "hle": "harness.benchmarks.hle:HLE",
        "hle-real": "harness.benchmarks.hle:HLEReal",
    },
    base=Benchmark,
)


@functools.cache
def get_benchmark(name: str) -> Benchmark:
    """The benchmark plug-in registered as ``name`` (one instance per process)."""
    return REGISTRY.load(name)()


def available() -> dict[str, str]:
    return REGISTRY.available()


__all__ = ["Benchmark", "available", "get_benchmark"]
