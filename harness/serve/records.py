"""Served traffic as the harness's trajectory records: one function per record, each written once.

These mirror the turn line and the episode record of :mod:`harness.agent` field for field, so
``harness replay``, ``harness train`` and ``harness summarize`` read a served run directory
like any other. A server sees no environment, so the fields only an environment knows are
fixed here, in one place: ``valid`` is True and ``error`` None (whether an action worked
happens at the client), ``score`` (the score so far) is 0.0, ``action`` is None and
``observation`` joins the text of the messages the client sent back after the reply.

Served lines carry a few fields of their own in the records' ``extra`` (readers keep them):
``session``, the upstream ``latency_s``, the ``routing_s`` the router took, and
``reported_cached_prompt_tokens`` where the provider said how much of the prompt its cache
served (``cached_prompt_tokens`` stays the ledger's, as in the harness, because that is what
was billed). A session closed before any turn was answered (its upstream calls failed or were cut
off) is recorded as a failed episode, so its abandoned dollars are kept but no reader takes it for
a result.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from harness.records import EPISODE_FAILURE, EpisodeRecord, TurnRecord
from harness.types import Message, TaskInstance

if TYPE_CHECKING:
    from harness.serve.sessions import RoutedTurn, Session


def turn_line(session: Session, routed: RoutedTurn, follow_up: list[Message]) -> TurnRecord:
    """The turn line of a routed turn, once the messages the client sent after its reply are known."""
    completion = routed.completion
    first = routed.turn == 0
    return TurnRecord(
        episode=session.key,
        turn=routed.turn,
        history_len=routed.history_len,
        initial_messages=list(session.initial) if first else None,
        task_description=session.task_description if first else None,
        messages=[routed.reply, *follow_up],
        model=routed.model,
        propensity=routed.propensity,
        router_scores=routed.scores,
        prompt_tokens=completion.prompt_tokens,
        cached_prompt_tokens=routed.cached,
        uncached_prompt_tokens=completion.prompt_tokens - routed.cached,
        completion_tokens=completion.completion_tokens,
        dollars=routed.dollars,
        charges=routed.charges,
        output=completion.text,
        action=None,
        observation="\n".join(m.content for m in follow_up),
        valid=True,
        error=None,
        score=0.0,
        done=False,
        extra={
            "session": session.id,
            "latency_s": round(routed.latency_s, 6),
            "routing_s": round(routed.routing_s, 6),
            "reported_cached_prompt_tokens": routed.reported_cached,
        },
    )


def episode_record(session: Session, status: str, score: float | None, router_label: str) -> EpisodeRecord:
    """A closed session as an episode line, built as the agent loop builds one (:meth:`EpisodeRecord.of`)."""
    # nothing was answered (every attempt failed or was cut off): no result to read
    failed = session.turn == 0
    task = TaskInstance(session.benchmark, session.task, session.variation, session.split)
    record = EpisodeRecord.of(
        task,
        session.seed,
        router_label,
        session.ledger,
        models=session.models,
        score=None if failed else score,
        turns=session.turn,
        status="failed" if failed else status,
        error="no turn was answered" if failed else None,
        failure=EPISODE_FAILURE if failed else None,
        duration_s=round(session.duration_s, 3),
        retries=session.retries,
        abandoned_cost=session.abandoned.total,
        extra={"session": session.id},
    )
    return replace(record, episode=session.key)
