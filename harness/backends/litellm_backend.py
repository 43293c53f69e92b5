"""Real providers through LiteLLM, with our own retry policy and our own billing.

Retries are ours alone (LiteLLM's and the OpenAI SDK's are switched off) so that
the number of attempts, the backoff and what counts as retryable are the same for
every provider and visible in one place. Dollars come from the pool's price card,
not from LiteLLM's cost map, because the card is what routers are told and what
the ledger must agree with.

A 429's ``Retry-After`` (seconds or an HTTP date) is honoured up to
``RETRY_AFTER_CAP_S``; each retry is counted in the episode's scratch under
``RETRIES_KEY`` so the episode record says how hard the provider was to reach.

The API key is read from the environment at each call and handed straight to
LiteLLM; it is never stored on the backend. Provider error bodies sometimes echo
the key back, so any provider text copied into our errors or logs is redacted.
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from harness.backends.text_tools import parse_calls, text_messages
from harness.errors import ConfigError, ProviderError
from harness.seeding import derive_seed
from harness.tokens import count_messages, count_reply
from harness.types import CallContext, Completion, Message, ModelCard, ToolCall, ToolSpec

log = logging.getLogger(__name__)

# Environment LiteLLM reads at import time. The offline switches stop it fetching its
# cost map and other catalogs from the internet (this harness runs offline); the mode
# stops it loading a stray .env file from the working directory into os.environ.
_LITELLM_OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"}
_LITELLM_DEFAULT_ENV = {"LITELLM_MODE": "PRODUCTION"}

PROVIDER_DETAIL_CHARS = 300
REDACTED = "***"
RETRY_AFTER_CAP_S = 60.0  # a provider asking for longer is treated as unavailable for now
RETRIES_KEY = "provider_retries"  # in CallContext.scratch: retries spent on this episode's calls
KEYLESS_PLACEHOLDER = "no-key"  # sent to a server that takes no key: OpenAI clients refuse to send none


@functools.cache
def load_litellm() -> ModuleType:
    """Import and configure LiteLLM once, on first use: importing it takes seconds."""
    os.environ.update(_LITELLM_OFFLINE_ENV)
    for name, value in _LITELLM_DEFAULT_ENV.items():
        os.environ.setdefault(name, value)
    import litellm

    litellm.num_retries = 0
    litellm.suppress_debug_info = True  # its "Give Feedback" banner goes to stdout on every error
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.callbacks = []
    return litellm


def retry_delays(max_retries: int, backoff_s: float, seed: int) -> list[float]:
    """Exponential backoff with jitter in [0.5, 1.5) of each step.

    Seeded so that a rerun of the same episode waits the same way, while different
    turns and models (different seeds) do not retry in lockstep.
    """
    rng = random.Random(seed)
    return [backoff_s * 2**i * (0.5 + rng.random()) for i in range(max_retries)]


@dataclass(frozen=True)
class _Failure:
    """One failed attempt, already stripped of anything secret."""

    status: str  # "HTTP 429", "timeout", "connection error", "malformed response body"
    retryable: bool
    detail: str
    retry_after_s: float | None = None  # what the provider asked us to wait, if it said


def _classify(exc: Exception, secret: str | None) -> _Failure:
    import openai

    detail = _one_line(str(exc), secret)
    if isinstance(exc, openai.APITimeoutError):
        return _Failure("timeout", True, detail)
    if isinstance(exc, openai.APIConnectionError):
        return _Failure("connection error", True, detail)
    if _caused_by(exc, json.JSONDecodeError):
        # LiteLLM reports a body it cannot parse as a 500; the provider answered, but not in JSON.
        return _Failure("malformed response body (not JSON)", True, detail)
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        wait = retry_after_seconds(_header(exc, "retry-after")) if code == 429 else None
        return _Failure(f"HTTP {code}", code == 429 or code >= 500, detail, wait)
    return _Failure("no HTTP status", False, detail)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _header(exc: Exception, name: str) -> str | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "litellm_response_headers", None)
    if not headers:
        return None
    return headers.get(name)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header (delay seconds or an HTTP date) as seconds from now; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _one_line(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, REDACTED)
    text = " ".join(text.split())
    if len(text) > PROVIDER_DETAIL_CHARS:
        text = text[: PROVIDER_DETAIL_CHARS - 3] + "..."
    return text


def openai_message(message: Message) -> dict[str, Any]:
    """A message in the OpenAI chat format: tool calls as functions, a tool result naming its call."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None and message.role == "tool":
        out["name"] = message.name
    return out


def tool_calls_of(message: Any) -> tuple[ToolCall, ...]:
    calls = getattr(message, "tool_calls", None) or ()
    return tuple(
        ToolCall(
            id=call.id or f"call_{i}", name=call.function.name or "", arguments=call.function.arguments or ""
        )
        for i, call in enumerate(calls)
    )


