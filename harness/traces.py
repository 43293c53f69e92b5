"""MLflow traces of episodes, written from a run directory after the fact.

The run directory stays the source of truth and the agent loop never waits on
MLflow: traces are derived from ``turns/<episode>.jsonl`` once an episode's line
is in ``episodes.jsonl``. Each episode is one trace and one MLflow session (the
standard ``session.id``), so the trace header, the session view and the overview
charts all add up to the episode: MLflow's session header shows the usage of a
session's last trace, which is only the episode's when the episode is one trace.
The trace's spans, in MLflow's vocabulary:

* ``episode`` (AGENT, the root): the task in, status, score and routed cost out, and
  each tool call or environment step as an event (``turn <k> tool <name>``, ``turn <k>
  env step``) at its measured start with its measured ``duration_ms``; the call itself
  (action, arguments) is in the reply, and its result in the next model call's inputs,
  so an event holds only the last turn's results, which no model saw;
  under it, turn after turn, as MLflow's agent integrations lay out a loop:
* ``turn <k> route`` (ROUTER): the chosen model, its propensity and the router's
  score per candidate (to 4 significant digits); the router's own calls (e.g. an
  embedding) as its usage and cost. A choice with neither scores nor a bill (a fixed or
  a random one) has no span: its model call carries ``routing.propensity`` when below 1;
* ``turn <k> chat <model>`` (CHAT_MODEL): the messages new to the conversation since
  the previous call as inputs (each message is stored once per episode: the earlier
  ones are in the earlier calls' spans), the reply as outputs, and MLflow's
  ``mlflow.chat.tokenUsage`` (input tokens including cache reads, which are also
  given as ``cache_read_input_tokens``) and ``mlflow.llm.cost`` (input and output
  dollars apart, summing to the turn's billed dollars).

Why steps are events and some decisions have no span: a span costs the store about a
kilobyte whatever it holds (MLflow's envelope, columns and six indexes), most of a
store's size; one span per model call plus one per scored or billed decision is about
a third of what a trace per turn with a span per step took (benchmarks/perf_tracing.py
measures it). No span wraps a turn, for the same reason; the names keep turns apart.

The episode's score is an assessment on the trace; a judge's verdict is one from an
LLM judge with the judge's dollars as MLflow's judge cost, outside the routed cost,
as in the episode record. Span times are the measured wall-clock times of the turn
line's ``times`` (routing decision, model call, each step); a turn line written
before they were recorded gets reconstructed times (its episode ends when its turn
file was last written and lasted ``duration_s``, shared evenly by its turns).

A trace's id is derived from a stable key (experiment, split, point, episode), so
writing a run again finds the traces already in the store and skips them:
resuming a benchmark never duplicates a trace.
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
from harness.trajectory import RunStore, episode_file_name

SEARCH_PAGE = 500
LOG_BATCH = 20  # traces (episodes) per store transaction
MAX_LINKS = 100  # MLflow links at most this many traces to a run per call
# How MLflow's store reads a session and trace tags off a root span (its OpenTelemetry ingestion path).
SESSION_ATTRIBUTE = "session.id"
TAG_ATTRIBUTE = "mlflow.traceTag."
# A model call's chance of being chosen, where no routing span holds it.
PROPENSITY_ATTRIBUTE = "routing.propensity"
# Text fields longer than this are cut in span inputs and outputs: an observation can be long, and
# a trace is for reading, while the run directory keeps everything.
MAX_TEXT_CHARS = 4000
DOLLAR_DIGITS = 12  # decimals of a span's dollars
SCORE_DIGITS = 4  # significant digits of a router's scores and propensity


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


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + f"... [{len(text) - MAX_TEXT_CHARS} more characters in the run directory]"


def _chat_message(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message in the OpenAI chat format MLflow's chat view renders."""
    out: dict[str, Any] = {"role": message["role"], "content": _cut(message.get("content") or "")}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in message["tool_calls"]
        ]
    for key in ("tool_call_id", "name"):
        if message.get(key) is not None:
            out[key] = message[key]
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
    """Reconstructed turn times, for turn lines written before measured times were recorded."""

    def __init__(self, turns_file: Path, duration_s: float, slots: int):
        end_ns = turns_file.stat().st_mtime_ns if turns_file.exists() else time.time_ns()
        # At least a millisecond a turn, so turns keep their order at the UI's resolution.
        self.slot_ns = max(int(duration_s * 1e9) // max(slots, 1), 1_000_000)
        self.start_ns = end_ns - self.slot_ns * slots

    def slot(self, index: int, part: int = 0, parts: int = 1) -> tuple[int, int]:
        """Start and end of sub-interval ``part`` of ``parts`` within slot ``index``."""
        width = self.slot_ns // parts
        start = self.start_ns + index * self.slot_ns + part * width
        return start, start + max(width, 1)


def _ns(interval: list[float]) -> tuple[int, int]:
    start, end = (int(t * 1e9) for t in interval)
    return start, max(end, start + 1)


def _turn_times(line: dict[str, Any], steps: int, clock: _Clock) -> list[tuple[int, int]]:
    """Route, model call and each step's (start, end) in ns: measured, else reconstructed."""
    times = line.get("times")
    if times and len(times.get("steps") or []) >= steps:
        return [_ns(times["route"]), _ns(times["model"]), *(_ns(t) for t in times["steps"][:steps])]
    turn = int(line["turn"])
    return [clock.slot(turn, part, 2 + steps) for part in range(2 + steps)]


def _id(text: str, bits: int) -> int:
    """A stable OpenTelemetry id from a key: the same trace key always gives the same trace."""
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[: bits // 8], "big")
    return value or 1


def _attribute_json(value: Any) -> str:
    """A span attribute as MLflow stores it, JSON text, but without the spaces after separators
    (MLflow reads it back the same; a store holds millions of them)."""
    from mlflow.tracing.utils import TraceJSONEncoder

    return json.dumps(value, cls=TraceJSONEncoder, ensure_ascii=False, separators=(",", ":"))


class _TraceBuilder:
    """The spans of one trace, as finished OpenTelemetry spans with MLflow's attribute conventions.

    Spans are built directly (no live tracer, no exporter) so a whole batch of traces
    goes to the store in one ``log_spans`` transaction; a live tracer would write
    each span in its own transaction, about 0.1 s per span on SQLite.
    """

    def __init__(self, experiment_id: str, key: str):
        self.trace_id, self.otel_trace_id = trace_id_of(experiment_id, key)
        self.spans: list[Any] = []

    def add(
        self,
        name: str,
        span_type: str,
        start_end: tuple[int, int],
        inputs: Any,
        outputs: Any,
        attributes: dict[str, Any] | None = None,
        parent: int | None = None,
        span_id: int | None = None,
        events: list[Any] = (),
    ) -> int:
        """Add a span (a root without ``parent``) and return its span id."""
        from mlflow.entities import Span
        from mlflow.tracing.constant import SpanAttributeKey
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

        def context(span_id: int) -> SpanContext:
            return SpanContext(self.otel_trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))

        span_id = span_id or _id(f"{self.trace_id}|{len(self.spans)}", 64)
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
            else _attribute_json(value)
            for key, value in values.items()
            if value is not None
        }
        self.spans.append(
            Span(
                ReadableSpan(
                    name=name,
                    context=context(span_id),
                    parent=None if parent is None else context(parent),
                    start_time=start_end[0],
                    end_time=start_end[1],
                    attributes=encoded,
                    events=events,
                    status=Status(StatusCode.OK),
                    resource=Resource.get_empty(),
                )
            )
        )
        return span_id


