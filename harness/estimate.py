"""How long a benchmark will take, said before its first episode and kept up to date while it runs.

A benchmark's time is almost all episodes, so the estimate is

    (episodes planned - episodes already recorded) x wall seconds per episode

where the planned episodes are counted stage by stage from the definition
(:meth:`harness.pipeline.BenchmarkRun.planned_batches`; a count that depends on
what tuning will pick, such as Optuna's trials, is counted at its planned size),
and the wall seconds per episode are measured: the mean ``duration_s`` of the
episodes of the same benchmark plug-in already recorded under the results root
(this benchmark's earlier or interrupted run, or another definition's run beside
it), divided by the workers that play episodes side by side. With nothing
recorded yet there is no measured time to go on, and the estimate says so rather
than guess; once episodes are played, the progress bar's remaining time is
the episodes left times the wall seconds per episode measured in this run (time
since the start over episodes played, so training and logging between batches
are counted too).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from harness.layout import ResultsLayout
from harness.trajectory import CONFIG_FILE, RunStore


@dataclass(frozen=True)
class PlannedBatch:
    """One batch a benchmark will play: its stage, its episodes, and those of them already recorded."""

    stage: str
    episodes: int
    recorded: int = 0

    @property
    def to_play(self) -> int:
        return max(self.episodes - self.recorded, 0)


@dataclass(frozen=True)
class TimeEstimate:
    """The planned batches and the measured wall seconds per episode (None: nothing measured yet)."""

    batches: tuple[PlannedBatch, ...]
    seconds_per_episode: float | None
    basis: str  # where seconds_per_episode comes from, in words

    @property
    def planned(self) -> int:
        return sum(b.episodes for b in self.batches)

    @property
    def recorded(self) -> int:
        return sum(min(b.recorded, b.episodes) for b in self.batches)

    @property
    def to_play(self) -> int:
        return sum(b.to_play for b in self.batches)

    @property
    def seconds(self) -> float | None:
        """The episodes still to play times the measured seconds per episode."""
        return None if self.seconds_per_episode is None else self.to_play * self.seconds_per_episode

    def line(self) -> str:
        """The one line ``harness benchmark`` prints before its first episode."""
        stages: dict[str, int] = {}
        for b in self.batches:
            stages[b.stage] = stages.get(b.stage, 0) + b.to_play
        split = ", ".join(f"{stage} {n}" for stage, n in stages.items() if n)
        head = f"estimate: {self.to_play} of {self.planned} planned episodes to play" + (
            f" ({split})" if split else ""
        )
        if self.to_play == 0:
            return f"{head}; every planned episode is recorded"
        if self.seconds is None:
            return f"{head}; no time per episode measured yet ({self.basis}), the progress bar estimates it"
        return (
            f"{head} x {self.seconds_per_episode:.2f} s ({self.basis}) = about {duration_text(self.seconds)}, "
            "plus training and logging"
        )


def measured_seconds_per_episode(
    results_root: Path, benchmark: str, workers: int
) -> tuple[float | None, str]:
    """Wall seconds per episode from the episodes of ``benchmark`` recorded under ``results_root``.

    Every run directory below the root whose configuration names the same benchmark plug-in counts;
    an episode's ``duration_s`` is its own time on one worker, so ``workers`` of them take that
    long together.
    """
    durations: list[float] = []
    for run_dir in _run_dirs(Path(results_root)):
        try:
            run = json.loads((run_dir / CONFIG_FILE).read_text()).get("run", {})
        except (OSError, ValueError):
            continue
        if not isinstance(run, dict) or run.get("benchmark") != benchmark:
            continue
        durations += [e.duration_s for e in RunStore(run_dir).episodes() if e.duration_s is not None]
    if not durations:
        return None, f"no {benchmark} episode recorded under {results_root}"
    per_worker = sum(durations) / len(durations)
    workers = max(workers, 1)
    return per_worker / workers, (
        f"mean of {len(durations)} recorded {benchmark} episodes, {per_worker:.2f} s each on {workers} worker(s)"
    )


def _run_dirs(results_root: Path) -> list[Path]:
    """Every run directory of every benchmark (and seed replicate) under a results root."""
    layouts = (
        [ResultsLayout(p) for p in sorted(results_root.iterdir()) if p.is_dir()]
        if results_root.is_dir()
        else []
    )
    layouts += [r for layout in layouts for r in layout.replicates()]
    return [run for layout in layouts for run in layout.all_runs()]


def duration_text(seconds: float) -> str:
    """``47 s``, ``12 min``, ``1 h 05 min``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


__all__ = ["PlannedBatch", "TimeEstimate", "duration_text", "measured_seconds_per_episode"]
