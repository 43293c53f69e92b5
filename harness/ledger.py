"""The cost ledger: every billed call of an episode, model turns and router overhead apart.

Totals are always computed from the charges, never accumulated in a second
counter, so a total can never disagree with the lines it sums.
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

    @property
    def total(self) -> float:
        return sum(c.dollars for _, c in self.entries)

    @property
    def model_total(self) -> float:
        return sum(c.dollars for _, c in self.entries if c.kind == "model")

    @property
    def router_total(self) -> float:
        return sum(c.dollars for _, c in self.entries if c.kind == "router")

    def by_model(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for _, c in self.entries:
            if c.kind == "model":
                out[c.model] += c.dollars
        return dict(out)

    def from_turn(self, turn: int) -> float:
        """Dollars spent from ``turn`` (inclusive) to the end: the cost-to-go of that turn."""
        return sum(c.dollars for t, c in self.entries if t >= turn)

    def turn_charges(self, turn: int) -> list[dict]:
        return [asdict(c) for t, c in self.entries if t == turn]