class LiteLLMBackend:
    """One pool model answered by a real provider through ``litellm.completion``.

    ``keyless``: the server takes no key (a local llama.cpp server). ``tool_calls`` "text"
    writes tools and calls into the messages and reads calls from the reply
    (:mod:`harness.backends.text_tools`) instead of using the provider's tool-call API.
    A turn's ``reply_schema`` (constrained decoding, see :class:`CallContext`) is sent as the
    request's ``response_format`` in ``schema_style``; ``max_tokens`` None sends no cap.
    ``ensure_up`` is called before each call: a local server that died is started again for the
    next call (the call under way when it died fails after its retries, as with any provider).
    """

    def __init__(
        self,
        card: ModelCard,
        api_base: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        temperature: float = 0.0,
        keyless: bool = False,
        tool_calls: str = "native",
        max_tokens: int | None = None,
        schema_style: str = "json_schema",
        ensure_up: Callable[[], Any] | None = None,
    ):
        if max_retries < 0:
            raise ConfigError(f"model {card.name!r}: max_retries must be >= 0, got {max_retries}")
        self.card = card
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.temperature = temperature
        self.keyless = keyless
        self.tool_calls = tool_calls
        self.max_tokens = max_tokens
        self.schema_style = schema_style
        self.ensure_up = ensure_up
        self._warned_unpriced = False
        self._warned_no_usage = False

    def __repr__(self) -> str:
        return (
            f"LiteLLMBackend(model={self.provider_model!r}, api_base={self.api_base!r}, "
            f"api_key_env={self.api_key_env!r})"
        )

    @property
    def provider_model(self) -> str:
        return self.card.provider_model or self.card.name

    def complete(
        self, messages: list[Message], ctx: CallContext, tools: list[ToolSpec] | None = None
    ) -> Completion:
        litellm = load_litellm()
        import openai

        if self.ensure_up is not None:
            self.ensure_up()
        api_key = self._api_key()
        delays = retry_delays(
            self.max_retries, self.backoff_s, derive_seed(ctx.seed, ctx.task.key, ctx.turn, self.card.name)
        )
        attempts = 0
        if self.tool_calls == "text":
            sent, offered = text_messages(messages, tools), {}
        else:
            sent = [openai_message(m) for m in messages]
            offered = {"tools": [tool.openai() for tool in tools]} if tools else {}
        if ctx.reply_schema is not None:
            offered["response_format"] = self._response_format(ctx.reply_schema)
        if self.max_tokens is not None:
            offered["max_tokens"] = self.max_tokens
        while True:
            attempts += 1
            started = time.perf_counter()
            try:
                response = litellm.completion(
                    model=self.provider_model,
                    messages=sent,
                    **offered,
                    api_base=self.api_base,
                    api_key=api_key,
                    temperature=self.temperature,
                    timeout=self.timeout_s,
                    max_retries=0,
                    # Reasoning models reject temperature; LiteLLM knows which and drops it.
                    drop_params=True,
                )
            except openai.OpenAIError as exc:
                failure = _classify(exc, api_key)
            else:
                return self._completion_from(response, messages, tools, time.perf_counter() - started)
            if not failure.retryable or attempts > self.max_retries:
                break
            delay = delays[attempts - 1]
            if failure.retry_after_s is not None:
                delay = min(max(delay, failure.retry_after_s), RETRY_AFTER_CAP_S)
            ctx.scratch[RETRIES_KEY] = ctx.scratch.get(RETRIES_KEY, 0) + 1
            log.warning(
                "model %r: %s on attempt %d/%d, retrying in %.2fs",
                self.card.name, failure.status, attempts, self.max_retries + 1, delay,
            )  # fmt: skip
            time.sleep(delay)
        # Raised outside the except block so the provider's exception (which may hold the
        # request and its headers) is not attached as __context__.
        plural = "attempt" if attempts == 1 else "attempts"
        raise ProviderError(
            f"model {self.card.name!r} ({self.provider_model}) failed after {attempts} {plural}: "
            f"{failure.status} ({failure.detail})"
        )

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A reply schema in the server's dialect: OpenAI's ``json_schema``, or llama.cpp's ``json_object``."""
        if self.schema_style == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}

    def _api_key(self) -> str | None:
        """The key from the variable named by ``api_key_env``; None lets LiteLLM use its provider default."""
        if self.api_key_env is None:
            return KEYLESS_PLACEHOLDER if self.keyless else None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ConfigError(
                f"model {self.card.name!r}: environment variable {self.api_key_env} (its API key) is not set"
            )
        return key

    def _completion_from(
        self, response: Any, messages: list[Message], tools: list[ToolSpec] | None, latency_s: float
    ) -> Completion:
        reply = response.choices[0].message
        text = reply.content or ""
        if self.tool_calls == "text":
            tool_calls = parse_calls(text) if tools else ()
        else:
            tool_calls = tool_calls_of(reply)
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        if prompt_tokens == 0:
            # LiteLLM reports 0/0 when the provider sent no usage block; a real prompt is never
            # free, so bill on our own offline count rather than at $0.
            prompt_tokens = count_messages(messages, tools)
            completion_tokens = count_reply(text, tool_calls)
            if not self._warned_no_usage:
                log.warning("model %r reported no token usage; billing on local token counts", self.card.name)
                self._warned_no_usage = True
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            dollars=self._dollars(prompt_tokens, completion_tokens),
            tool_calls=tool_calls,
            latency_s=round(latency_s, 3),
        )

    def _dollars(self, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.card.price
        if price.input_per_mtok or price.output_per_mtok:
            return price.dollars(prompt_tokens, completion_tokens)
        return self._cost_map_dollars(prompt_tokens, completion_tokens)

    def _cost_map_dollars(self, prompt_tokens: int, completion_tokens: int) -> float:
        """LiteLLM's bundled prices, for a card priced at zero; an unknown model then costs nothing."""
        litellm = load_litellm()
        import openai

        try:
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=self.provider_model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
        # An unmapped model raises ModelNotMappedError; an unknown provider prefix, BadRequestError.
        except (litellm.exceptions.ModelNotMappedError, openai.OpenAIError) as exc:
            if not self._warned_unpriced:
                log.warning(
                    "model %r has a zero price card and is not in LiteLLM's cost map (%s); billing it at $0",
                    self.card.name, type(exc).__name__,
                )  # fmt: skip
                self._warned_unpriced = True
            return 0.0
        return float(prompt_cost + completion_cost)
