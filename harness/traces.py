"""MLflow traces of episodes, written from a run directory after the fact.

The run directory stays the source of truth and the agent loop never waits on
MLflow: traces are derived from ``turns/<episode>.jsonl`` once an episode's line
is in ``episodes.jsonl``. Each turn becomes one trace and each episode one MLflow
session (the standard ``mlflow.trace.session`` metadata), so the UI's Sessions
view lists episodes and shows their turns in order. A turn's trace holds:

* ``route``: the routing decision (chosen model, propensity, per-model scores, lambda);
* ``chat <model>``: the model call as a chat-model span with the messages the model
  got new this turn, its reply, token usage and dollars under MLflow's own usage and
  cost attributes, so the token and cost views add them up;
* ``tool <name>`` or ``env step``: each tool call or environment step of the turn.

An episode the judge scored (``judge_cost`` > 0) gets one more trace, ``judge``.

Turn lines carry no clock times, so span times are reconstructed: the episode ends
when its turn file was last written, lasted its recorded ``duration_s``, and that
time is shared evenly by its turns (at least a millisecond each). Durations of single spans are therefore not
measurements; order, tokens and dollars are.

A trace's id is derived from a stable key (experiment, split, point, episode,
turn), so writing a run again finds the traces already in the store and skips
them: resuming a benchmark never duplicates a trace.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.records import EpisodeRecord, TurnRecord
from harness.trajectory import RunStore, episode_file_name
from harness.types import Message

SEARCH_PAGE = 500
LOG_BATCH = 200  # traces per store transaction
MAX_LINKS = 100  # MLflow links at most this many traces to a run per call
# How MLflow's store reads a session and trace tags off a root span (its OpenTelemetry ingestion path).
SESSION_ATTRIBUTE = "session.id"
TAG_ATTRIBUTE = "mlflow.traceTag."
# Text fields longer than this are cut in span inputs and outputs: an observation can be long, and
# a trace is for reading, while the run directory keeps everything.
MAX_TEXT_CHARS = 4000


@dataclass(frozen=True)
class TraceSelection:
    """Which finished episodes get traces: ``all``, ``none`` or a fraction chosen by hashing the episode key.

    Hashing (not a random draw) keeps the sample the same when a benchmark resumes
    or is logged again, and the same episodes traced at every operating point.
    """

    fraction: float = 1.0

    @classmethod
    def parse(cls, value: str | float | None) -> TraceSelection:
        if value is None or value == "all":
            return cls(1.0)
        if value == "none":
            return cls(0.0)
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"trace_episodes must be all, none or a fraction in [0, 1], not {value!r}"
            ) from None
        if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
            raise ConfigError(f"trace_episodes must be all, none or a fraction in [0, 1], not {value!r}")
        return cls(fraction)

    def includes(self, episode: str) -> bool:
        if self.fraction >= 1.0:
            return True
        digest = hashlib.sha256(episode.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.fraction


@dataclass(frozen=True)
class TracedRun:
    """What one call wrote: traces new to the store, and episodes seen/selected."""

    traces: int
    skipped: int
    episodes: int


@dataclass(frozen=True)
class RunTraceContext:
    """Where a run's traces go and what every one of them is tagged with."""

    experiment_id: str
    run_id: str  # the MLflow run of the operating point
    split: str
    point: str
    router: str
    lam: float | None

    def session(self, episode: str) -> str:
        return f"{self.split}/{self.point}/{episode}"

    def key(self, episode: str, turn: int | str) -> str:
        return f"{self.session(episode)}#{turn}"


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + f"... [{len(text) - MAX_TEXT_CHARS} more characters in the run directory]"


def _chat_message(message: Message) -> dict[str, Any]:
    """A stored message in the OpenAI chat format MLflow's chat view renders."""
    out: dict[str, Any] = {"role": message.role, "content": _cut(message.content)}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def existing_trace_ids(store: Any, context: RunTraceContext) -> set[str]:
    """Ids of the traces already logged for this operating-point run (a paged search, no spans)."""
    ids: set[str] = set()
    token = None
    while True:
        infos, token = store.search_traces(
            locations=[context.experiment_id],
            filter_string=f"tag.run_id = '{context.run_id}'",
            max_results=SEARCH_PAGE,
            page_token=token,
        )
        ids |= {info.trace_id for info in infos}
        if not token:
            return ids


def trace_id_of(experiment_id: str, key: str) -> tuple[str, int]:
    """The MLflow and OpenTelemetry ids of a trace key: stable, so logging again finds the same trace."""
    from mlflow.tracing.utils import generate_mlflow_trace_id_from_otel_trace_id

    otel_id = _id(f"{experiment_id}|{key}", 128)
    return generate_mlflow_trace_id_from_otel_trace_id(otel_id), otel_id


