"""Episodes as MLflow traces and sessions, logged per batch and idempotently, on a real SQLite store.

Episodes are played through the real agent loop on the tool-call test benchmark (several tool
calls per turn, a judge billed apart), into a real run directory laid out as a benchmark's
``runs/<split>/<point>/``; the traces are read back through MLflow's own client.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest

sys.path.insert(0, str(Path(__file__).parent / "plugins"))

from tool_benchmark import LookupBenchmark  # noqa: E402

from harness.agent import run_episode  # noqa: E402
from harness.benchmarks import REGISTRY  # noqa: E402
from harness.errors import ConfigError  # noqa: E402
from harness.layout import ResultsLayout  # noqa: E402
from harness.records import EpisodeRecord  # noqa: E402
from harness.traces import TraceSelection  # noqa: E402
from harness.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, log_benchmark, log_run, tracking_uri  # noqa: E402
from harness.trajectory import RunStore, episode_file_name  # noqa: E402
from harness.types import Completion, Decision, ModelCard, PriceCard, TaskInstance, ToolCall  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")

AGENT = ModelCard("agent", PriceCard(1.0, 2.0, "test"))
JUDGE = ModelCard("judge", PriceCard(10.0, 10.0, "test"))
POINT = "single:agent"


class ScriptedBackend:
    """Replies from a list, 100 prompt and 10 completion tokens each, billed on the card."""

    def __init__(self, card: ModelCard, replies: list[Completion]):
        self.card, self.replies = card, list(replies)

    def complete(self, messages, ctx, tools=None):
        reply = self.replies.pop(0)
        return Completion(reply.text, 100, 10, self.card.price.dollars(100, 10), reply.tool_calls)


class ScoringRouter:
    """Always the agent, with a score per candidate, as a learned router logs them."""

    def route(self, state, rng):
        return Decision(model="agent", propensity=1.0, scores={"agent": 0.75})


class DrawingRouter:
    """The agent, drawn with probability one half and no scores, as a random router logs it."""

    def route(self, state, rng):
        return Decision(model="agent", propensity=0.5)


def calls(*pairs: tuple[str, str]) -> Completion:
    return Completion("", 0, 0, 0.0, tuple(ToolCall(f"c{i}", n, a) for i, (n, a) in enumerate(pairs)))


def play(store: RunStore, variation: int, router: Any = None) -> EpisodeRecord:
    """One three-turn episode (two lookups, an addition, the answer), recorded like a batch does."""
    benchmark = LookupBenchmark()
    task = TaskInstance("lookup", "count", variation, "test_id")
    agent = ScriptedBackend(
        AGENT,
        [
            calls(("lookup", '{"key": "a"}'), ("lookup", '{"key": "b"}')),
            calls(("add", '{"x": 12, "y": 30}')),
            calls(("answer", '{"value": 42}')),
        ],
    )
    judge = ScriptedBackend(JUDGE, [Completion("correct: yes", 0, 0, 0.0)])
    result = run_episode(
        benchmark,
        benchmark.make_environment(),
        {"agent": agent},
        router or ScoringRouter(),
        task,
        0,
        benchmark.limits,
        store,
        judge,
    )
    record = result.record(POINT)
    store.record_episode(record)
    return record


@pytest.fixture(scope="module", autouse=True)
def lookup_registered() -> Iterator[None]:
    """The tool-call benchmark registered as a plug-in would be: reading a run's results needs its split."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(REGISTRY.builtin, LookupBenchmark.name, "tool_benchmark:LookupBenchmark")
        yield


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A benchmark directory with one operating point of one episode, logged once."""
    root = tmp_path_factory.mktemp("traces") / "tracebench"
    run_dir = ResultsLayout(root).run("test_id", POINT)
    store = RunStore(run_dir)
    store.open(
        {
            "run": {"router": {"name": "single", "params": {"model": "agent"}}, "benchmark": "lookup"},
            "price_cards": {
                "agent": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "version": "test"},
                "judge": {"input_per_mtok": 10.0, "output_per_mtok": 10.0, "version": "test"},
            },
        }
    )
    record = play(store, 0)
    run_id = log_run(root, run_dir)
    client = mlflow.MlflowClient(tracking_uri(root))
    experiment = client.get_experiment_by_name("tracebench")
    return {"root": root, "run_dir": run_dir, "store": store, "record": record, "run_id": run_id,
            "client": client, "experiment": experiment}  # fmt: skip


def _traces(client: Any, experiment_id: str, run_id: str | None = None) -> list[Any]:
    where = f"metadata.mlflow.sourceRun = '{run_id}'" if run_id else None
    return client.search_traces(locations=[experiment_id], filter_string=where, max_results=500)


def _runs(client: Any, experiment_id: str) -> list[Any]:
    return client.search_runs([experiment_id], max_results=500)


def _session_totals(client: Any, experiment_id: str, session: str) -> tuple[dict[str, int], float]:
    """Token usage and dollars of a session, summed from its traces' MLflow metadata."""
    traces = client.search_traces(
        locations=[experiment_id], filter_string=f"metadata.`mlflow.trace.session` = '{session}'"
    )
    tokens: dict[str, int] = {}
    dollars = 0.0
    for trace in traces:
        for key, value in json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"]).items():
            tokens[key] = tokens.get(key, 0) + value
        dollars += json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"]
    return tokens, dollars


