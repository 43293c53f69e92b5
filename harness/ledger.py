"""The cost ledger: every billed call of an episode, model turns, router overhead and judging apart.

Totals are always computed from the charges, never accumulated in a second
counter, so a total can never disagree with the lines it sums. The routed
episode cost (what routers trade against score, and what budgets cap) is model
plus router charges; a judge's charges are what scoring the episode cost and
are reported beside it, never inside it.

A model whose price card has a cached-input price is billed cache-aware: the
part of a turn's prompt that the same model already processed (its previous
prompt, a prefix of this one because the history only grows) is billed at the
cached price when the cache rule says it survived, the rest at the input price.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

from harness.types import Charge, Completion, PriceCard


@dataclass
class CostLedger:
    entries: list[tuple[int, Charge]] = field(default_factory=list)
    cached: dict[int, int] = field(default_factory=dict)  # turn -> prompt tokens billed at the cached price
    _last_prompt: dict[str, int] = field(default_factory=dict)  # model -> prompt tokens of its last turn
    _last_model: str | None = None

    def cached_prefix(self, model: str, price: PriceCard, prompt_tokens: int) -> int:
        """Prompt tokens of this turn the provider serves from its cache (0 without a cached price)."""
        if price.cached_input_per_mtok is None or model not in self._last_prompt:
            return 0
        if not price.cache.survives_switch and self._last_model != model:
            return 0
        reused = min(self._last_prompt[model], prompt_tokens)
        return reused if reused >= price.cache.min_prefix_tokens else 0

    def bill_model(self, turn: int, model: str, price: PriceCard, completion: Completion) -> Charge:
        """Charge one model turn; cache-aware when the card has a cached price, else the backend's dollars."""
        cached = self.cached_prefix(model, price, completion.prompt_tokens)
        dollars = completion.dollars
        if price.cached_input_per_mtok is not None:
            dollars = (
                price.dollars(completion.prompt_tokens - cached, completion.completion_tokens)
                + cached * price.cached_input_per_mtok / 1e6
            )
        charge = Charge(
            kind="model",
            model=model,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            dollars=dollars,
            price_version=price.version,
        )
        self.charge(turn, charge)
        self.cached[turn] = self.cached.get(turn, 0) + cached
        self._last_prompt[model] = completion.prompt_tokens
        self._last_model = model
        return charge

    def charge(self, turn: int, charge: Charge) -> None:
        if charge.dollars < 0:
            raise ValueError(f"negative charge for {charge.model}: {charge.dollars}")
        self.entries.append((turn, charge))

    def kind_total(self, kind: str) -> float:
        return sum(c.dollars for _, c in self.entries if c.kind == kind)

    @property
    def total(self) -> float:
        """Every dollar charged, judging included."""
        return sum(c.dollars for _, c in self.entries)

    @property
    def episode_total(self) -> float:
        """The routed episode cost: model calls plus router overhead."""
        return self.model_total + self.router_total

    @property
    def model_total(self) -> float:
        return self.kind_total("model")

    @property
    def router_total(self) -> float:
        return self.kind_total("router")

    @property
    def judge_total(self) -> float:
        return self.kind_total("judge")

    def by_model(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for _, c in self.entries:
            if c.kind == "model":
                out[c.model] += c.dollars
        return dict(out)

    def turn_charges(self, turn: int) -> list[dict]:
        return [asdict(c) for t, c in self.entries if t == turn]
