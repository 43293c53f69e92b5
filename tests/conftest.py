"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai_server import OpenAIChatServer

from harness.environments import make_environment


@pytest.fixture
def openai_server() -> Iterator[OpenAIChatServer]:
    """A real OpenAI-compatible chat server on 127.0.0.1, fresh for each test."""
    with OpenAIChatServer() as server:
        yield server


@pytest.fixture(scope="module")
def env():
    """A real ScienceWorld engine (one JVM) shared by a test module."""
    environment = make_environment("scienceworld")
    yield environment
    environment.close()
