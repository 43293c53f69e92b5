"""The HTTP side: an OpenAI-compatible chat endpoint in front of a router, on FastAPI and uvicorn.

:class:`RouterServer` checks everything before it binds (pool, router, benchmark, every model's
key variable, the run directory's writer lock, a client key when the host is not loopback) and
then answers ``POST /v1/chat/completions`` (JSON or server-sent events), ``GET /v1/models``,
``GET /health``, ``GET /metrics`` (Prometheus) and ``POST /v1/sessions/{id}/outcome``. Errors are
the OpenAI error shape with one line of message; nothing the server says, logs or records holds
an upstream key, and a client key, when configured, is compared in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import ipaddress
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from harness.backends import build_backends
from harness.benchmarks import available as benchmarks_available
from harness.config import DEFAULT_KEY_ENV, ServeConfig, resolve, snapshot
from harness.errors import ConfigError
from harness.pool import load_pool
from harness.records import EpisodeRecord
from harness.seeding import derive_seed
from harness.serve.sessions import (
    RequestRefused,
    RoutedTurn,
    Session,
    SessionMeta,
    Sessions,
    message_of,
)
from harness.serve.upstream import (
    Clients,
    UpstreamFailed,
    completion_of,
    cut_off_dollars,
    open_call,
    reported_cached_tokens,
    streamed_completion,
)
from harness.trajectory import RunStore
from harness.types import Charge, Decision, Message, ToolSpec, TurnState
from routers import make_router

log = logging.getLogger(__name__)

SESSION_HEADER = "x-session-id"
# The OpenAI chat parameters passed on to the chosen model; the rest of a request is the server's
# (model, messages, stream, stream_options, n, metadata) or ignored.
FORWARDED = (
    "tools", "tool_choice", "parallel_tool_calls", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "top_logprobs", "response_format", "seed", "user", "reasoning_effort", "service_tier",
)  # fmt: skip
IDLE_SWEEP_S = 5.0
OUTCOME_FIELDS = (
    "episode",
    "status",
    "score",
    "turns",
    "cost",
)  # the recorded episode an outcome post returns


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "harness_serve_requests", "Chat requests answered, by status", ["status"], registry=r
        )
        self.routed = Counter(
            "harness_serve_routed_turns", "Turns routed, by chosen model", ["model"], registry=r
        )
        self.routing = Histogram("harness_serve_routing_seconds", "Router decision time", registry=r,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))  # fmt: skip
        self.upstream = Histogram("harness_serve_upstream_seconds", "Upstream call time (until the last chunk)",
                                  ["model"], registry=r)  # fmt: skip
        self.spend = Counter("harness_serve_spend_dollars", "Dollars billed, by model", ["model"], registry=r)
        self.errors = Counter("harness_serve_errors", "Errors answered, by kind", ["kind"], registry=r)
        self.sessions = Gauge("harness_serve_open_sessions", "Sessions not yet closed", registry=r)


def error_response(status: int, message: str, error_type: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}, status_code=status
    )


def tool_specs(tools: Any) -> list[ToolSpec] | None:
    """The request's tools as the harness's specs (for local token counts); checked as they are read."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise RequestRefused(400, "tools must be a list")
    specs = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestRefused(400, f"tools[{i}] is not a function tool with a name")
        specs.append(ToolSpec(function["name"], str(function.get("description") or ""),
                              function.get("parameters") or {"type": "object", "properties": {}}))  # fmt: skip
    return specs or None