def test_each_episode_is_one_trace_and_session_of_its_run(bench):
    client, experiment = bench["client"], bench["experiment"]
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    traces = _traces(client, experiment.experiment_id, bench["run_id"])
    assert len(traces) == 1
    trace = traces[0]
    session = "test_id/single:agent/lookup/count/0"
    assert trace.info.trace_metadata["mlflow.trace.session"] == session
    assert trace.info.tags["mlflow.traceName"] == "lookup/count/0"
    assert trace.info.tags["router"] == POINT and trace.info.tags["run_id"] == bench["run_id"]
    spans = sorted(trace.data.spans, key=lambda s: s.start_time_ns)
    root = next(s for s in spans if s.parent_id is None)
    assert root.name == "episode" and root.outputs["score"] == 1.0
    assert all(s.parent_id == root.span_id for s in spans if s is not root)
    assert [s.name for s in spans if s is not root] == [
        "turn 0 route", "turn 0 chat agent", "turn 1 route", "turn 1 chat agent", "turn 2 route", "turn 2 chat agent",
    ]  # fmt: skip
    # Each tool call is an event of the episode's span, at its measured start with its measured duration.
    assert [e.name for e in root.events] == [
        "turn 0 tool lookup", "turn 0 tool lookup", "turn 1 tool add", "turn 2 tool answer",
    ]  # fmt: skip
    # Span and event times are the turn lines' measured times.
    lines = bench["store"].turns("lookup/count/0")
    steps = [step for line in lines for step in line.times["steps"]]
    assert [e.timestamp for e in root.events] == [int(t[0] * 1e9) for t in steps]
    assert [e.attributes["duration_ms"] for e in root.events] == [
        pytest.approx((int(t[1] * 1e9) - int(t[0] * 1e9)) / 1e6, abs=1e-3) for t in steps
    ]
    for line in lines:
        k = line.turn
        mine = {s.name.removeprefix(f"turn {k} "): s for s in spans if s.name.startswith(f"turn {k} ")}
        times = line.times
        assert (mine["route"].start_time_ns, mine["route"].end_time_ns) == tuple(
            int(t * 1e9) for t in times["route"]
        )
        assert (mine["chat agent"].start_time_ns, mine["chat agent"].end_time_ns) == tuple(
            int(t * 1e9) for t in times["model"]
        )
        assert times["route"][0] <= times["model"][0] <= times["model"][1] <= times["steps"][0][0]
    assert root.start_time_ns == spans[1].start_time_ns
    assert root.end_time_ns == int(lines[-1].times["steps"][-1][1] * 1e9)

    route = next(s for s in spans if s.name == "turn 0 route")
    assert route.span_type == "ROUTER"
    assert route.outputs == {"chosen": "agent", "propensity": 1.0, "scores": {"agent": 0.75}}
    chats = sorted((s for s in spans if s.span_type == "CHAT_MODEL"), key=lambda s: s.start_time_ns)
    # Each model call's inputs are the messages new to it: the task first, then the last turn's results.
    assert [m["role"] for m in chats[0].inputs["messages"]] == ["system", "user"]
    assert [(m["role"], m["content"]) for m in chats[1].inputs["messages"]] == [
        ("tool", "12"),
        ("tool", "30"),
    ]
    assert [c["function"]["name"] for c in chats[0].outputs["choices"][0]["message"]["tool_calls"]] == [
        "lookup"
    ] * 2
    assert chats[0].get_attribute("mlflow.chat.tokenUsage") == {
        "input_tokens": 100,
        "output_tokens": 10,
        "total_tokens": 110,
    }
    cost = chats[0].get_attribute("mlflow.llm.cost")
    assert cost == pytest.approx({"input_cost": 100e-6, "output_cost": 20e-6, "total_cost": 120e-6})
    # A result the next call got is stored there (above); the last turn's, which no model saw, in its event.
    assert ["content" in e.attributes for e in root.events] == [False, False, False, True]
    assert root.events[-1].attributes["content"]
    # The trace's and the session's totals, as MLflow sums them, are the episode's.
    record = bench["record"]
    tokens, dollars = _session_totals(client, experiment.experiment_id, session)
    prompt = sum(line.prompt_tokens for line in lines)
    completion = sum(line.completion_tokens for line in lines)
    assert tokens == {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
    }
    assert dollars == pytest.approx(record.cost)
    split = json.loads(trace.info.trace_metadata["mlflow.trace.cost"])
    assert split["input_cost"] + split["output_cost"] == pytest.approx(record.cost)
    assert split["output_cost"] == pytest.approx(completion * 2.0 / 1e6)
    # The score is MLflow feedback from the judge, with the judge's dollars as its cost.
    (score,) = [a for a in trace.info.assessments if a.name == "score"]
    assert score.value == 1.0 and score.source.source_type == "LLM_JUDGE"
    assert float(score.metadata["mlflow.assessment.judgeCost"]) == pytest.approx(record.judge_cost)


