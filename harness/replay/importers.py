"""Logs from elsewhere into our run-directory format (the current version), with a report for every file.

A user's logs cost real money, so an import never drops anything silently: every
file found gets a :class:`FileReport` saying how many episodes and turns it gave and,
for everything it did not give, why. Missing propensities are counted and stored as
null: the reference defaults them to 1, which makes every importance weight a guess.
Every record passes through :func:`harness.replay.redact.redact` before it is read,
and the report lists where credentials were removed (the paths, never the values).

Sources:

* our own run directories, format version 1 (turn lines without ``messages``; they are
  rebuilt as the agent loop wrote them: the assistant's ``output``, then the observation
  message of the benchmark the episode names, from its plug-in's agent format), versions 2 and 3
  (parsed by :mod:`harness.records`);
* the MTRouter reference's ``*.traj.json`` files (``trajectory_format:
  "mini-agentic-router-1"``), laid out as ``<mode>/<task>_runK/<task>_runK.traj.json``
  beside ``<mode>/results.json``. Each ``(mode, K)`` becomes one run directory
  ``DEST/<mode>/runK``, because a run directory holds one episode per task instance.
  An HLE question (``info.task_id``) gets the key the hle plug-in gives it (its category's
  slug and its position there, :meth:`~harness.benchmarks.base.Benchmark.reference_item`); a
  question the plug-in does not have is not imported and is listed in the report;
* the generic JSONL schema below, for any other agent's log.

Generic JSONL schema (one JSON object per line, in any order; ``type`` says which)::

    {"type": "episode", "episode": "scienceworld/boil/3", "benchmark": "scienceworld",
     "task": "boil", "variation": 3, "split": "test_id", "score": 42.0, "status": "done",
     "initial_messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}]}
    {"type": "turn", "episode": "scienceworld/boil/3", "turn": 0, "model": "gpt-5",
     "propensity": 0.1667, "prompt_tokens": 812, "completion_tokens": 40, "dollars": 0.0014,
     "messages": [{"role": "assistant", "content": "..."}, {"role": "user", "content": "..."}]}

Episode lines need ``episode``, ``benchmark``, ``task`` and ``score`` (the final score,
the terminal reward); ``variation`` defaults to 0, ``split`` to "unknown", ``status`` to
"done", ``initial_messages`` (the history before turn 0) to none. Turn lines need
``episode``, ``turn`` (0, 1, ... without gaps), ``model``, ``dollars`` (the model call's
cost) and ``messages`` (what the turn appended to the history, each ``{role, content}``
with optional ``tool_calls`` [{id, name, arguments}], ``tool_call_id``, ``name``);
``propensity`` (the logging policy's probability of ``model`` at that state) may be
null or absent, which is reported; the token counts default to 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.benchmarks import available, get_benchmark
from harness.benchmarks.base import AgentFormat
from harness.errors import ConfigError, TrajectoryError, UnknownItem
from harness.records import (
    FORMAT_VERSION,
    EpisodeRecord,
    TurnRecord,
    count_switches,
    parse_message,
    parse_messages,
    switch_rate,
)
from harness.records import READABLE_VERSIONS as RECORD_VERSIONS
from harness.replay.logged import LoggedEpisode, LoggedTurn, link_histories, task_description
from harness.replay.redact import redact
from harness.trajectory import (
    CONFIG_FILE,
    EPISODES_FILE,
    TURNS_DIR,
    RunStore,
    absolute_paths,
    episode_file_name,
    write_json_atomic,
)
from harness.types import Charge, Message

READABLE_VERSIONS = (1, *RECORD_VERSIONS)  # version 1 turn lines are rebuilt here, then read as version 2
REPORT_FILE = "import-report.json"
REFERENCE_FORMAT = "mini-agentic-router-1"
# The reference's finished exit statuses; the rest (APIError, ...) are failed attempts it reruns.
REFERENCE_STATUSES = {
    "Submitted": "submitted",
    "ForcedAnswer": "forced_answer",
    "LimitsExceeded": "limits_exceeded",
}
UNKNOWN_SPLIT = "unknown"

# Turn-line fields that LoggedTurn models; every other field travels in ``extra``.
_TURN_FIELDS = {
    "episode", "turn", "history_len", "initial_messages", "model", "propensity",
    "prompt_tokens", "completion_tokens", "dollars", "messages", "valid",
}  # fmt: skip
_EPISODE_FIELDS = {"episode", "benchmark", "task", "variation", "split", "score", "status"}


@dataclass
class Skipped:
    item: str  # what was not imported: an episode id, a line, the whole file
    reason: str


@dataclass
class FileReport:
    """What one source file gave, and what it did not with the reason."""

    path: str
    episodes: int = 0
    turns: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    missing_propensities: int = 0  # turns stored with propensity null
    redacted: list[str] = field(default_factory=list)  # JSON paths where a credential was removed
    warnings: list[str] = field(default_factory=list)
    unmapped: list[str] = field(
        default_factory=list
    )  # logged question ids the benchmark plug-in does not have

    def skip(self, item: str, reason: str) -> None:
        self.skipped.append(Skipped(item, reason))


@dataclass
class ImportReport:
    kind: str  # run | reference | jsonl
    source: str
    destination: str
    files: list[FileReport] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # run directories written

    @property
    def episodes(self) -> int:
        return sum(f.episodes for f in self.files)

    @property
    def turns(self) -> int:
        return sum(f.turns for f in self.files)

    @property
    def skipped(self) -> list[tuple[str, Skipped]]:
        return [(f.path, s) for f in self.files for s in f.skipped]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "destination": self.destination,
            "runs": self.runs,
            "episodes": self.episodes,
            "turns": self.turns,
            "skipped": len(self.skipped),
            "missing_propensities": sum(f.missing_propensities for f in self.files),
            "redacted": sum(len(f.redacted) for f in self.files),
            "unmapped": sorted({q for f in self.files for q in f.unmapped}),
            "files": [asdict(f) for f in self.files],
        }

    def summary(self) -> str:
        lines = [
            f"imported {self.episodes} episodes ({self.turns} turns) from {self.source} into "
            f"{len(self.runs)} run director{'y' if len(self.runs) == 1 else 'ies'} under {self.destination}"
        ]
        missing = sum(f.missing_propensities for f in self.files)
        if missing:
            lines.append(
                f"  {missing} turn(s) have no logged propensity (stored as null; IS estimators refuse them)"
            )
        for f in self.files:
            if f.redacted:
                lines.append(
                    f"  {f.path}: removed {len(f.redacted)} credential(s) at {', '.join(f.redacted)}"
                )
            for warning in f.warnings:
                lines.append(f"  {f.path}: warning: {warning}")
        unmapped = sorted({q for f in self.files for q in f.unmapped})
        if unmapped:
            lines.append(
                f"  {len(unmapped)} question(s) not in the benchmark plug-in, not imported: {', '.join(unmapped)}"
            )
        reasons: dict[str, int] = defaultdict(int)
        for _, s in self.skipped:
            reasons[s.reason] += 1
        for reason, count in sorted(reasons.items()):
            lines.append(f"  skipped {count}: {reason}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Reading: every source becomes LoggedEpisodes plus FileReports.


def _read_jsonl(path: Path, report: FileReport) -> list[tuple[int, dict[str, Any]]]:
    """(line number, redacted record) of every parseable line; the others are reported."""
    try:
        text = path.read_text()
    except OSError as exc:
        report.skip("file", f"cannot read: {exc.strerror}")
        return []
    out = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            report.skip(f"line {number}", "not valid JSON")
            continue
        if not isinstance(record, dict):
            report.skip(f"line {number}", "not a JSON object")
            continue
        record, removed = redact(record, f"line{number}")
        report.redacted.extend(removed)
        out.append((number, record))
    return out


def _messages(records: Any, where: str) -> tuple[Message, ...]:
    return tuple(parse_messages(records, where))


def _number(record: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = record.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TrajectoryError(f"{where}: {key} is {value!r}, not a number")
    return float(value)


def _propensity(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrajectoryError(f"{where}: propensity {value!r} is not a number")
    return float(value)


def _our_turn(line: dict[str, Any], version: int, agent_format: AgentFormat | None, where: str) -> LoggedTurn:
    """``agent_format``: the benchmark's, to rebuild a version-1 line's messages; None for later versions."""
    try:
        if agent_format is not None:
            observation = agent_format.observation_message(line["observation"], line["score"], None)
            rebuilt = [Message("assistant", line["output"]), Message(observation.role, observation.content)]
            line = line | {"messages": [m.to_dict() for m in rebuilt]}
            version = 2
    except KeyError as exc:
        raise TrajectoryError(f"{where}: turn line has no {exc.args[0]!r}") from None
    record = TurnRecord.from_line(line, version, where)
    return LoggedTurn(
        turn=record.turn,
        model=str(record.model),
        propensity=_propensity(record.propensity, where),
        prompt_tokens=int(record.prompt_tokens),
        completion_tokens=int(record.completion_tokens),
        dollars=_number(line, "dollars", where),
        messages=tuple(record.messages),
        valid=record.valid,
        extra={k: v for k, v in line.items() if k not in _TURN_FIELDS},
    )


def _benchmark_format(name: str, where: str) -> AgentFormat:
    if name not in available():
        raise TrajectoryError(
            f"{where}: benchmark {name!r} is not registered, so its version-1 turns cannot be rebuilt"
        )
    return get_benchmark(name).agent_format


def _check_history(turns: tuple[LoggedTurn, ...], records: list[dict[str, Any]], where: str) -> None:
    for turn, record in zip(turns, records, strict=True):
        if record.get("history_len") is not None and record["history_len"] != len(turn.history):
            raise TrajectoryError(
                f"{where}: turn {turn.turn} saw {record['history_len']} messages, replay gives {len(turn.history)}"
            )


def read_run_dir(run_dir: Path) -> tuple[list[LoggedEpisode], list[FileReport], dict[str, Any]]:
    """Every finished episode of one of our run directories (any format version in READABLE_VERSIONS)."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise TrajectoryError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    try:
        config = absolute_paths(json.loads(path.read_text()), run_dir)  # as RunStore.config() gives it
    except json.JSONDecodeError:
        raise TrajectoryError(f"corrupt run config {path}") from None
    version = config.get("format_version", 1)
    if version not in READABLE_VERSIONS:
        raise TrajectoryError(
            f"{run_dir}: format_version {version!r} is not one this importer reads "
            f"({', '.join(map(str, READABLE_VERSIONS))})"
        )
    episodes_report = FileReport(str(run_dir / EPISODES_FILE))
    reports = [episodes_report]
    wanted: dict[str, dict[str, Any]] = {}
    episodes_path = run_dir / EPISODES_FILE
    records = _read_jsonl(episodes_path, episodes_report) if episodes_path.exists() else []
    for number, record in records:
        key = record.get("episode")
        if not isinstance(key, str):
            episodes_report.skip(f"line {number}", "episode line has no episode id")
        elif key in wanted:
            episodes_report.skip(key, "duplicate episode line (the first one is kept)")
        elif record.get("status") == "failed":
            episodes_report.skip(key, f"episode failed: {record.get('error') or 'no error recorded'}")
        elif record.get("score") is None:
            episodes_report.skip(key, "no final score")
        else:
            wanted[key] = record
    turn_files = {p.name: p for p in sorted((run_dir / TURNS_DIR).glob("*.jsonl"))}
    claimed = set()
    episodes = []
    for key, record in wanted.items():
        name = episode_file_name(key)
        path = turn_files.get(name)
        if path is None:
            episodes_report.skip(key, "no turn file")
            continue
        claimed.add(name)
        report = FileReport(str(path))
        reports.append(report)
        episode = _our_episode(run_dir, record, _read_jsonl(path, report), version, report)
        if episode is not None:
            episodes.append(episode)
    for name, path in turn_files.items():
        if name not in claimed:
            report = FileReport(str(path))
            reason = (
                "an interrupted attempt kept aside by a rerun"
                if ".interrupted-" in name
                else "no usable episode line in episodes.jsonl (unfinished, failed or skipped episode)"
            )
            report.skip("file", reason)
            reports.append(report)
    return episodes, reports, config