def _root_attributes(context: RunTraceContext, episode: str) -> dict[str, Any]:
    """Session, name and tags, carried on the root span the way MLflow's store reads them.

    Few tags on purpose: each costs the store a row per trace. Split, point and
    episode are in the session id.
    """
    tags = {"mlflow.traceName": episode, "run_id": context.run_id, "router": context.router}
    attributes: dict[str, Any] = {SESSION_ATTRIBUTE: json.dumps(context.session(episode))}
    attributes |= {f"{TAG_ATTRIBUTE}{key}": json.dumps(value) for key, value in tags.items()}
    return attributes


def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, int]:
    """MLflow's token usage: input tokens count cache reads too, which are also given apart."""
    usage = {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        usage["cache_read_input_tokens"] = cached
    return usage


def _cost(dollars: float, completion: int, price: dict[str, Any]) -> dict[str, float]:
    """MLflow's cost, split as it defines it: output dollars at the card's output price, the rest input
    (cached and uncached); without a card every dollar counts as input. Rounded to 1e-12 dollars
    (float noise is most of a cost's digits)."""
    output = min(dollars, completion * float(price.get("output_per_mtok", 0.0)) / 1e6)
    return {
        "input_cost": round(dollars - output, DOLLAR_DIGITS),
        "output_cost": round(output, DOLLAR_DIGITS),
        "total_cost": round(dollars, DOLLAR_DIGITS),
    }


def _rounded(value: float) -> float:
    """A router's score or propensity to :data:`SCORE_DIGITS` significant digits."""
    return float(f"{float(value):.{SCORE_DIGITS}g}")


def _new_messages(lines: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
    """The messages a turn's model call saw first: the initial ones, then the last turn's results."""
    if index == 0:
        return lines[0].get("initial_messages") or []
    return [m for m in lines[index - 1].get("messages") or [] if m["role"] != "assistant"]


def _add_turn(
    trace: _TraceBuilder,
    root: int,
    lines: list[dict[str, Any]],
    index: int,
    prices: dict[str, Any],
    clock: _Clock,
) -> tuple[tuple[int, int], list[Any]]:
    """Add a turn's routing and model-call spans; return the turn's (start, end) and its step events."""
    from mlflow.entities import SpanType
    from mlflow.tracing.constant import SpanAttributeKey

    line = lines[index]
    turn, model = int(line["turn"]), line["model"]
    messages = line.get("messages") or []
    reply = next((m for m in messages if m["role"] == "assistant"), {"role": "assistant", "content": ""})
    steps = _steps(line, reply, [m for m in messages if m is not reply], last=index == len(lines) - 1)
    route_time, model_time, *step_times = _turn_times(line, len(steps), clock)
    turn_time = (route_time[0], max(end for _, end in (route_time, model_time, *step_times)))
    prompt, completion = int(line.get("prompt_tokens") or 0), int(line.get("completion_tokens") or 0)
    cached = int(line.get("cached_prompt_tokens") or 0)
    dollars = float(line.get("dollars") or 0.0)

    overhead = [c for c in line.get("charges") or [] if c.get("kind") == "router"]
    router_dollars = sum(float(c["dollars"]) for c in overhead)
    route_attributes: dict[str, Any] = {}
    if overhead:
        route_attributes[SpanAttributeKey.CHAT_USAGE] = _usage(
            sum(int(c["prompt_tokens"]) for c in overhead), sum(int(c["completion_tokens"]) for c in overhead)
        )
        route_attributes[SpanAttributeKey.LLM_COST] = _cost(router_dollars, 0, {})
    # A decision with neither scores nor a bill (a fixed or a random choice) gets no span: the model
    # call's span says what was chosen, and its ``routing.propensity`` attribute how likely that was.
    propensity = _rounded(line.get("propensity") or 1.0)
    routed = bool(line.get("router_scores") or overhead)
    if routed:
        outputs: dict[str, Any] = {"chosen": model, "propensity": propensity}
        if line.get("router_scores"):
            outputs["scores"] = {m: _rounded(v) for m, v in line["router_scores"].items()}
        trace.add(f"turn {turn} route", "ROUTER", route_time, None, outputs, route_attributes, parent=root)
    # OpenAI's request and reply shapes, which MLflow's chat view reads first without a
    # ``mlflow.message.format`` hint; only the fields it reads (no index, no finish reason).
    trace.add(
        f"turn {turn} chat {model}",
        SpanType.CHAT_MODEL,
        model_time,
        {"messages": [_chat_message(m) for m in _new_messages(lines, index)]},
        {"choices": [{"message": _chat_message(reply)}]},
        {
            SpanAttributeKey.MODEL: model,
            SpanAttributeKey.CHAT_USAGE: _usage(prompt, completion, cached),
            SpanAttributeKey.LLM_COST: _cost(dollars, completion, prices.get(model) or {}),
            PROPENSITY_ATTRIBUTE: None if routed or propensity >= 1.0 else propensity,
        },
        parent=root,
    )
    events = [
        _step_event(f"turn {turn} {name}", times, attributes)
        for (name, attributes), times in zip(steps, step_times, strict=True)
    ]
    return turn_time, events


def _step_event(name: str, times: tuple[int, int], attributes: dict[str, Any]) -> Any:
    """A step as an event at its measured start, with its measured duration."""
    from opentelemetry.sdk.trace import Event

    start, end = times
    values = {**attributes, "duration_ms": round((end - start) / 1e6, 3)}
    return Event(name, {k: v for k, v in values.items() if v is not None}, start)


def _steps(
    line: dict[str, Any], reply: dict[str, Any], results: list[dict[str, Any]], last: bool
) -> list[tuple[str, dict[str, Any]]]:
    """(event name, attributes) per tool call or environment step of a turn.

    The call (the arguments, the action) is in the reply, and a result the next model
    call gets is in that call's inputs; only the last turn's results, which no model
    saw, are in the step's attributes.
    """
    calls = {c["id"]: c for c in reply.get("tool_calls") or []}
    tool_results = [m for m in results if m["role"] == "tool"]
    if tool_results:
        steps = []
        for message in tool_results:
            call = calls.get(message.get("tool_call_id") or "", {})
            name = call.get("name") or message.get("name") or "tool"
            steps.append((f"tool {name}", {"content": _cut(message["content"]) if last else None}))
        return steps
    if line.get("action") is None and not line.get("observation"):
        return []
    observation = _cut(line.get("observation")) if last else None
    return [
        ("env step", {"action": line.get("action"), "score": line.get("score"), "observation": observation})
    ]


def _episode_trace(
    context: RunTraceContext,
    record: dict[str, Any],
    lines: list[dict[str, Any]],
    prices: dict[str, Any],
    clock: _Clock,
) -> _TraceBuilder:
    from mlflow.entities import SpanType

    episode = record["episode"]
    trace = _TraceBuilder(context.experiment_id, context.session(episode))
    root = _id(f"{trace.trace_id}|root", 64)
    turns = [_add_turn(trace, root, lines, i, prices, clock) for i in range(len(lines))]
    times = [t for t, _ in turns]
    start = min((t[0] for t in times), default=clock.start_ns)
    end = max((t[1] for t in times), default=start + 1)
    description = next((line["task_description"] for line in lines if line.get("task_description")), None)
    trace.add(
        "episode",
        SpanType.AGENT,
        (start, end),
        {"episode": episode, "task": _cut(description)},
        {
            "status": record.get("status"),
            "score": record.get("score"),
            "turns": record.get("turns"),
            "cost": None if record.get("cost") is None else round(float(record["cost"]), 9),
            "error": record.get("error"),
        },
        _root_attributes(context, episode),
        span_id=root,
        events=[event for _, events in turns for event in events],
    )
    return trace


def _score_assessment(trace_id: str, record: dict[str, Any]) -> Any:
    """The episode's score as MLflow feedback: from the benchmark's scorer, or from an LLM judge with
    its dollars as MLflow's judge cost."""
    from mlflow.entities import AssessmentSource, Feedback
    from mlflow.tracing.constant import AssessmentMetadataKey

    judge_cost = float(record.get("judge_cost") or 0.0)
    if judge_cost > 0:
        source = AssessmentSource(source_type="LLM_JUDGE", source_id="judge")
        metadata = {AssessmentMetadataKey.JUDGE_COST: str(judge_cost)}
    else:
        source, metadata = AssessmentSource(source_type="CODE", source_id="scorer"), None
    details = record.get("score_details")
    return Feedback(
        name="score",
        value=float(record["score"]),  # failed episodes (no score) are not traced
        source=source,
        trace_id=trace_id,
        metadata=metadata,
        rationale=json.dumps(details, default=str)[:MAX_TEXT_CHARS] if details else None,
    )


def trace_run(
    store: Any, context: RunTraceContext, run_dir: Path, selection: TraceSelection = TraceSelection()
) -> TracedRun:
    """Write the traces of a run directory's finished, selected episodes that ``store`` lacks yet.

    ``store`` is the benchmark's MLflow tracking store (a ``SqlAlchemyStore``);
    traces go in batches of :data:`LOG_BATCH` and are linked to ``context.run_id``.
    """
    run = RunStore(Path(run_dir))
    prices = run.config().get("price_cards", {})
    # Traces are built from the records as written (their JSON lines): what MLflow stores is that form.
    selected = [r.to_line() for r in run.episodes() if selection.includes(r.episode)]
    if not selected:
        return TracedRun(0, 0, 0)
    have = existing_trace_ids(store, context)
    pending: list[tuple[_TraceBuilder, dict[str, Any]]] = []
    written = skipped = 0

    def flush() -> None:
        nonlocal written
        if not pending:
            return
        store.log_spans(context.experiment_id, [span for trace, _ in pending for span in trace.spans])
        ids = [trace.trace_id for trace, _ in pending]
        for start in range(0, len(ids), MAX_LINKS):
            store.link_traces_to_run(ids[start : start + MAX_LINKS], context.run_id)
        for trace, record in pending:
            store.create_assessment(_score_assessment(trace.trace_id, record))
        written += len(pending)
        pending.clear()

    for record in selected:
        episode = record["episode"]
        lines = [] if record.get("status") == "failed" else _turn_lines(run, episode)
        if not lines:
            continue
        if trace_id_of(context.experiment_id, context.session(episode))[0] in have:
            skipped += 1
            continue
        clock = _Clock(
            run.turns_dir / episode_file_name(episode), float(record.get("duration_s") or 0), len(lines)
        )
        pending.append((_episode_trace(context, record, lines, prices, clock), record))
        if len(pending) >= LOG_BATCH:
            flush()
    flush()
    return TracedRun(written, skipped, len(selected))


def _turn_lines(store: RunStore, episode: str) -> list[dict[str, Any]]:
    return [t.to_line() for t in store.ordered_turns(episode)]


__all__ = ["TraceSelection", "RunTraceContext", "TracedRun", "trace_run", "existing_trace_ids", "trace_id_of"]