class _Clock:
    """Reconstructed times of an episode's turns (see the module docstring)."""

    def __init__(self, turns_file: Path, duration_s: float, slots: int):
        end_ns = turns_file.stat().st_mtime_ns if turns_file.exists() else time.time_ns()
        # At least a millisecond a turn: MLflow orders a session's traces by millisecond timestamps.
        self.slot_ns = max(int(duration_s * 1e9) // max(slots, 1), 1_000_000)
        self.start_ns = end_ns - self.slot_ns * slots

    def slot(self, index: int, part: int = 0, parts: int = 1) -> tuple[int, int]:
        """Start and end of sub-interval ``part`` of ``parts`` within slot ``index``."""
        width = self.slot_ns // parts
        start = self.start_ns + index * self.slot_ns + part * width
        return start, start + max(width, 1)


def _id(text: str, bits: int) -> int:
    """A stable OpenTelemetry id from a key: the same trace key always gives the same trace."""
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[: bits // 8], "big")
    return value or 1


class _TraceBuilder:
    """The spans of one trace, as finished OpenTelemetry spans with MLflow's attribute conventions.

    Spans are built directly (no live tracer, no exporter) so a whole batch of traces
    goes to the store in one ``log_spans`` transaction; a live tracer would write
    each span in its own transaction, about 0.1 s per turn on SQLite.
    """

    def __init__(self, experiment_id: str, key: str):
        self.trace_id, self.otel_trace_id = trace_id_of(experiment_id, key)
        self.spans: list[Any] = []
        self.root_span_id = _id(f"{experiment_id}|{key}|root", 64)

    def add(
        self,
        name: str,
        span_type: str,
        start_end: tuple[int, int],
        inputs: Any,
        outputs: Any,
        attributes: dict[str, Any] | None = None,
        root: bool = False,
    ) -> None:
        from mlflow.entities import Span
        from mlflow.tracing.constant import SpanAttributeKey
        from mlflow.tracing.utils import dump_span_attribute_value
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

        def context(span_id: int) -> SpanContext:
            return SpanContext(self.otel_trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))

        span_id = self.root_span_id if root else _id(f"{self.trace_id}|{len(self.spans)}|{name}", 64)
        values = {
            SpanAttributeKey.REQUEST_ID: self.trace_id,
            SpanAttributeKey.SPAN_TYPE: span_type,
            SpanAttributeKey.INPUTS: inputs,
            SpanAttributeKey.OUTPUTS: outputs,
            **(attributes or {}),
        }
        encoded = {
            key: value
            if key.startswith(TAG_ATTRIBUTE) or key == SESSION_ATTRIBUTE
            else dump_span_attribute_value(value)
            for key, value in values.items()
            if value is not None
        }
        self.spans.append(
            Span(
                ReadableSpan(
                    name=name,
                    context=context(span_id),
                    parent=None if root else context(self.root_span_id),
                    start_time=start_end[0],
                    end_time=start_end[1],
                    attributes=encoded,
                    status=Status(StatusCode.OK),
                    resource=Resource.get_empty(),
                )
            )
        )


def _root_attributes(context: RunTraceContext, episode: str, name: str) -> dict[str, Any]:
    """Session, name and tags, carried on the root span the way MLflow's store reads them.

    Few tags on purpose: each costs the store one row merge per trace, the largest
    share of the time to log a trace. Split, point and episode are in the session id,
    the turn in the trace's name.
    """
    tags = {"mlflow.traceName": name, "run_id": context.run_id, "router": context.router}
    attributes: dict[str, Any] = {SESSION_ATTRIBUTE: json.dumps(context.session(episode))}
    attributes |= {f"{TAG_ATTRIBUTE}{key}": json.dumps(value) for key, value in tags.items()}
    return attributes


def _turn_trace(
    context: RunTraceContext, line: TurnRecord, prices: dict[str, Any], clock: _Clock
) -> _TraceBuilder:
    from mlflow.entities import SpanType
    from mlflow.tracing.constant import SpanAttributeKey

    episode, turn, model = line.episode, line.turn, line.model
    trace = _TraceBuilder(context.experiment_id, context.key(episode, turn))
    reply = next((m for m in line.messages if m.role == "assistant"), Message("assistant", ""))
    steps = _steps(line, reply, [m for m in line.messages if m is not reply])
    parts = 2 + len(steps)
    prompt, completion = int(line.prompt_tokens), int(line.completion_tokens)
    dollars = float(line.dollars or 0.0)
    price = prices.get(model) or {}
    input_cost = min(dollars, prompt * float(price.get("input_per_mtok", 0.0)) / 1e6)

    trace.add(
        f"turn {turn}",
        SpanType.AGENT,
        clock.slot(turn),
        {"turn": turn, "history_len": line.history_len, "task": line.task_description},
        {
            "model": model,
            "dollars": dollars,
            "action": line.action,
            "valid": line.valid,
            "error": line.error,
            "score": line.score,
            "observation": _cut(line.observation),
        },
        _root_attributes(context, episode, f"turn {turn}"),
        root=True,
    )
    trace.add(
        "route",
        "ROUTER",
        clock.slot(turn, 0, parts),
        {"router": context.router, "lam": context.lam, "history_len": line.history_len},
        {"model": model, "propensity": line.propensity, "scores": line.router_scores},
        {"model": model, "propensity": line.propensity, "lam": context.lam},
    )
    trace.add(
        f"chat {model}",
        SpanType.CHAT_MODEL,
        clock.slot(turn, 1, parts),
        {"model": model, "messages": [_chat_message(m) for m in line.initial_messages or []]},
        {
            "model": model,
            "choices": [{"index": 0, "message": _chat_message(reply), "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
        },
        {
            SpanAttributeKey.MODEL: model,
            SpanAttributeKey.MESSAGE_FORMAT: "openai",
            SpanAttributeKey.CHAT_USAGE: {
                "input_tokens": prompt,
                "output_tokens": completion,
                "total_tokens": prompt + completion,
            },
            SpanAttributeKey.LLM_COST: {
                "input_cost": input_cost,
                "output_cost": dollars - input_cost,
                "total_cost": dollars,
            },
            "price_version": price.get("version"),
        },
    )
    for index, (name, inputs, outputs) in enumerate(steps):
        trace.add(name, SpanType.TOOL, clock.slot(turn, 2 + index, parts), inputs, outputs)
    return trace


def _steps(
    line: TurnRecord, reply: Message, results: list[Message]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(span name, inputs, outputs) per tool call or environment step of a turn."""
    calls = {c.id: c for c in reply.tool_calls}
    tool_results = [m for m in results if m.role == "tool"]
    if tool_results:
        steps = []
        for message in tool_results:
            call = calls.get(message.tool_call_id or "")
            name = (call.name if call else None) or message.name or "tool"
            arguments = call.arguments if call else None
            steps.append((f"tool {name}", {"arguments": arguments}, {"content": _cut(message.content)}))
        return steps
    if line.action is None and not line.observation:
        return []
    return [
        (
            "env step",
            {"action": line.action},
            {"observation": _cut(line.observation), "score": line.score},
        )
    ]


def _judge_trace(context: RunTraceContext, record: EpisodeRecord, clock: _Clock, slot: int) -> _TraceBuilder:
    from mlflow.entities import SpanType
    from mlflow.tracing.constant import SpanAttributeKey

    episode, dollars = record.episode, float(record.judge_cost)
    trace = _TraceBuilder(context.experiment_id, context.key(episode, "judge"))
    outputs = {"score": record.score, "judge_cost": dollars}
    trace.add(
        "judge",
        SpanType.EVALUATOR,
        clock.slot(slot),
        {"episode": episode, "status": record.status},
        outputs,
        _root_attributes(context, episode, "judge"),
        root=True,
    )
    trace.add(
        "judge call",
        SpanType.LLM,
        clock.slot(slot),
        {"details": record.score_details},
        outputs,
        {SpanAttributeKey.LLM_COST: {"input_cost": 0.0, "output_cost": 0.0, "total_cost": dollars}},
    )
    return trace


def trace_run(
    store: Any, context: RunTraceContext, run_dir: Path, selection: TraceSelection = TraceSelection()
) -> TracedRun:
    """Write the traces of a run directory's finished, selected episodes that ``store`` lacks yet.

    ``store`` is the benchmark's MLflow tracking store (a ``SqlAlchemyStore``);
    traces go in batches of :data:`LOG_BATCH` and are linked to ``context.run_id``.
    """
    run = RunStore(Path(run_dir))
    prices = run.config().get("price_cards", {})
    selected = [r for r in run.episodes() if selection.includes(r.episode)]
    if not selected:
        return TracedRun(0, 0, 0)
    have = existing_trace_ids(store, context)

    def logged(episode: str, turn: int | str) -> bool:
        return trace_id_of(context.experiment_id, context.key(episode, turn))[0] in have

    pending: list[_TraceBuilder] = []
    written = skipped = 0

    def flush() -> None:
        nonlocal written
        if not pending:
            return
        store.log_spans(context.experiment_id, [span for trace in pending for span in trace.spans])
        ids = [trace.trace_id for trace in pending]
        for start in range(0, len(ids), MAX_LINKS):
            store.link_traces_to_run(ids[start : start + MAX_LINKS], context.run_id)
        written += len(pending)
        pending.clear()

    for record in selected:
        episode = record.episode
        lines = [] if record.failed else _turn_lines(run, episode)
        judged = float(record.judge_cost or 0.0) > 0.0
        if not lines and not judged:
            continue
        clock = _Clock(
            run.turns_dir / episode_file_name(episode),
            float(record.duration_s or 0),
            len(lines) + judged,
        )
        for line in lines:
            if logged(episode, line.turn):
                skipped += 1
            else:
                pending.append(_turn_trace(context, line, prices, clock))
        if judged:
            if logged(episode, "judge"):
                skipped += 1
            else:
                pending.append(_judge_trace(context, record, clock, len(lines)))
        if len(pending) >= LOG_BATCH:
            flush()
    flush()
    return TracedRun(written, skipped, len(selected))


def _turn_lines(store: RunStore, episode: str) -> list[TurnRecord]:
    path = store.turns_dir / episode_file_name(episode)
    return sorted(store.turns(episode), key=lambda line: line.turn) if path.exists() else []


__all__ = ["TraceSelection", "RunTraceContext", "TracedRun", "trace_run", "existing_trace_ids", "trace_id_of"]