def _our_episode(
    run_dir: Path,
    record: dict[str, Any],
    lines: list[tuple[int, dict[str, Any]]],
    version: int,
    report: FileReport,
) -> LoggedEpisode | None:
    key = record["episode"]
    where = f"{report.path}"
    turn_records = sorted((r for _, r in lines), key=lambda r: r.get("turn", -1))
    try:
        if not turn_records:
            raise TrajectoryError(f"{where}: no turns")
        if record.get("turns") is not None and record["turns"] != len(turn_records):
            raise TrajectoryError(
                f"{where}: episode line says {record['turns']} turns, the file has {len(turn_records)}"
            )
        initial = _messages(turn_records[0].get("initial_messages") or [], where)
        agent_format = None if version >= 2 else _benchmark_format(str(record["benchmark"]), where)
        turns = link_histories(
            initial,
            [_our_turn(r, version, agent_format, f"{where} turn {r.get('turn')}") for r in turn_records],
        )
        _check_history(turns, turn_records, where)
        parsed = EpisodeRecord.from_line(record, max(version, 2), where)
        episode = LoggedEpisode(
            episode=key,
            benchmark=str(parsed.benchmark),
            task=str(parsed.task),
            variation=parsed.variation,
            split=str(parsed.split or UNKNOWN_SPLIT),
            score=_number(record, "score", where),
            status=str(parsed.status or "done"),
            turns=turns,
            initial_messages=initial,
            source=str(run_dir),
            extra={k: v for k, v in record.items() if k not in _EPISODE_FIELDS},
        )
    except (TrajectoryError, KeyError, TypeError, ValueError) as exc:
        report.skip(key, _reason(exc, where, str(run_dir)))
        return None
    report.episodes, report.turns = 1, len(turns)
    report.missing_propensities = episode.missing_propensities
    return episode