def test_each_message_of_an_episode_is_stored_once(bench):
    """The model calls' inputs and replies, in order, are the episode's history once over; the last turn's
    results, which no model saw, are in its step events. Nothing else in the trace repeats them."""
    (trace,) = _traces(bench["client"], bench["experiment"].experiment_id, bench["run_id"])
    lines = bench["store"].turns("lookup/count/0")
    history = [*lines[0].initial_messages, *(m for line in lines for m in line.messages)]
    last_results = [m for m in lines[-1].messages if m.role != "assistant"]
    chats = sorted(
        (s for s in trace.data.spans if s.span_type == "CHAT_MODEL"), key=lambda s: s.start_time_ns
    )
    stored = [m for chat in chats for m in (*chat.inputs["messages"], chat.outputs["choices"][0]["message"])]
    assert [(m["role"], m["content"]) for m in stored] == [
        (m.role, m.content) for m in history[: len(history) - len(last_results)]
    ]
    root = next(s for s in trace.data.spans if s.parent_id is None)
    assert [e.attributes["content"] for e in root.events if "content" in e.attributes] == [
        m.content for m in last_results
    ]
    # No span but the model calls holds a message's text.
    texts = {m.content for m in history if len(m.content) > 8}
    for span in trace.data.spans:
        if span.span_type != "CHAT_MODEL":
            dumped = json.dumps([span.inputs, span.outputs])
            assert not any(json.dumps(t)[1:-1] in dumped for t in texts if t != lines[0].task_description)


def test_cached_prompt_tokens_are_mlflow_cache_reads(tmp_path):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from harness.traces import RunTraceContext, trace_run

    root = tmp_path / "cachebench"
    run_dir = ResultsLayout(root).run("test_id", POINT)
    store = RunStore(run_dir)
    cards = {"agent": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "version": "t"}}
    store.open({"run": {"router": {"name": "single", "params": {"model": "agent"}}}, "price_cards": cards})
    record = play(store, 0)
    # Rewrite the turn lines as a cache-aware bill would: 60 of turn 1's 100 prompt tokens cached.
    path = store.turns_dir / episode_file_name(record.episode)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    lines[1]["cached_prompt_tokens"], lines[1]["dollars"] = 60, (40 * 1.0 + 60 * 0.1 + 10 * 2.0) / 1e6
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    uri = tracking_uri(root)
    (root / "mlartifacts").mkdir(parents=True)
    db = SqlAlchemyStore(uri, str(root / "mlartifacts"))
    experiment_id = db.create_experiment("cachebench")
    run_id = db.create_run(experiment_id, "test", 0, [], "point").info.run_id
    context = RunTraceContext(experiment_id, run_id, "test_id", POINT, POINT, None)
    assert trace_run(db, context, run_dir).traces == 1
    (trace,) = mlflow.MlflowClient(uri).search_traces(locations=[experiment_id])
    usage = json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"])
    assert usage["input_tokens"] == 300 and usage["cache_read_input_tokens"] == 60
    cost = json.loads(trace.info.trace_metadata["mlflow.trace.cost"])
    assert cost["total_cost"] == pytest.approx(sum(x["dollars"] for x in lines))
    assert cost["output_cost"] == pytest.approx(30 * 2.0 / 1e6)


