"""Per-run summary numbers, computed from the stored episode records only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.records import EpisodeRecord
from harness.trajectory import RunStore


@dataclass(frozen=True)
class RunSummary:
    run: str
    router: str
    split: str
    episodes: int
    failed: int
    mean_score: float
    mean_cost: float
    total_cost: float
    mean_turns: float
    switch_rate: float
    mean_seconds: float = float("nan")  # wall time per episode (for real models, mostly the servers')

    @classmethod
    def of(cls, records: list[EpisodeRecord], run: str = "", split: str = "") -> RunSummary:
        ok = [r for r in records if not r.failed]
        scores = np.array([r.score for r in ok], dtype=float)
        costs = np.array([r.cost for r in ok], dtype=float)
        return cls(
            run=run,
            router=(records[0].router or "") if records else "",
            split=split or (records[0].split if records else ""),
            episodes=len(ok),
            failed=len(records) - len(ok),
            mean_score=float(scores.mean()) if ok else float("nan"),
            mean_cost=float(costs.mean()) if ok else float("nan"),
            total_cost=float(costs.sum()),
            mean_turns=float(np.mean([r.turns for r in ok])) if ok else float("nan"),
            switch_rate=float(np.mean([r.switch_rate or 0.0 for r in ok])) if ok else float("nan"),
            mean_seconds=float(np.mean([r.duration_s if r.duration_s is not None else np.nan for r in ok]))
            if ok
            else float("nan"),
        )


def summarize_run(run_dir: Path) -> RunSummary:
    store = RunStore(run_dir)
    config = store.config()
    return RunSummary.of(store.episodes(), run=str(run_dir), split=config["run"]["split"])


def render_table(summaries: list[RunSummary], title: str = "Runs"):
    from rich.table import Table

    table = Table(title=title)
    for column in (
        "router",
        "split",
        "episodes",
        "failed",
        "score",
        "$/episode",
        "$ total",
        "turns",
        "switch rate",
        "s/episode",
    ):
        table.add_column(column, justify="left" if column in ("router", "split") else "right")
    for s in summaries:
        table.add_row(
            s.router,
            s.split,
            str(s.episodes),
            str(s.failed),
            f"{s.mean_score:.1f}",
            f"{s.mean_cost:.4f}",
            f"{s.total_cost:.3f}",
            f"{s.mean_turns:.1f}",
            f"{s.switch_rate:.2f}",
            f"{s.mean_seconds:.1f}",
        )
    return table