def _reason(exc: BaseException, *where: str) -> str:
    """The error's message without the location prefixes the report already names."""
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    message = str(exc)
    for prefix in where:
        message = message.removeprefix(f"{prefix}: ")
    return re.sub(r"^(turn \S+: |episode '[^']*': )", "", message)


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _reference_message(message: Mapping[str, Any], where: str) -> Message:
    """A reference message as ours: OpenAI-style tool calls flattened to {id, name, arguments}."""
    record: dict[str, Any] = {k: message.get(k) for k in ("role", "content", "tool_call_id", "name")}
    calls = []
    for call in message.get("tool_calls") or []:
        function = _dig(call, "function") or {}
        calls.append(
            {"id": _dig(call, "id"), "name": function.get("name"), "arguments": function.get("arguments")}
        )
    record["tool_calls"] = calls
    return parse_message(record, where)


def _reference_score(info: Mapping[str, Any]) -> float | None:
    score = info.get("final_score")
    if isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score):
        return float(score)
    correct = _dig(info, "benchmark_data", "judge_result", "correct")
    if isinstance(correct, bool):
        return 1.0 if correct else 0.0
    return None


def _reference_task(info: Mapping[str, Any], where: str) -> tuple[str, str, int]:
    """(benchmark, task, variation): the benchmark the record names, else the first registered one that
    recognises it (:meth:`Benchmark.reference_item`), keys it as that plug-in keys its episodes."""
    named = info.get("benchmark")
    if named is not None and named not in available():
        raise TrajectoryError(f"{where}: info.benchmark {named!r} is not a registered benchmark")
    for name in [named] if named is not None else available():
        located = get_benchmark(name).reference_item(info)
        if located is not None:
            return name, located[0], located[1]
    raise TrajectoryError(
        f"{where}: "
        + (f"info does not name a {named} item" if named else "no registered benchmark recognises info")
    )


