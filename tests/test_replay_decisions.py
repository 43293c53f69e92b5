"""Decision-level replay: the router's input rebuilt from the log, its picks, agreement and advantage."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import Limits
from harness.errors import ConfigError
from harness.pool import load_pool
from harness.replay.decisions import (
    RouterPick,
    StateDefaults,
    replay_decisions,
    router_function,
    turn_state,
)
from harness.replay.importers import import_reference, read_run_dir
from harness.replay.logged import LoggedEpisode, LoggedTurn, link_histories
from harness.types import Message
from routers import make_router

REFERENCE = Path(__file__).parent / "fixtures" / "replay" / "reference" / "trajectories"
CARDS = load_pool("paper6").spec.models
NAMES = [c.name for c in CARDS]


def logged(task: str, models: list[str], valid: list[bool | None]) -> LoggedEpisode:
    initial = (
        Message("system", "You are an agent."),
        Message("user", f"Task: {task} the thing\n\nObservation: a room"),
    )
    drafts = [
        LoggedTurn(
            t,
            model,
            1 / 6,
            10,
            2,
            0.01 * (t + 1),
            (Message("assistant", f"Action: step {t}"), Message("user", f"Observation: {t}")),
            valid=ok,
        )
        for t, (model, ok) in enumerate(zip(models, valid, strict=True))
    ]
    return LoggedEpisode(
        f"sw/{task}/0",
        "scienceworld",
        task,
        0,
        "test",
        10.0,
        "done",
        link_histories(initial, drafts),
        initial,
    )


EPISODE = logged(
    "boil",
    ["gpt-5", "gpt-oss-120b", "gpt-5", "gpt-5", "minimax-m2", "minimax-m2"],
    [True, False, False, True, None, True],
)


def test_turn_state_is_rebuilt_from_the_log_with_documented_defaults():
    state = turn_state(EPISODE, 3, CARDS)
    assert state.task_description == "boil the thing"
    assert [m.content for m in state.history][-2:] == ["Action: step 2", "Observation: 2"]
    assert len(state.history) == 2 + 2 * 3
    assert state.dollars_spent == pytest.approx(0.01 + 0.02 + 0.03)
    assert (state.last_action_valid, state.consecutive_errors) == (False, 2)
    assert (state.budget_dollars, state.max_turns) == (2.0, 50)  # the benchmark plug-in's limits
    assert [c.name for c in state.candidates] == NAMES
    # A turn whose validity was not logged counts as valid.
    after_unknown = turn_state(EPISODE, 5, CARDS, StateDefaults(Limits(max_turns=6, budget_dollars=1.0)))
    assert (after_unknown.last_action_valid, after_unknown.consecutive_errors, after_unknown.max_turns) == (
        True,
        0,
        6,
    )


def test_heuristic_router_replayed_on_logged_states():
    router = router_function(make_router("heuristic", {}, NAMES), seed=0)
    replay = replay_decisions([EPISODE], router, CARDS, StateDefaults(Limits(max_turns=6)))
    picks = [d.picked_model for d in replay.decisions]
    # Strong model at turn 0 and after each invalid turn; the value model from 2/3 of the limit on.
    assert picks[0] == picks[2] == picks[3] == "gpt-5"
    assert picks[4] == picks[5] == "minimax-m2"
    assert picks[1] in {"gpt-oss-120b", "gemini-2.5-flash-lite", "deepseek-v3.2"}
    agree = [p == m for p, m in zip(picks, EPISODE.models, strict=True)]
    assert replay.agreement == pytest.approx(sum(agree) / 6)
    assert replay.mean_advantage is None and replay.advantage_states == 0


def test_agreement_per_task_and_predicted_advantage():
    other = logged("melt", ["gpt-5", "gpt-5"], [True, True])
    prices = {c.name: c.price.input_per_mtok for c in CARDS}

    def cheapest(state) -> RouterPick:
        scores = {name: -prices[name] for name in NAMES}  # higher is better: cheaper
        return RouterPick(max(scores, key=scores.get), scores)

    replay = replay_decisions([EPISODE, other], cheapest, CARDS)
    assert replay.picks == {"gpt-oss-120b": 8}
    assert replay.agreement == pytest.approx(1 / 8)
    assert replay.agreement_by_task == {"boil": pytest.approx(1 / 6), "melt": 0.0}
    expected = [prices[m] - prices["gpt-oss-120b"] for m in EPISODE.models + other.models]
    assert replay.mean_advantage == pytest.approx(sum(expected) / 8)
    assert replay.advantage_states == 8 and replay.logged == {"gpt-5": 5, "gpt-oss-120b": 1, "minimax-m2": 2}


def test_router_picking_outside_the_candidates_is_an_error():
    with pytest.raises(ConfigError, match="router picked 'nope'"):
        replay_decisions([EPISODE], lambda state: RouterPick("nope"), CARDS)


def test_replay_on_imported_reference_logs(tmp_path):
    import_reference(REFERENCE, tmp_path / "ref")
    episodes, _, _ = read_run_dir(tmp_path / "ref" / "roulette" / "run0")
    seen = []

    def single(state) -> RouterPick:
        seen.append(state)
        return RouterPick("gpt-5")

    replay = replay_decisions(episodes, single, CARDS)
    logged_models = [m for e in episodes for m in e.models]
    assert replay.agreement == pytest.approx(logged_models.count("gpt-5") / len(logged_models))
    assert {s.task_description for s in seen} == {"boil water.", "melt ice."}
    assert [len(s.history) for s in seen] == [2, 4, 6, 2, 4]


def test_a_first_message_not_in_our_format_is_the_task_description(tmp_path):
    import_reference(REFERENCE, tmp_path / "ref")
    (hle,), _, _ = read_run_dir(tmp_path / "ref" / "hle_roulette" / "run0")
    state = turn_state(hle, 1, CARDS)
    assert state.task_description == "What is 6 x 7?"
    assert [m.role for m in state.history] == ["system", "user", "assistant", "tool"]
