"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai_server import OpenAIChatServer


@pytest.fixture
def openai_server() -> Iterator[OpenAIChatServer]:
    """A real OpenAI-compatible chat server on 127.0.0.1, fresh for each test."""
    with OpenAIChatServer() as server:
        yield server