class RouterServer:
    """One router behind the OpenAI chat API, every routed turn logged to one run directory."""

    def __init__(self, config: ServeConfig):
        self.config = config
        run_config = resolve(config.run_config())
        assert run_config.limits is not None
        self.limits = run_config.limits
        self.pool = load_pool(config.pool)
        self.cards = self.pool.cards
        self.router = make_router(config.router.name, config.router.params, self.cards)
        self.label = config.router.label
        self.benchmarks = frozenset(benchmarks_available())  # looked up once: the registry reads entry points
        self.backends = build_backends(self.pool, "litellm")
        for backend in self.backends.values():
            backend._api_key()  # a missing key variable is refused now, by name, not on the first request
        self.client_key = os.environ.get(config.client_key_env, "") if config.client_key_env else ""
        if not is_loopback(config.host) and not self.client_key:
            raise ConfigError(
                f"--host {config.host} opens the server beyond this machine; set a client key in "
                f"${config.client_key_env or DEFAULT_KEY_ENV} first"
            )
        self.store = RunStore(config.out)
        self.store.open(snapshot(run_config, self.pool, served=True), retry_infrastructure=False)
        self.sessions = Sessions(self.store, self.router, self.label, config.seed, self.limits,
                                 self.store.finished_keys())  # fmt: skip
        self.metrics = Metrics()
        # One thread routes, so a router never sees two states at once and the event loop never waits on it.
        self.router_thread = ThreadPoolExecutor(1, thread_name_prefix="router")
        self.clients = Clients()
        self.app = self._build_app()

    # -- lifecycle ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(self._sweep_idle())
        try:
            yield
        finally:
            sweeper.cancel()
            self.shutdown()
            await self.clients.close()

    def shutdown(self) -> None:
        """Close every session as an episode (after uvicorn has drained the requests in flight)."""
        for session in self.sessions.open:
            self._close(session, "shutdown", None)
        self.router_thread.shutdown(wait=True)
        self.store.close()

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(min(IDLE_SWEEP_S, self.config.idle_timeout_s / 4))
            for session in self.sessions.idle(self.config.idle_timeout_s):
                self._close(session, "idle", None)

    def _close(self, session: Session, status: str, score: float | None,
               final: list[Message] | None = None) -> EpisodeRecord:  # fmt: skip
        record = self.sessions.close(session, status, score, final)
        self.metrics.sessions.set(len(self.sessions.open))
        return record

    # -- the app ------------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="harness serve", lifespan=self.lifespan, docs_url=None, redoc_url=None,
                      openapi_url=None)  # fmt: skip

        @app.exception_handler(RequestRefused)
        async def refused(request: Request, exc: RequestRefused) -> JSONResponse:
            self.metrics.errors.labels("refused").inc()
            self.metrics.requests.labels(str(exc.status)).inc()
            error_type = {401: "authentication_error", 404: "not_found_error", 500: "server_error"}.get(
                exc.status, "invalid_request_error"
            )
            return error_response(exc.status, str(exc), error_type, exc.code)

        @app.exception_handler(UpstreamFailed)
        async def upstream_failed(request: Request, exc: UpstreamFailed) -> JSONResponse:
            self.metrics.errors.labels("upstream").inc()
            self.metrics.requests.labels(str(exc.status)).inc()
            return error_response(exc.status, str(exc), exc.error_type, "upstream_error")

        @app.exception_handler(Exception)
        async def internal(request: Request, exc: Exception) -> JSONResponse:
            self.metrics.errors.labels("internal").inc()
            self.metrics.requests.labels("500").inc()
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            log.error("internal error: %s", message)
            return error_response(500, f"internal error: {message}", "server_error")

        @app.get("/health")
        async def health() -> dict[str, Any]:
            return {"status": "ok", "router": self.label, "pool": self.pool.name,
                    "open_sessions": len(self.sessions.open)}  # fmt: skip

        @app.get("/metrics")
        async def metrics(request: Request) -> Response:
            self.check_key(request)
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        @app.get("/v1/models")
        async def models(request: Request) -> dict[str, Any]:
            self.check_key(request)
            entries = [{"id": self.label, "object": "model", "created": 0, "owned_by": "harness-router"}]
            entries += [{"id": c.name, "object": "model", "created": 0, "owned_by": f"pool:{self.pool.name}"}
                        for c in self.cards]  # fmt: skip
            return {"object": "list", "data": entries}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            self.check_key(request)
            return await self.chat(request)

        @app.post("/v1/sessions/{sid}/outcome")
        async def outcome(sid: str, request: Request) -> dict[str, Any]:
            self.check_key(request)
            return await self.outcome(sid, request)

        return app

    def check_key(self, request: Request) -> None:
        if not self.client_key:
            return
        sent = request.headers.get("authorization", "")
        token = sent[7:] if sent[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), self.client_key.encode()):
            raise RequestRefused(
                401, "missing or wrong API key (send Authorization: Bearer KEY)", "invalid_api_key"
            )

    # -- requests -----------------------------------------------------------------------------------

    async def outcome(self, sid: str, request: Request) -> dict[str, Any]:
        body = await json_body(request)
        score = body.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)
                                  or not math.isfinite(score)):  # fmt: skip
            raise RequestRefused(400, "score must be a finite number or null")
        session = self.sessions.by_id.get(sid)
        if session is None:
            raise RequestRefused(404, f"no open session {sid!r}")
        if session.busy:
            raise RequestRefused(409, f"session {sid!r} has a request in flight")
        final = None
        if body.get("messages") is not None:
            if not isinstance(body["messages"], list):
                raise RequestRefused(400, "messages must be a list")
            final = [message_of(m, f"messages[{i}]") for i, m in enumerate(body["messages"])]
            if not self.sessions.continues(session, final):
                raise RequestRefused(
                    400, f"messages do not continue session {sid!r}'s last request and reply"
                )
        record = self._close(session, "done", None if score is None else float(score), final)
        line = record.to_line()  # the episode as recorded, in brief
        return {"session": record.extra["session"]} | {k: line[k] for k in OUTCOME_FIELDS}

    def session_meta(self, request: Request, body: dict[str, Any]) -> tuple[SessionMeta, str | None]:
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise RequestRefused(400, "metadata must be an object")
        named = request.headers.get(SESSION_HEADER) or metadata.get("session_id") or body.get("user")
        benchmark = str(metadata.get("benchmark") or self.config.benchmark)
        if benchmark not in self.benchmarks:
            raise RequestRefused(400, f"metadata.benchmark {benchmark!r} is not a registered benchmark")
        try:
            variation = int(metadata.get("variation", 0))
        except (TypeError, ValueError):
            raise RequestRefused(400, "metadata.variation must be an integer") from None
        meta = SessionMeta(
            benchmark=benchmark,
            task=str(metadata.get("task") or "served"),
            variation=variation,
            split=str(metadata.get("split") or "served"),
            task_description=None
            if metadata.get("task_description") is None
            else str(metadata["task_description"]),
        )
        return meta, None if named is None else str(named)

    async def chat(self, request: Request) -> Response:
        body = await json_body(request)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestRefused(400, "stream must be true or false")
        if body.get("n", 1) != 1:
            raise RequestRefused(400, "n must be 1: a routed turn has one reply")
        tools = tool_specs(body.get("tools"))
        stream_options = body.get("stream_options") or {}
        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        meta, named = self.session_meta(request, body)
        session, history = self.sessions.claim(body.get("messages"), named, meta)
        self.metrics.sessions.set(len(self.sessions.open))
        turn = Turn(self, session, history, tools)
        handed_over = False
        try:
            await turn.route()
            params = {k: body[k] for k in FORWARDED if k in body} | {"messages": body["messages"]}
            if not stream:
                response = await turn.call(params, stream=False)
                turn.answered(
                    completion_of(turn.backend, response, history, tools, turn.upstream_seconds()),
                    reported_cached_tokens(response),
                )
                out = response.model_dump()
                out["model"] = turn.decision.model
                self.metrics.requests.labels("200").inc()
                return JSONResponse(out, headers=turn.headers())
            chunks = await turn.call(params, stream=True)
            handed_over = True
            return StreamingResponse(turn.events(chunks, include_usage), media_type="text/event-stream",
                                     headers=turn.headers())  # fmt: skip
        finally:
            if not handed_over:
                turn.release()


