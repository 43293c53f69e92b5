"""The routed call: the chosen pool model through LiteLLM's async API, retried by the pool's policy.

Each pool model's :class:`~harness.backends.litellm_backend.LiteLLMBackend` holds what a call
needs (provider model, ``api_base``, the variable holding its key, timeout, retries, backoff) and
bills a reply exactly as ``harness run --backend litellm`` bills it, so a served turn costs what
the same turn costs in the harness. A model whose provider is ``openai/`` (OpenAI itself or any
OpenAI-compatible server named by ``api_base``) is called with the OpenAI SDK's async client, kept
open per model: the provider's own response, and a few milliseconds of CPU per call where
LiteLLM's translation layer costs several times that on the server's one event loop. Every other
provider goes through LiteLLM. Failures are classified and retried as the backend retries
them (429, 5xx, timeouts, connection errors and unreadable bodies; ``Retry-After`` honoured up
to its cap); what is left is raised as :class:`UpstreamFailed` with the status the client gets and
a one-line message from which the key is redacted. A stream is retried only until its first
chunk arrives; after that its bytes belong to the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

from harness.backends.litellm_backend import (
    RETRY_AFTER_CAP_S,
    LiteLLMBackend,
    _classify,
    load_litellm,
    retry_delays,
)
from harness.tokens import count_messages, count_reply
from harness.types import Completion, Message, ToolSpec

log = logging.getLogger(__name__)


class UpstreamFailed(Exception):
    """The model's provider failed after every retry: the status and one line the client gets."""

    def __init__(self, status: int, message: str, error_type: str):
        super().__init__(message)
        self.status, self.error_type = status, error_type


def client_status(failure_status: str) -> tuple[int, str]:
    """The HTTP status and OpenAI error type for a failure the backend classified.

    A provider's own status passes through, except that a refused credential (401/403) is the
    server's misconfiguration, not the client's, so it is a 502. A timeout is a 504; a provider
    that could not be reached or answered garbage is a 502.
    """
    if failure_status.startswith("HTTP "):
        code = int(failure_status.split()[1])
        if code == 429:
            return 429, "rate_limit_error"
        if code in (401, 403) or code >= 500:
            return 502 if code < 500 else code, "server_error"
        return code, "invalid_request_error"
    if failure_status == "timeout":
        return 504, "server_error"
    return 502, "server_error"


OPENAI_PREFIX = "openai/"


class Clients:
    """One OpenAI SDK client per OpenAI-compatible model, reused across requests (its connection pool)."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}

    def get(self, backend: LiteLLMBackend, api_key: str | None) -> Any:
        """The model's client, or None when LiteLLM calls it (another provider, or no key to give the SDK)."""
        if not backend.provider_model.startswith(OPENAI_PREFIX) or api_key is None:
            return None
        if backend.card.name not in self._clients:
            import openai

            self._clients[backend.card.name] = openai.AsyncOpenAI(
                base_url=backend.api_base, api_key=api_key, max_retries=0, timeout=backend.timeout_s
            )
        return self._clients[backend.card.name]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


async def _attempt(backend: LiteLLMBackend, client: Any, api_key: str | None, params: dict[str, Any],
                   extra: dict[str, Any]) -> Any:  # fmt: skip
    if client is not None:
        model = backend.provider_model.removeprefix(OPENAI_PREFIX)
        return await client.chat.completions.create(model=model, **params, **extra)
    return await load_litellm().acompletion(
        model=backend.provider_model,
        **params,
        **extra,
        api_base=backend.api_base,
        api_key=api_key,
        timeout=backend.timeout_s,
        max_retries=0,
        drop_params=True,
    )


async def open_call(backend: LiteLLMBackend, clients: Clients, params: dict[str, Any], stream: bool, seed: int,
                    on_retry: Callable[[], None]) -> Any:  # fmt: skip
    """The provider's response; for a stream, an async iterator of its chunks whose first has arrived."""
    import openai

    api_key = backend._api_key()
    client = clients.get(backend, api_key)
    delays = retry_delays(backend.max_retries, backend.backoff_s, seed)
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    attempts = 0
    while True:
        attempts += 1
        try:
            response = await _attempt(backend, client, api_key, params, extra)
            return await _started(response) if stream else response
        except openai.OpenAIError as exc:
            failure = _classify(exc, api_key)
        if not failure.retryable or attempts > backend.max_retries:
            break
        delay = delays[attempts - 1]
        if failure.retry_after_s is not None:
            delay = min(max(delay, failure.retry_after_s), RETRY_AFTER_CAP_S)
        on_retry()
        log.warning(
            "model %r: %s on attempt %d/%d, retrying in %.2fs",
            backend.card.name, failure.status, attempts, backend.max_retries + 1, delay,
        )  # fmt: skip
        await asyncio.sleep(delay)
    status, error_type = client_status(failure.status)
    plural = "attempt" if attempts == 1 else "attempts"
    raise UpstreamFailed(
        status,
        f"model {backend.card.name!r} failed after {attempts} {plural}: {failure.status} ({failure.detail})",
        error_type,
    )


async def _started(stream: Any) -> AsyncIterator[Any]:
    """The stream with its first chunk already read, so that a failure to start is retried."""
    chunks = stream.__aiter__()
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = None

    async def replay() -> AsyncIterator[Any]:
        try:
            if first is not None:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:  # a client that left early: the provider's connection is closed, not left to the collector
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    return replay()


def completion_of(backend: LiteLLMBackend, response: Any, history: list[Message],
                  tools: list[ToolSpec] | None, latency_s: float) -> Completion:  # fmt: skip
    """A provider response as the harness's Completion, billed by the backend's own rule."""
    return backend._completion_from(response, history, tools, latency_s)


def streamed_completion(backend: LiteLLMBackend, chunks: list[Any], history: list[Message],
                        tools: list[ToolSpec] | None, latency_s: float) -> Completion:  # fmt: skip
    """A finished stream's chunks put back together as the one reply they spell, then billed as a response is."""
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        usage = getattr(chunk, "usage", None) or usage
        for choice in getattr(chunk, "choices", None) or ():
            delta = choice.delta
            text.append(getattr(delta, "content", None) or "")
            for part in getattr(delta, "tool_calls", None) or ():
                call = calls.setdefault(part.index if part.index is not None else len(calls),
                                        {"id": "", "name": "", "arguments": ""})  # fmt: skip
                call["id"] = part.id or call["id"]
                function = part.function
                if function is not None:
                    call["name"] += function.name or ""
                    call["arguments"] += function.arguments or ""
    tool_calls = [
        SimpleNamespace(id=c["id"], function=SimpleNamespace(name=c["name"], arguments=c["arguments"]))
        for _, c in sorted(calls.items())
    ]
    message = SimpleNamespace(content="".join(text), tool_calls=tool_calls)
    response = SimpleNamespace(choices=[SimpleNamespace(message=message)], usage=usage)
    return completion_of(backend, response, history, tools, latency_s)


def cut_off_dollars(backend: LiteLLMBackend, history: list[Message], tools: list[ToolSpec] | None,
                    text: str) -> tuple[int, int, float]:  # fmt: skip
    """What a stream cut off before its usage arrived is estimated to have cost, on local token counts."""
    prompt_tokens, completion_tokens = count_messages(history, tools), count_reply(text)
    return prompt_tokens, completion_tokens, backend._dollars(prompt_tokens, completion_tokens)


def reported_cached_tokens(response: Any) -> int | None:
    """The prompt tokens the provider says its cache served, if it says."""
    details = getattr(getattr(response, "usage", None), "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    return int(cached) if cached is not None else None
