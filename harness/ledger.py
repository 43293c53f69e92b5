"""The cost ledger: every billed call of an episode, model turns, router overhead and judging apart.

Totals are always computed from the charges, never accumulated in a second
counter, so a total can never disagree with the lines it sums. The routed
episode cost (what routers trade against score, and what budgets cap) is model
plus router charges; a judge's charges are what scoring the episode cost and
are reported beside it, never inside it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

from harness.types import Charge


@dataclass
class CostLedger:
    entries: list[tuple[int, Charge]] = field(default_factory=list)

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