class Turn:
    """One chat request's routed turn: route, call, bill, and hand the session back."""

    def __init__(self, server: RouterServer, session: Session, history: list[Message],
                 tools: list[ToolSpec] | None):  # fmt: skip
        self.server, self.session, self.history, self.tools = server, session, history, tools
        self.number = session.turn
        self.ledger_before = copy.deepcopy(session.ledger)
        self.decision: Decision
        self.propensity = 0.0
        self.routing_s = 0.0
        self.upstream_started = 0.0
        self.routed: RoutedTurn | None = None

    async def route(self) -> None:
        server = self.server
        state = self.session.state(self.history, server.cards)
        loop = asyncio.get_running_loop()
        self.decision, self.routing_s = await loop.run_in_executor(server.router_thread, self._decide, state)
        if self.decision.model not in server.backends:
            raise RequestRefused(500, f"router {server.label!r} chose unknown model {self.decision.model!r}")
        # the probability of the pick, as the router states it (the contract holds it equal to
        # router.probabilities(state)[pick], which would route a second time)
        self.propensity = self.decision.propensity
        self.backend = server.backends[self.decision.model]
        server.metrics.routing.observe(self.routing_s)

    def _decide(self, state: TurnState) -> tuple[Decision, float]:
        started = time.perf_counter()
        decision = self.session.router.route(state, self.session.rng)
        return decision, time.perf_counter() - started

    async def call(self, params: dict[str, Any], stream: bool) -> Any:
        session = self.session

        def retried() -> None:
            session.retries += 1

        self.upstream_started = time.perf_counter()
        seed = derive_seed(session.seed, session.key, self.number, self.decision.model)
        try:
            return await open_call(self.backend, self.server.clients, params, stream, seed, retried)
        except UpstreamFailed:
            self._abandon_overhead()
            raise

    def upstream_seconds(self) -> float:
        """Seconds since the chosen model was called."""
        return time.perf_counter() - self.upstream_started

    def answered(self, completion: Any, reported_cached: int | None) -> None:
        """Bill the turn as the agent loop does (router overhead, then the model) and keep it pending."""
        session, model = self.session, self.decision.model
        latency = self.upstream_seconds()
        for overhead in self.decision.overhead:
            session.ledger.charge(self.number, overhead)
        charge = session.ledger.bill_model(self.number, model, self.backend.card.price, completion)
        self.routed = RoutedTurn(
            turn=self.number,
            history_len=len(self.history),
            model=model,
            propensity=self.propensity,
            scores=self.decision.scores,
            reply=completion.message(),
            completion=completion,
            dollars=charge.dollars,
            cached=session.ledger.cached.get(self.number, 0),
            charges=session.ledger.turn_charges(self.number),
            latency_s=latency,
            routing_s=self.routing_s,
            reported_cached=reported_cached,
            ledger_before=self.ledger_before,
        )
        metrics = self.server.metrics
        metrics.routed.labels(model).inc()
        metrics.upstream.labels(model).observe(latency)
        metrics.spend.labels(model).inc(charge.dollars)

    def _abandon_overhead(self) -> None:
        for overhead in self.decision.overhead:
            self.session.abandoned.charge(self.number, overhead)

    def abandon_stream(self, text: str) -> None:
        """A stream that did not finish: its estimated cost is abandoned, the turn is not kept."""
        prompt, completion, dollars = cut_off_dollars(self.backend, self.history, self.tools, text)
        card = self.backend.card
        self.session.abandoned.charge(
            self.number, Charge("model", card.name, prompt, completion, dollars, card.price.version)
        )
        self._abandon_overhead()
        self.server.metrics.errors.labels("stream_cut_off").inc()

    def headers(self) -> dict[str, str]:
        return {
            "X-Routed-Model": self.decision.model,
            "X-Routing-Propensity": repr(self.propensity),
            "X-Session-Id": self.session.id,
        }

    def release(self) -> None:
        self.server.sessions.release(self.session, self.history, self.routed)

    async def events(self, chunks: AsyncIterator[Any], include_usage: bool) -> AsyncIterator[str]:
        """The provider's chunks as server-sent events, the chosen model in each; billed at the end."""
        import openai

        received: list[Any] = []
        text: list[str] = []
        try:
            try:
                async for chunk in chunks:
                    received.append(chunk)
                    data = chunk.model_dump(exclude_none=True)
                    data["model"] = self.decision.model
                    for choice in data.get("choices") or ():
                        text.append((choice.get("delta") or {}).get("content") or "")
                    if "usage" in data and not include_usage:
                        if not data.get("choices"):
                            continue
                        del data["usage"]
                    yield f"data: {json.dumps(data)}\n\n"
            except openai.OpenAIError as exc:  # the provider broke off mid-stream: say so, keep nothing
                message = f"model {self.decision.model!r} broke off its stream: {type(exc).__name__}"
                yield f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"
                return
            completion = streamed_completion(
                self.backend, received, self.history, self.tools, self.upstream_seconds()
            )
            self.answered(completion, None)
            self.server.metrics.requests.labels("200").inc()
            yield "data: [DONE]\n\n"
        finally:
            if self.routed is None:
                self.abandon_stream("".join(text))
                with anyio.CancelScope(
                    shield=True
                ):  # the request may be cancelled: close the upstream anyway
                    await chunks.aclose()  # type: ignore[attr-defined]
            self.release()


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestRefused(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise RequestRefused(400, "request body is not a JSON object")
    return body


def serve(config: ServeConfig, announce: Any = print) -> None:
    """Check everything, then serve until SIGINT/SIGTERM: uvicorn drains the requests in flight,
    then every open session is closed as an episode."""
    import uvicorn

    server = RouterServer(config)
    announce(f"serving router {server.label!r} over pool {server.pool.name!r} on "
             f"http://{config.host}:{config.port}/v1 (run directory {config.out})")  # fmt: skip
    uvicorn.Server(uvicorn_config(server, config.host, config.port)).run()


# Idle keep-alive connections are kept longer than clients keep them in their pools (httpx, and so the
# OpenAI SDK and LiteLLM, drop them after 5 s): a server closing one first races the client's next request.
KEEP_ALIVE_S = 75


def uvicorn_config(server: RouterServer, host: str, port: int, **options: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        server.app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=server.config.drain_s,
        timeout_keep_alive=KEEP_ALIVE_S,
        **options,
    )


__all__ = ["RouterServer", "ServeConfig", "serve"]
