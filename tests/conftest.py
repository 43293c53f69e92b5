"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_server import OpenAIChatServer

from harness.benchmarks import get_benchmark


@pytest.fixture
def openai_server() -> Iterator[OpenAIChatServer]:
    """A real OpenAI-compatible chat server on 127.0.0.1, fresh for each test."""
    with OpenAIChatServer() as server:
        yield server


@pytest.fixture(scope="module")
def env():
    """A real ScienceWorld engine (one JVM) shared by a test module."""
    environment = get_benchmark("scienceworld").make_environment()
    yield environment
    environment.close()


PLUGINS = Path(__file__).parent / "plugins"
ENTRY_POINTS = """\
[routing_harness.benchmarks]
counter = toy_benchmark:CounterBenchmark

[routing_harness.routers]
toy-ridge = toy_benchmark:ToyRidgeRouter
"""


@pytest.fixture(scope="session")
def plugin_distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A test-only installed distribution that registers the counter benchmark and a learned router
    through the real entry-point groups (on sys.path, which spawned workers inherit)."""
    site = tmp_path_factory.mktemp("site")
    info = site / "toy_benchmark_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-benchmark-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    added = [str(site), str(PLUGINS)]
    sys.path[:0] = added
    yield PLUGINS
    for entry in added:
        sys.path.remove(entry)