def _reference_turn(index: int, message: Mapping[str, Any], after: list[Any], where: str) -> LoggedTurn:
    response = _dig(message, "extra", "response") or {}
    router_info = message.get("router_info") or _dig(message, "extra", "router_info") or {}
    model = message.get("model_name") or router_info.get("selected_model") or response.get("model")
    if not model:
        raise TrajectoryError(f"{where}: turn {index} names no model")
    propensity = message.get("propensity")
    if propensity is None:
        propensity = router_info.get("propensity")
    usage = response.get("usage") or {}
    messages = (_reference_message(message, where), *(_reference_message(m, where) for m in after))
    observation = next((m.content for m in messages[1:] if m.role in ("user", "tool")), None)
    return LoggedTurn(
        turn=index,
        model=str(model),
        propensity=_propensity(propensity, f"{where} turn {index}"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        dollars=float(usage.get("cost") or 0.0),
        messages=messages,
        extra={"output": messages[0].content, "observation": observation, "usage_has_cost": "cost" in usage},
    )


def read_reference_file(path: Path, report: FileReport, split: str = UNKNOWN_SPLIT) -> LoggedEpisode | None:
    """One ``*.traj.json``; problems go to ``report`` and give None."""
    where = str(path)
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        report.skip("file", f"not valid JSON (line {exc.lineno})")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        report.skip("file", f"cannot read: {exc}")
        return None
    document, removed = redact(document)
    report.redacted.extend(removed)
    if not isinstance(document, dict) or document.get("trajectory_format") != REFERENCE_FORMAT:
        found = document.get("trajectory_format") if isinstance(document, dict) else None
        report.skip("file", f"trajectory_format is {found!r}, not {REFERENCE_FORMAT!r}")
        return None
    info = document.get("info") or {}
    exit_status = info.get("exit_status")
    if exit_status not in REFERENCE_STATUSES:
        report.skip("file", f"exit_status {exit_status!r} is not a finished episode")
        return None
    score = _reference_score(info)
    if score is None:
        report.skip(
            "file", "no final score (neither info.final_score nor info.benchmark_data.judge_result.correct)"
        )
        return None
    try:
        benchmark, task, variation = _reference_task(info, where)
        raw = document.get("messages")
        if not isinstance(raw, list) or not all(isinstance(m, Mapping) for m in raw):
            raise TrajectoryError(f"{where}: messages is not a list of objects")
        starts = [i for i, m in enumerate(raw) if m.get("role") == "assistant"]
        if not starts:
            raise TrajectoryError(f"{where}: no assistant message, so no turns")
        initial = tuple(_reference_message(m, where) for m in raw[: starts[0]])
        ends = [*starts[1:], len(raw)]
        drafts = [
            _reference_turn(k, raw[start], raw[start + 1 : end], where)
            for k, (start, end) in enumerate(zip(starts, ends, strict=True))
        ]
    except UnknownItem as exc:
        report.unmapped.append(exc.item)
        report.skip("file", _reason(exc, where))
        return None
    except (TrajectoryError, TypeError, ValueError, AttributeError) as exc:
        report.skip("file", _reason(exc, where))
        return None
    no_cost = sum(not t.extra["usage_has_cost"] for t in drafts)
    if no_cost:
        report.warnings.append(f"{no_cost} turn(s) have no extra.response.usage.cost; stored as 0 dollars")
    total = sum(t.dollars for t in drafts)
    logged_total = _dig(info, "model_stats", "instance_cost")
    if isinstance(logged_total, int | float) and not math.isclose(
        total, logged_total, rel_tol=1e-6, abs_tol=1e-9
    ):
        report.warnings.append(
            f"turn costs sum to {total:.6g}, info.model_stats.instance_cost says {logged_total:.6g}"
        )
    calls = _dig(info, "model_stats", "api_calls")
    if isinstance(calls, int) and calls != len(drafts):
        report.warnings.append(f"{len(drafts)} assistant turns, info.model_stats.api_calls says {calls}")
    last = len(drafts) - 1
    finished = []
    for t in drafts:
        extra = {k: v for k, v in t.extra.items() if k != "usage_has_cost"}
        extra |= {"score": score if t.turn == last else None, "done": t.turn == last}
        finished.append(dataclasses.replace(t, extra=extra))
    episode = LoggedEpisode(
        episode=f"{benchmark}/{task}/{variation}",
        benchmark=benchmark,
        task=task,
        variation=variation,
        split=split,
        score=score,
        status=REFERENCE_STATUSES[exit_status],
        turns=link_histories(initial, finished),
        initial_messages=initial,
        source=where,
        extra={
            "exit_status": exit_status,
            "category": _dig(info, "benchmark_data", "category"),
            "reference_model_config": _dig(info, "config", "model"),
        },
    )
    report.episodes, report.turns = 1, len(episode.turns)
    report.missing_propensities = episode.missing_propensities
    return episode


_RUN_SUFFIX = re.compile(r"_run(\d+)$")


def read_reference(
    root: Path, split: str = UNKNOWN_SPLIT
) -> tuple[dict[tuple[str, int], list[LoggedEpisode]], list[FileReport]]:
    """Every ``*.traj.json`` under ``root``, grouped by (mode, run K); results.json is cross-checked."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"reference trajectory directory {root} does not exist")
    groups: dict[tuple[str, int], list[LoggedEpisode]] = defaultdict(list)
    reports: list[FileReport] = []
    seen: dict[tuple[str, int], set[str]] = defaultdict(set)
    found: dict[Path, set[str]] = defaultdict(set)  # mode directory -> instance names with a file
    for path in sorted(root.rglob("*.traj.json")):
        report = FileReport(str(path))
        reports.append(report)
        instance = path.name.removesuffix(".traj.json")
        mode_dir = path.parent.parent
        found[mode_dir].add(instance)
        match = _RUN_SUFFIX.search(instance)
        if match is None:
            report.warnings.append(f"{instance!r} has no _runK suffix; filed as run 0")
        key = (mode_dir.name, int(match.group(1)) if match else 0)
        episode = read_reference_file(path, report, split)
        if episode is None:
            continue
        if episode.episode in seen[key]:
            report.skip(
                episode.episode, f"duplicate of an episode already read for mode {key[0]!r} run {key[1]}"
            )
            report.episodes = report.turns = report.missing_propensities = 0
            continue
        seen[key].add(episode.episode)
        groups[key].append(episode)
    for results_path in sorted(root.rglob("results.json")):
        reports.append(_check_results(results_path, found[results_path.parent]))
    return dict(groups), reports


def _check_results(path: Path, instances: set[str]) -> FileReport:
    """results.json lists every attempted instance; one without a trajectory file is reported, not lost."""
    report = FileReport(str(path))
    try:
        listed = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        report.skip("file", "not valid JSON")
        return report
    if not isinstance(listed, dict):
        report.skip("file", "not a JSON object keyed by instance")
        return report
    for instance in sorted(set(listed) - instances):
        report.skip(instance, "listed in results.json but has no trajectory file")
    return report


def read_generic_jsonl(path: Path) -> tuple[list[LoggedEpisode], list[FileReport]]:
    """Episodes of a file in the generic JSONL schema (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"generic JSONL log {path} does not exist")
    report = FileReport(str(path))
    episode_lines: dict[str, dict[str, Any]] = {}
    turn_lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for number, record in _read_jsonl(path, report):
        kind, key = record.get("type"), record.get("episode")
        if kind not in ("episode", "turn"):
            report.skip(f"line {number}", f"type is {kind!r}, not 'episode' or 'turn'")
        elif not isinstance(key, str):
            report.skip(f"line {number}", "no episode id")
        elif kind == "turn":
            turn_lines[key].append(record)
        elif key in episode_lines:
            report.skip(f"line {number}", f"second episode line for {key!r} (the first one is kept)")
        else:
            episode_lines[key] = record
    for key in sorted(set(turn_lines) - set(episode_lines)):
        report.skip(key, f"{len(turn_lines[key])} turn line(s) but no episode line")
    episodes = []
    for key, record in episode_lines.items():
        where = f"{path}: episode {key!r}"
        try:
            if record.get("score") is None:
                raise TrajectoryError(f"{where}: no final score")
            records = sorted(turn_lines.get(key, []), key=lambda r: r.get("turn", -1))
            if not records:
                raise TrajectoryError(f"{where}: no turns")
            initial = _messages(record.get("initial_messages") or [], where)
            drafts = []
            for r in records:
                at = f"{where}: turn {r.get('turn')}"
                if "model" not in r or "messages" not in r:
                    raise TrajectoryError(f"{at}: turn line needs model and messages")
                drafts.append(
                    LoggedTurn(
                        turn=int(r["turn"]),
                        model=str(r["model"]),
                        propensity=_propensity(r.get("propensity"), at),
                        prompt_tokens=int(r.get("prompt_tokens") or 0),
                        completion_tokens=int(r.get("completion_tokens") or 0),
                        dollars=_number(r, "dollars", at),
                        messages=_messages(r["messages"], at),
                        extra={k: v for k, v in r.items() if k not in _TURN_FIELDS | {"type"}},
                    )
                )
            episode = LoggedEpisode(
                episode=key,
                benchmark=str(record["benchmark"]),
                task=str(record["task"]),
                variation=int(record.get("variation", 0)),
                split=str(record.get("split") or UNKNOWN_SPLIT),
                score=_number(record, "score", where),
                status=str(record.get("status") or "done"),
                turns=link_histories(initial, drafts),
                initial_messages=initial,
                source=str(path),
                extra={
                    k: v for k, v in record.items() if k not in _EPISODE_FIELDS | {"type", "initial_messages"}
                },
            )
        except (TrajectoryError, KeyError, TypeError, ValueError) as exc:
            report.skip(key, _reason(exc, where, str(path)))
            continue
        episodes.append(episode)
        report.episodes += 1
        report.turns += len(episode.turns)
        report.missing_propensities += episode.missing_propensities
    return episodes, [report]


# ---------------------------------------------------------------------------------------------
# Writing: LoggedEpisodes into a run directory of the current format.


def turn_record(episode: LoggedEpisode, turn: LoggedTurn) -> TurnRecord:
    """The turn as a record: what the log implies, with the fields its source line carried laid over it."""
    carried = dict(turn.extra)
    described = carried.pop("task_description", None) or task_description(episode)
    first = turn.turn == 0
    implied = TurnRecord(
        episode=episode.episode,
        turn=turn.turn,
        model=turn.model,
        dollars=turn.dollars,
        messages=list(turn.messages),
        history_len=len(turn.history),
        initial_messages=list(episode.initial_messages) if first else None,
        task_description=described if first else None,
        propensity=turn.propensity,
        prompt_tokens=turn.prompt_tokens,
        completion_tokens=turn.completion_tokens,
        charges=[
            dataclasses.asdict(
                Charge(
                    "model", turn.model, turn.prompt_tokens, turn.completion_tokens, turn.dollars, "imported"
                )
            )
        ],
        output=next((m.content for m in turn.messages if m.role == "assistant"), None),
        valid=turn.valid,
        done=turn.turn == len(episode.turns) - 1,
    )
    return implied.overlaid(carried, f"{episode.source}: episode {episode.episode!r} turn {turn.turn}")


def episode_record(episode: LoggedEpisode) -> EpisodeRecord:
    """The episode as a record: what the log implies, with the fields its source line carried laid over it."""
    by_model: dict[str, float] = defaultdict(float)
    for t in episode.turns:
        by_model[t.model] += t.dollars
    implied = EpisodeRecord(
        episode=episode.episode,
        benchmark=episode.benchmark,
        task=episode.task,
        variation=episode.variation,
        split=episode.split,
        score=episode.score,
        status=episode.status,
        cost=episode.cost,
        model_cost=episode.cost,
        cost_by_model=dict(by_model),
        turns=len(episode.turns),
        switches=count_switches(episode.models),
        switch_rate=switch_rate(episode.models),
    )
    return implied.overlaid(episode.extra, f"{episode.source}: episode {episode.episode!r}")


def write_run(episodes: Iterable[LoggedEpisode], dest: Path, config: dict[str, Any]) -> RunStore:
    """A new run directory holding ``episodes``; an existing one with episodes is refused."""
    dest = Path(dest)
    if (dest / EPISODES_FILE).exists() and (dest / EPISODES_FILE).stat().st_size:
        raise ConfigError(f"{dest} already holds episodes; import into a new directory")
    store = RunStore(dest)
    store.open({**config, "format_version": FORMAT_VERSION})
    for episode in episodes:
        path = store.begin_episode(episode.episode)
        for turn in episode.turns:
            store.record_turn(path, turn_record(episode, turn))
        store.record_episode(episode_record(episode))
    return store


def _save(report: ImportReport, where: Path) -> ImportReport:
    where.mkdir(parents=True, exist_ok=True)
    write_json_atomic(where / REPORT_FILE, report.to_dict())
    return report


def import_run(source: Path, dest: Path) -> ImportReport:
    """One of our run directories (any readable format) rewritten in the current format in ``dest``."""
    source, dest = Path(source), Path(dest)
    if source.resolve() == dest.resolve():
        raise ConfigError(f"import destination {dest} is the source; choose a new directory")
    episodes, reports, config = read_run_dir(source)
    config = {k: v for k, v in config.items() if k != "format_version"} | {
        "imported_from": {"kind": "run", "source": str(source), "format_version": config["format_version"]}
    }
    config, removed = redact(config, CONFIG_FILE)
    if removed:
        reports.append(FileReport(str(source / CONFIG_FILE), redacted=removed))
    write_run(episodes, dest, config)
    return _save(ImportReport("run", str(source), str(dest), reports, [str(dest)]), dest)


def import_reference(source: Path, dest: Path, split: str = UNKNOWN_SPLIT) -> ImportReport:
    """The reference's trajectories as one run directory per (mode, run K): ``dest/<mode>/runK``."""
    source, dest = Path(source), Path(dest)
    groups, reports = read_reference(source, split)
    report = ImportReport("reference", str(source), str(dest), reports)
    for (mode, k), episodes in sorted(groups.items()):
        run_dir = dest / mode / f"run{k}"
        config = {
            "run": {"router": mode, "run_index": k},
            "imported_from": {"kind": "reference", "source": str(source)},
        }
        write_run(episodes, run_dir, config)
        report.runs.append(str(run_dir))
    return _save(report, dest)


def import_jsonl(source: Path, dest: Path) -> ImportReport:
    """A log in the generic JSONL schema as one run directory."""
    source, dest = Path(source), Path(dest)
    episodes, reports = read_generic_jsonl(source)
    write_run(episodes, dest, {"run": {}, "imported_from": {"kind": "jsonl", "source": str(source)}})
    return _save(ImportReport("jsonl", str(source), str(dest), reports, [str(dest)]), dest)


IMPORTERS = {"run": import_run, "reference": import_reference, "jsonl": import_jsonl}
