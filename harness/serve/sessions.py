"""Sessions: which conversation a request continues, what its router sees, and when it becomes an episode.

A request names its session (``X-Session-Id``, else ``metadata.session_id``, else ``user``) or is
matched to one: agents resend the whole history each turn, so a request continues the open session
whose last request plus the reply it got is the longest prefix of this request's messages. A
request that repeats a session's last request exactly is a retry of that turn: the turn that was
answered is undone (its dollars kept as ``abandoned_cost``) and routed again.

A turn's line holds the reply and the messages the client sent after it (tool results, the next
user message), exactly as a turn line of ``harness run`` holds the reply and the observations; so
a line is written when the session's next request arrives, or when the session closes. A session
closes when its outcome is posted, when it has been idle too long, when the server stops, or
when its next request finds its turn or dollar limit reached (checked before each turn, as the
agent loop does); it is then written as an episode record.

Each session routes with its own shallow copy of the router (a router may keep per-episode
memory, as sticky-random does) and its own generator, seeded by the serve seed and the episode
key, so a stochastic router's draws are reproducible per session.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.agent import Progress
from harness.benchmarks import get_benchmark
from harness.config import Limits
from harness.ledger import CostLedger
from harness.records import EpisodeRecord
from harness.seeding import derive_seed
from harness.serve.records import episode_record, turn_line
from harness.types import Completion, Message, ModelCard, TaskInstance, ToolCall, TurnState
from routers.base import Router

SESSION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
EPISODE_PREFIX = "serve"


class RequestRefused(Exception):
    """A request the server answers with an error of its own (not the upstream's): status, one line."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


def message_of(raw: Any, where: str) -> Message:
    """An OpenAI chat message as the harness's :class:`Message` (text parts joined, tool calls flattened)."""
    if not isinstance(raw, Mapping):
        raise RequestRefused(400, f"{where} is not an object")
    role = raw.get("role")
    if role not in ("system", "developer", "user", "assistant", "tool"):
        raise RequestRefused(400, f"{where}.role {role!r} is not system, developer, user, assistant or tool")
    content = raw.get("content")
    if isinstance(content, list):
        content = "".join(
            p.get("text") or "" for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    elif content is not None and not isinstance(content, str):
        raise RequestRefused(400, f"{where}.content is neither a string nor a list of parts")
    calls = raw.get("tool_calls") or []
    if not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls):
        raise RequestRefused(400, f"{where}.tool_calls is not a list of objects")
    tool_calls = tuple(
        ToolCall(
            id=str(c.get("id") or ""),
            name=str((c.get("function") or {}).get("name") or ""),
            arguments=str((c.get("function") or {}).get("arguments") or ""),
        )
        for c in calls
    )
    # "developer" is the newer name of "system"; the harness's history knows the four roles.
    return Message(
        role="system" if role == "developer" else role,
        content=content or "",
        tool_calls=tool_calls,
        tool_call_id=raw.get("tool_call_id"),
        name=raw.get("name"),
    )


def prefix_digests(messages: list[Message]) -> list[bytes]:
    """digests[k]: a digest of the first k messages (k = 0..n), so prefixes are compared in O(1)."""
    digest = hashlib.blake2b(digest_size=16).digest()
    out = [digest]
    for message in messages:
        text = json.dumps(message.to_dict(), sort_keys=True).encode()
        digest = hashlib.blake2b(digest + text, digest_size=16).digest()
        out.append(digest)
    return out


@dataclass(frozen=True)
class SessionMeta:
    """What the router is told about the session's task; a request's ``metadata`` may set each field."""

    benchmark: str
    task: str = "served"
    variation: int = 0
    split: str = "served"
    task_description: str | None = None  # None: read from the opening messages, as replay reads it


@dataclass
class RoutedTurn:
    """A turn answered; its line waits for the messages the client sends after the reply."""

    turn: int
    history_len: int
    model: str
    propensity: float
    scores: dict[str, float] | None
    reply: Message
    completion: Completion
    dollars: float
    cached: int
    charges: list[dict]
    latency_s: float
    routing_s: float
    reported_cached: int | None
    ledger_before: CostLedger = field(repr=False)


class Session(Progress):
    """One conversation: its router copy, generator, ledger and the turn waiting for its line."""

    def __init__(self, sid: str, key: str, meta: SessionMeta, router: Router, seed: int, history: list[Message],
                 limits: Limits, turns_path: Path):  # fmt: skip
        self.id, self.key = sid, key
        self.benchmark, self.task = meta.benchmark, meta.task
        self.variation, self.split = meta.variation, meta.split
        self.task_description = (
            meta.task_description
            if meta.task_description is not None
            else get_benchmark(meta.benchmark).agent_format.task_description(history)
        )
        self.router = copy.copy(router)
        self.seed = derive_seed(seed, key)
        self.rng = np.random.default_rng(self.seed)
        self.limits = limits
        self.initial = list(history)
        self.turns_path = turns_path
        self.ledger = CostLedger()
        self.abandoned = CostLedger()  # turns answered but never kept: a retried turn, a stream cut off
        self.models: list[str] = []
        self.turn = 0
        self.retries = 0
        self.pending: RoutedTurn | None = None
        # What a next request may be: (length, digest of that prefix, kind); see Sessions.
        self.expects: list[tuple[int, bytes, str]] = []
        self.busy = False
        self.closed = False
        self.started = self.last_seen = time.monotonic()

    @property
    def duration_s(self) -> float:
        return time.monotonic() - self.started

    def state(self, history: list[Message], candidates: list[ModelCard]) -> TurnState:
        """What the router sees, built as the agent loop builds it (no environment: every action valid)."""
        task = TaskInstance(self.benchmark, self.task, self.variation, self.split)
        return self.turn_state(task, self.task_description, history, candidates)

    def undo_pending(self) -> None:
        """The client asked the last turn again: it is routed anew, its dollars kept as abandoned."""
        routed = self.pending
        assert routed is not None
        for _, charge in self.ledger.entries[len(routed.ledger_before.entries) :]:
            self.abandoned.charge(routed.turn, charge)
        self.ledger = routed.ledger_before
        del self.models[routed.turn :]
        self.turn = routed.turn
        self.pending = None


CONTINUE, RETRY, AGAIN = "continue", "retry", "again"


class Sessions:
    """The open sessions, the prefix index that finds them, and their records in the run directory.

    A session expects its next request to be one of: ``continue``, a history that extends its last
    request and the reply it got; ``retry``, that last request again (the answered turn is undone
    and routed anew); ``again``, exactly the last request when it got no reply (the upstream failed,
    the stream was cut off). Every method runs on the server's event loop, so none interleave.
    """

    def __init__(self, store: Any, router: Router, router_label: str, seed: int, limits: Limits,
                 taken_keys: set[str]):  # fmt: skip
        self.store, self.router, self.router_label = store, router, router_label
        self.seed, self.limits = seed, limits
        self.by_id: dict[str, Session] = {}
        self.index: dict[bytes, tuple[Session, int, str]] = {}  # prefix digest -> (session, length, kind)
        self.ended: dict[bytes, tuple[str, str]] = {}  # a history that met a limit -> (session id, status)
        self.taken = set(taken_keys)

    @property
    def open(self) -> list[Session]:
        return list(self.by_id.values())

    def claim(self, raw_messages: Any, named: str | None, meta: SessionMeta) -> tuple[Session, list[Message]]:
        """The session this request continues (or a new one), busy until :meth:`release`; and the history."""
        if not isinstance(raw_messages, list) or not raw_messages:
            raise RequestRefused(400, "messages must be a non-empty list")
        if named is not None and not SESSION_ID.match(named):
            raise RequestRefused(400, "session id must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        history = [message_of(m, f"messages[{i}]") for i, m in enumerate(raw_messages)]
        digests = prefix_digests(history)
        for digest in digests[1:]:
            if digest in self.ended:
                sid, status = self.ended[digest]
                raise RequestRefused(
                    400,
                    f"this conversation continues session {sid!r}, which ended ({status})",
                    "session_ended",
                )
        session, kind = self._named(named, digests) if named is not None else self._matched(digests)
        if session is None:
            session, kind = self._start(named, meta, history), AGAIN
        self._unindex(session)
        session.busy = True
        session.last_seen = time.monotonic()
        if kind == RETRY:
            session.undo_pending()
        elif kind == CONTINUE:
            routed = session.pending
            assert routed is not None
            self._write_pending(session, history[routed.history_len + 1 :])
        status = session.limit_reached()
        if status is not None:
            self.ended[digests[-1]] = (session.id, status)
            self.close(session, status, None)
            raise RequestRefused(400, self._limit_message(session, status), "session_limit_reached")
        return session, history

    def _named(self, sid: str, digests: list[bytes]) -> tuple[Session | None, str]:
        session = self.by_id.get(sid)
        if session is None:
            return None, AGAIN
        if session.busy:
            raise RequestRefused(409, f"session {sid!r} already has a request in flight")
        n = len(digests) - 1
        for length, digest, kind in session.expects:
            if (n == length or (kind == CONTINUE and n > length)) and digests[length] == digest:
                return session, kind
        self.close(session, "diverged", None)  # the client rewrote the history: a new episode starts
        return None, AGAIN

    @staticmethod
    def continues(session: Session, history: list[Message]) -> bool:
        """Whether ``history`` extends the session's last request and the reply it got."""
        digests = prefix_digests(history)
        n = len(digests) - 1
        return any(kind == CONTINUE and n >= length and digests[length] == digest
                   for length, digest, kind in session.expects)  # fmt: skip

    def _matched(self, digests: list[bytes]) -> tuple[Session | None, str]:
        n = len(digests) - 1
        for k in range(n, 0, -1):
            entry = self.index.get(digests[k])
            if entry is not None and (k == n or entry[2] == CONTINUE):
                return entry[0], entry[2]
        return None, AGAIN

    def _start(self, named: str | None, meta: SessionMeta, history: list[Message]) -> Session:
        sid = named or secrets.token_hex(8)
        key, n = f"{EPISODE_PREFIX}/{sid}", 0
        while key in self.taken:
            n += 1
            key = f"{EPISODE_PREFIX}/{sid}/r{n}"
        self.taken.add(key)
        session = Session(sid, key, meta, self.router, self.seed, history, self.limits,
                          self.store.begin_episode(key))  # fmt: skip
        self.by_id[sid] = session
        return session

    def release(self, session: Session, history: list[Message], routed: RoutedTurn | None) -> None:
        """The request is over: with its turn answered, or not (the same request may come again)."""
        digests = prefix_digests([*history, routed.reply] if routed is not None else history)
        if routed is not None:
            session.pending = routed
            session.models.append(routed.model)
            session.turn = routed.turn + 1
            expects = [(len(history) + 1, digests[-1], CONTINUE), (len(history), digests[-2], RETRY)]
        else:
            expects = [(len(history), digests[-1], AGAIN)]
        session.busy = False
        session.last_seen = time.monotonic()
        if session.closed:
            return
        session.expects = expects
        for length, digest, kind in expects:
            self.index[digest] = (session, length, kind)

    def close(self, session: Session, status: str, score: float | None,
              final: list[Message] | None = None) -> EpisodeRecord:  # fmt: skip
        """Write the pending turn's line and the episode record; ``final``: the whole history at the end."""
        routed = session.pending
        if routed is not None:
            self._write_pending(session, final[routed.history_len + 1 :] if final is not None else [])
        if status in ("done", "idle", "shutdown", "diverged"):
            status = session.limit_reached() or status
        self._unindex(session)
        session.closed = True
        record = episode_record(session, status, score, self.router_label)
        self.store.record_episode(record)
        if self.by_id.get(session.id) is session:
            del self.by_id[session.id]
        return record

    def _write_pending(self, session: Session, follow_up: list[Message]) -> None:
        routed = session.pending
        assert routed is not None
        self.store.record_turn(session.turns_path, turn_line(session, routed, follow_up))
        session.pending = None

    def _unindex(self, session: Session) -> None:
        for _, digest, _ in session.expects:
            if self.index.get(digest, (None,))[0] is session:
                del self.index[digest]
        session.expects = []

    def _limit_message(self, session: Session, status: str) -> str:
        if status == "max_turns":
            return f"session {session.id!r} reached its turn limit ({self.limits.max_turns} turns)"
        return f"session {session.id!r} reached its budget (${self.limits.budget_dollars:g})"

    def idle(self, idle_s: float) -> list[Session]:
        now = time.monotonic()
        return [s for s in self.open if not s.busy and now - s.last_seen >= idle_s]
