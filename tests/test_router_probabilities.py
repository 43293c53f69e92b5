"""Every built-in router's stated probabilities are the distribution its ``route`` draws from.

For each built-in router and a few representative states (turn 0, a mid-episode turn with a
previous model, the turn after an invalid action, a late turn, a previous model that is no
longer a candidate), 10,000 draws of ``route`` from one generator at a fixed seed are
compared with ``probabilities``: a model given probability 0 is never drawn, each draw's
propensity is the stated probability of its model, and the counts over the support pass a
chi-square goodness-of-fit test. Learned families are trained on a small synthetic log; where a
state's pick is sure, the draws must leave the generator untouched, and a learned router's (a
forward pass each) are 200.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare
from test_learned_routers import CARDS, HELPER, hashing_encoder

from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.errors import ConfigError
from harness.types import CallContext, Completion, Message, ModelCard, PriceCard, TurnState
from routers import BUILTIN, make_router
from routers.base import Router
from routers.learned.dataset import load_samples
from routers.learned.train import TrainOptions, train_router

DRAWS = 10_000
SMALL = {
    "mtrouter": {"max_epochs": 3},
    "mtrouter-task": {"max_epochs": 3},
    "lgbm": {"n_estimators": 20, "min_child_samples": 5},
    "cluster": {"k": 3},
}
LEARNED = ("mtrouter", "mtrouter-task", "lgbm", "ridge", "cluster", "episode-knn", "episode-task",
           "episode-classifier")  # fmt: skip


class NamingBackend:
    """An in-process policy model for llm-router: names the cheapest candidate it is shown, or nothing
    on every third call (so the router's fallback is exercised too)."""

    card = ModelCard("policy:naming", PriceCard(0.0, 0.0, version="router-policy"))

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: list[Message], ctx: CallContext, tools=None) -> Completion:
        self.calls += 1
        text = "I cannot decide" if self.calls % 3 == 0 else CARDS[0].name
        return Completion(text, 10, 2, 0.0)


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], object, Path]:
    work = tmp_path_factory.mktemp("probabilities")
    data = write_synthetic_run(work / "stage-a", CARDS, HELPER, episodes_per_task=12, seed=0)
    encoder = hashing_encoder(work / "cache")
    checkpoints = {}
    for kind in LEARNED:
        checkpoints[kind] = work / kind
        train_router(
            kind,
            [data],
            checkpoints[kind],
            TrainOptions(lam=0.0, seed=0, hyperparams=SMALL.get(kind, {})),
            pool=CARDS,
            encoder=encoder,
        )
    return checkpoints, encoder, data


def states(data: Path) -> list[TurnState]:
    """Turn 0, a sticky mid-episode state, the turn after an invalid action, a late turn, and a previous
    model that is not a candidate (a narrowed pool, for routers without a checkpoint), from the histories
    of a logged run."""
    samples = load_samples([data])
    first = next(s for s in samples if s.turn == 0)
    later = next(s for s in samples if s.turn == 3 and s.task != first.task)

    def state(sample, **changes) -> TurnState:
        fields = dict(
            benchmark=sample.benchmark, task=sample.task, variation=0, task_description=sample.task_description,
            history=sample.history, turn=sample.turn, dollars_spent=0.0, budget_dollars=2.0, max_turns=6,
            candidates=list(CARDS), previous_model=None,
        )  # fmt: skip
        fields.update(changes)
        return TurnState(**fields)

    return [
        state(first),
        state(later, turn=1, max_turns=50, previous_model="mid"),
        state(
            later,
            turn=2,
            max_turns=50,
            previous_model="strong",
            last_action_valid=False,
            consecutive_errors=1,
        ),
        state(later, previous_model="cheap"),  # turn 3 of 6: past the heuristic's late fraction
        state(later, turn=2, max_turns=50, previous_model="cheap", candidates=[CARDS[1], CARDS[2]]),
    ]


def build(name: str, learned) -> Router:
    checkpoints, encoder, _ = learned
    names = [c.name for c in CARDS]
    if name in LEARNED:
        return make_router(
            name, {"checkpoint": str(checkpoints[name]), "lam": 0.5, "encoder": encoder}, CARDS
        )
    params = {
        "single": {"model": "mid"},
        "sticky-random": {"switch_prob": 0.3},
        "beta-mix": {"checkpoint": str(checkpoints["ridge"]), "beta": 0.6, "lam": 0.5, "encoder": encoder},
        "llm-router": {"backend": NamingBackend()},
    }.get(name, {})
    return make_router(name, params, names)


def test_every_builtin_router_is_covered():
    assert set(BUILTIN) == {*LEARNED, "single", "random", "round-robin", "heuristic", "sticky-random",
                            "beta-mix", "llm-router"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_probabilities_are_the_frequencies_of_route(name, learned):
    router = build(name, learned)
    rng = np.random.default_rng(20261206)
    for state in states(learned[2]):
        if router.model is not None and len(state.candidates) < len(CARDS):
            continue  # a checkpoint routes over its whole training pool only
        names = [c.name for c in state.candidates]
        stated = router.probabilities(state)
        p = np.array([stated.get(n, 0.0) for n in names])
        assert set(stated) <= set(names) and p.sum() == pytest.approx(1.0, abs=1e-12)
        table = router.probability_table([state])
        assert table[0] == pytest.approx(p, abs=1e-12)  # the batched form says the same
        deterministic = p.max() == 1.0
        before = rng.bit_generator.state
        # A deterministic learned router's route is a forward pass per call; its draws touch no randomness
        # (checked below), so each of 10,000 would repeat the first few.
        draws = 200 if deterministic and router.model is not None else DRAWS
        counts = np.zeros(len(names))
        for _ in range(draws):
            decision = router.route(state, rng)
            i = names.index(decision.model)
            counts[i] += 1
            assert decision.propensity == pytest.approx(p[i], abs=1e-12)
        if deterministic:
            assert rng.bit_generator.state == before, f"{name} draws randomness but states a sure pick"
        support = p > 0
        assert counts[~support].sum() == 0, (name, state.turn, counts, p)
        if support.sum() > 1:
            test = chisquare(counts[support], draws * p[support])
            assert test.pvalue > 1e-3, (name, state.turn, counts, p)


def test_a_router_that_draws_without_stating_its_probabilities_is_refused_and_the_generator_is_untouched():
    class Coin(Router):
        name = "coin"

        def route(self, state, rng):
            return make_router("random", {}, [c.name for c in state.candidates]).route(state, rng)

    rng = np.random.default_rng(1)
    before = rng.bit_generator.state
    deterministic = make_router("round-robin", {}, [c.name for c in CARDS])
    state = TurnState("scienceworld", "boil", 0, "boil water", [], 4, 0.0, 2.0, 50, list(CARDS))
    assert deterministic.probabilities(state) == {CARDS[1].name: 1.0}
    with pytest.raises(ConfigError, match="'coin' draws random numbers"):
        Coin().probabilities(state)
    assert rng.bit_generator.state == before