def test_a_choice_without_scores_or_a_bill_has_no_routing_span(tmp_path):
    """A random choice holds no scores: its model call's span carries its propensity, and no routing span
    is stored for it."""
    root = tmp_path / "drawbench"
    run_dir = ResultsLayout(root).run("test_id", "random")
    store = RunStore(run_dir)
    store.open({"run": {"router": {"name": "random", "params": {}}}, "price_cards": {}})
    play(store, 0, DrawingRouter())
    log_run(root, run_dir)
    client = mlflow.MlflowClient(tracking_uri(root))
    (trace,) = _traces(client, client.get_experiment_by_name("drawbench").experiment_id)
    assert not [s for s in trace.data.spans if s.span_type == "ROUTER"]
    chats = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert len(chats) == 3 and all(s.get_attribute("routing.propensity") == 0.5 for s in chats)


def test_the_point_run_is_nested_named_described_and_has_split_metrics(bench):
    client, experiment = bench["client"], bench["experiment"]
    runs = {r.data.tags["kind"]: r for r in _runs(client, experiment.experiment_id)}
    assert set(runs) == {"benchmark", "family", "point"}
    point, family, parent = runs["point"], runs["family"], runs["benchmark"]
    assert point.info.run_name == POINT and point.info.run_id == bench["run_id"]
    assert point.data.tags["mlflow.parentRunId"] == family.info.run_id
    assert family.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "fixed router, no lambda" in point.data.tags["mlflow.note.content"]
    assert "evaluated on test_id" in point.data.tags["mlflow.note.content"]
    metrics = point.data.metrics
    assert metrics["test_id/score"] == 1.0 and metrics["test_id/turns"] == 3.0
    assert metrics["test_id/cost"] == pytest.approx(bench["record"].cost)
    assert {"test_id/score_ci_low", "test_id/cost_ci_high", "test_id/switch_rate"} <= set(metrics)


def test_logging_again_resuming_and_the_final_log_never_duplicate(bench):
    client, experiment_id = bench["client"], bench["experiment"].experiment_id
    assert log_run(bench["root"], bench["run_dir"]) == bench["run_id"]
    assert len(_traces(client, experiment_id)) == 1 and len(_runs(client, experiment_id)) == 3
    # The batch resumes and finishes a second episode: only its traces are added.
    play(bench["store"], 1)
    assert log_run(bench["root"], bench["run_dir"]) == bench["run_id"]
    traces = _traces(client, experiment_id)
    assert len(traces) == 2
    assert len({t.info.trace_metadata["mlflow.trace.session"] for t in traces}) == 2
    # The end-of-benchmark log finds the same parent, family and point runs and the same traces.
    parent = log_benchmark(bench["root"], "c0ffee", log_models=False, n_boot=200)
    runs = _runs(client, experiment_id)
    assert len(runs) == 3 and parent in {r.info.run_id for r in runs}
    assert len(_traces(client, experiment_id)) == 2
    point = client.get_run(bench["run_id"])
    assert point.data.metrics["test_id/turns"] == 3.0
    assert [m.value for m in client.get_metric_history(bench["run_id"], "test_id/episodes")][-1] == 2.0


def test_a_directory_that_is_not_an_operating_point_is_skipped(bench):
    data = ResultsLayout(bench["root"]).data("collect-s0")
    assert log_run(bench["root"], data) is None


def test_trace_selection_parses_and_samples_stably():
    assert TraceSelection.parse("all").fraction == 1.0 and TraceSelection.parse(None).fraction == 1.0
    assert TraceSelection.parse("none").fraction == 0.0
    half = TraceSelection.parse("0.5")
    keys = [f"scienceworld/boil/{i}" for i in range(2000)]
    chosen = [k for k in keys if half.includes(k)]
    assert 850 < len(chosen) < 1150
    assert chosen == [k for k in keys if TraceSelection(0.5).includes(k)]  # the same sample every time
    assert not any(TraceSelection.parse("none").includes(k) for k in keys)
    for bad in ("some", "1.5", "-0.1", "nan"):
        with pytest.raises(ConfigError, match="trace_episodes"):
            TraceSelection.parse(bad)


def test_no_traces_when_tracing_is_off(tmp_path):
    root = tmp_path / "offbench"
    run_dir = ResultsLayout(root).run("test_id", POINT)
    store = RunStore(run_dir)
    store.open({"run": {"router": {"name": "single", "params": {"model": "agent"}}}, "price_cards": {}})
    play(store, 0)
    run_id = log_run(root, run_dir, trace_episodes="none")
    client = mlflow.MlflowClient(tracking_uri(root))
    experiment_id = client.get_experiment_by_name("offbench").experiment_id
    assert client.get_run(run_id).data.metrics["test_id/episodes"] == 1.0
    assert _traces(client, experiment_id) == []
