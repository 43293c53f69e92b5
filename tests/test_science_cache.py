"""Cache-aware billing: a hand-computed three-turn episode with one switch, through the real agent loop."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from harness.agent import run_episode
from harness.config import Limits, from_dict
from harness.ledger import CostLedger
from harness.pool import PoolFile, load_pool
from harness.trajectory import RunStore
from harness.types import CacheRule, Completion, Decision, ModelCard, PriceCard, TaskInstance
from routers.base import Router

sys.path.insert(0, str(Path(__file__).parent / "plugins"))
from toy_benchmark import CounterBenchmark  # noqa: E402

PROMPTS = [2000, 2600, 3200]  # prompt tokens of turns 0, 1, 2 (the history only grows)


class FixedTokens:
    """A backend that always counts up, with the prompt sizes above and 100 completion tokens."""

    def __init__(self, card: ModelCard):
        self.card = card

    def complete(self, messages, ctx, tools=None) -> Completion:
        prompt = PROMPTS[ctx.turn]
        return Completion("Action: inc", prompt, 100, self.card.price.dollars(prompt, 100))


class Scripted(Router):
    name = "scripted"

    def __init__(self, models: list[str]):
        self.models = models

    def route(self, state, rng: np.random.Generator) -> Decision:
        return Decision(model=self.models[state.turn], propensity=1.0)


DEFAULT_RULE = CacheRule()


def cards(rule: CacheRule = DEFAULT_RULE) -> dict[str, FixedTokens]:
    a = PriceCard(1.0, 4.0, "t", cached_input_per_mtok=0.1, cache=rule)
    b = PriceCard(2.0, 8.0, "t", cached_input_per_mtok=0.2, cache=rule)
    return {"a": FixedTokens(ModelCard("a", a)), "b": FixedTokens(ModelCard("b", b))}


def play(models: list[str], backends: dict, tmp_path: Path):
    task = TaskInstance("counter", "count", 1, "test_id")  # target 3: three turns
    store = RunStore(tmp_path / "run")
    store.open({"run": {}, "format_version": 2})
    result = run_episode(
        CounterBenchmark(), CounterBenchmark().make_environment(), backends, Scripted(models), task, 0,
        Limits(), store,
    )  # fmt: skip
    return result, store.turns(task.key)


def test_reused_prefix_billed_cached_until_a_switch(tmp_path: Path):
    result, turns = play(["a", "a", "b"], cards(), tmp_path)
    assert result.turns == 3 and result.switches == 1
    # turn 0, a: 2000 x $1 + 100 x $4 = $0.0024 (nothing cached yet)
    # turn 1, a again: 600 x $1 + 2000 x $0.1 + 100 x $4 = $0.0012 (its previous prompt is cached)
    # turn 2, b after the switch: 3200 x $2 + 100 x $8 = $0.0072 (full price)
    assert [t.dollars for t in turns] == pytest.approx([0.0024, 0.0012, 0.0072])
    assert [t.cached_prompt_tokens for t in turns] == [0, 2000, 0]
    assert [t.uncached_prompt_tokens for t in turns] == [2000, 600, 3200]
    assert result.ledger.episode_total == pytest.approx(0.0108)


def test_cache_rule_minimum_prefix_and_survival(tmp_path: Path):
    _, short = play(["a", "a", "b"], cards(CacheRule(min_prefix_tokens=2500)), tmp_path / "short")
    assert [t.cached_prompt_tokens for t in short] == [0, 0, 0]  # 2000 < 2500: not cached
    _, kept = play(["a", "b", "a"], cards(CacheRule(survives_switch=True)), tmp_path / "kept")
    assert [t.cached_prompt_tokens for t in kept] == [0, 0, 2000]  # a's cache outlived b's turn
    _, dropped = play(["a", "b", "a"], cards(), tmp_path / "dropped")
    assert [t.cached_prompt_tokens for t in dropped] == [0, 0, 0]


def test_no_cached_price_keeps_the_backends_dollars():
    ledger = CostLedger()
    price = PriceCard(1.0, 4.0, "t")
    for turn, prompt in enumerate(PROMPTS):
        ledger.bill_model(turn, "a", price, Completion("x", prompt, 100, 0.5))
    assert ledger.episode_total == pytest.approx(1.5) and sum(ledger.cached.values()) == 0


def test_cached_pool_variant_loads_and_the_paper_pool_has_no_cached_price():
    cached = load_pool("paper6-cached")
    assert all(m.price.cached_input_per_mtok is not None for m in cached.spec.models)
    assert all(m.price.cached_input_per_mtok is None for m in load_pool("paper6").spec.models)
    with pytest.raises(Exception, match="min_prefix_tokens"):
        from_dict(PoolFile, {"name": "x", "models": [{"name": "m", "price": {
            "input_per_mtok": 1, "output_per_mtok": 1, "version": "t", "cache": {"min_prefix": 5}}}]}, "x.yaml")  # fmt: skip


def test_cached_pool_variant_simulates_exactly_the_paper_pool():
    """The variant differs in billing only; a refit of paper6 that is not copied over fails here."""
    cached, paper = load_pool("paper6-cached").spec.models, load_pool("paper6").spec.models
    assert [m.name for m in cached] == [m.name for m in paper]
    assert all(c.simulated == p.simulated for c, p in zip(cached, paper, strict=True))
