"""A real OpenAI-compatible chat server on 127.0.0.1 for backend tests.

It exists so that the LiteLLM backend is exercised through a real socket, the
real OpenAI SDK and litellm's real response parsing, instead of a mock that
agrees with whatever the backend assumes. Failures are scripted per request so
retry behaviour can be checked by counting what the server actually received.
A request with ``"stream": true`` is answered as server-sent events, chunk by chunk
(the usage chunk only when ``stream_options.include_usage`` asks for it), as OpenAI does.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_REPLY = "Thought: I should see where I am.\nAction: look around"
CHAT_PATH = "/v1/chat/completions"
SHUTDOWN_POLL_S = 0.02  # how often serve_forever checks for shutdown; bounds each test's teardown


def count_words(text: str) -> int:
    """The server's stand-in tokenizer: deterministic and easy to predict in tests."""
    return len(text.split())


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any]
    received_at: float  # time.monotonic()


@dataclass(frozen=True)
class ScriptedFailure:
    """What the server does to one request instead of answering it.

    ``status`` > 0 answers with that HTTP status; ``hang_s`` > 0 holds the
    connection open that long first (longer than the client's timeout, so the
    client gives up before any answer arrives); ``malformed`` answers 200 with
    a truncated, non-JSON body, as a proxy cut off mid-response does.
    """

    status: int = 0
    hang_s: float = 0.0
    retry_after: str | None = None  # a Retry-After header sent with the failure
    malformed: bool = False  # answer 200 with a body that is not JSON


class _Listener(ThreadingHTTPServer):
    request_queue_size = 128  # many clients connecting at once (a load test); the default backlog is 5


class OpenAIChatServer:
    """ThreadingHTTPServer speaking POST /v1/chat/completions with canned replies.

    Error bodies echo the request's Authorization header inside their message,
    as some real providers do for a rejected key, so a backend that copies
    provider messages into its own errors or logs leaks the key and tests see it.
    """

    def __init__(self, reply: str = DEFAULT_REPLY, report_usage: bool = True) -> None:
        self.reply = reply
        # Calls to answer with, as (name, arguments JSON text); empty: a text reply only.
        self.tool_calls: list[tuple[str, str]] = []
        self.report_usage = report_usage  # some OpenAI-compatible servers send no usage block
        self.latency_s = 0.0  # how long every answer takes to start, as a real model's would
        self.chunk_delay_s = 0.0  # the pause between two streamed chunks
        self.requests: list[RecordedRequest] = []
        self._failures: deque[ScriptedFailure] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Listener(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, name="openai-chat-server", daemon=True)

    @property
    def base_url(self) -> str:
        """The OpenAI-style api_base (ends in /v1)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAIChatServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        self._httpd.serve_forever(poll_interval=SHUTDOWN_POLL_S)

    def stop(self) -> None:
        self._stopping.set()  # releases handlers that are hanging on purpose
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``times`` requests with HTTP ``status`` (and a ``Retry-After`` header if given)."""
        with self._lock:
            self._failures.extend(
                ScriptedFailure(status=status, retry_after=retry_after) for _ in range(times)
            )

    def fail_after(self, successes: int, status: int, times: int = 1) -> None:
        """Answer the next ``successes`` requests normally, then ``times`` with HTTP ``status``."""
        with self._lock:
            self._failures.extend(ScriptedFailure() for _ in range(successes))
            self._failures.extend(ScriptedFailure(status=status) for _ in range(times))

    def recover(self) -> None:
        """Drop every scripted failure still queued: the provider is healthy again."""
        with self._lock:
            self._failures.clear()

    def malformed_next(self, times: int = 1) -> None:
        """Answer the next ``times`` requests with HTTP 200 and a body that is not JSON."""
        with self._lock:
            self._failures.extend(ScriptedFailure(malformed=True) for _ in range(times))

    def hang_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` requests open for ``seconds`` before answering normally."""
        with self._lock:
            self._failures.extend(ScriptedFailure(hang_s=seconds) for _ in range(times))

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def _record(self, request: RecordedRequest) -> ScriptedFailure | None:
        with self._lock:
            self.requests.append(request)
            return self._failures.popleft() if self._failures else None

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _stream_chunks(self, request_body: dict[str, Any]) -> list[dict[str, Any]]:
        """The completion body cut into ``chat.completion.chunk`` objects: the text word by word, each
        tool call whole, the finish reason, then the usage (if asked for) with no choices."""
        body = self._completion_body(request_body)
        choice = body["choices"][0]
        message = choice["message"]
        head = {key: body[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return head | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        words = message["content"].split(" ") if message["content"] else []
        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": word if i == 0 else " " + word}) for i, word in enumerate(words)]
        for i, call in enumerate(message.get("tool_calls") or ()):
            chunks.append(chunk({"tool_calls": [{"index": i, **call}]}))
        chunks.append(chunk({}, choice["finish_reason"]))
        if "usage" in body and (request_body.get("stream_options") or {}).get("include_usage"):
            chunks.append(head | {"choices": [], "usage": body["usage"]})
        return chunks

    def _completion_body(self, request_body: dict[str, Any]) -> dict[str, Any]:
        prompt_text = " ".join(str(m.get("content") or "") for m in request_body.get("messages", []))
        prompt_tokens = count_words(prompt_text)
        completion_tokens = count_words(self.reply)
        message: dict[str, Any] = {"role": "assistant", "content": self.reply}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
                for i, (name, arguments) in enumerate(self.tool_calls)
            ]
            completion_tokens += sum(count_words(arguments) for _, arguments in self.tool_calls)
        body: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request_body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if self.tool_calls else "stop",
                }
            ],
        }
        if self.report_usage:
            body["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        return body


def _handler_for(server: OpenAIChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: request lines would otherwise clutter the captured test output."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send_json(400, _error_body("request body is not JSON", "invalid_request_error", ""))
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            failure = server._record(RecordedRequest(self.path, headers, body, time.monotonic()))
            if self.path != CHAT_PATH:
                self._send_json(404, _error_body(f"no route {self.path}", "invalid_request_error", ""))
                return
            if failure and failure.hang_s:
                server._wait(failure.hang_s)
            if failure and failure.malformed:
                self._send_raw(200, json.dumps(server._completion_body(body)).encode()[:40])
                return
            if server.latency_s:
                server._wait(server.latency_s)
            if failure and failure.status:
                auth = headers.get("authorization", "")
                extra = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
                self._send_json(
                    failure.status, _error_body("scripted failure", _error_type(failure.status), auth), extra
                )
                return
            if body.get("stream"):
                self._send_events(server._stream_chunks(body))
                return
            self._send_json(200, server._completion_body(body))

        def _send_events(self, chunks: list[dict[str, Any]]) -> None:
            """Server-sent events until ``[DONE]``, then the connection closes (that ends the body)."""
            self.close_connection = True
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    if server.chunk_delay_s:
                        server._wait(server.chunk_delay_s)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client left mid-stream

        def _send_json(
            self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            self._send_raw(status, json.dumps(payload).encode(), headers)

        def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left; nothing to answer

    return Handler


def _error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _error_body(message: str, error_type: str, auth: str) -> dict[str, Any]:
    detail = f"{message} (authorization sent: {auth})" if auth else message
    return {"error": {"message": detail, "type": error_type, "param": None, "code": None}}
