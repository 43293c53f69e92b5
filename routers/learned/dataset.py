"""Logged runs as routing decisions with Monte-Carlo targets.

A decision is one turn of a finished episode: the state is the history the
router saw, the action the model it chose (with the logging policy's
propensity), and the outcome the episode's final score and the dollars spent
from that turn to the end. Targets are normalised so that one network can be
trained on runs of different lengths and price levels:

* score: the benchmark's range mapped to [0, 1];
* cost-to-go: dollars from this turn (inclusive) to the end, divided by the
  mean episode cost of the *training* episodes;
* optionally an annealed error cost (the reference's shaping): every turn the
  benchmark classifies as an error costs 0.3 early in an episode, rising to 1.0
  late, summed from this turn to the end and added to the cost side.

Histories are read as they were: each turn line holds the messages it appended.

Samples keep dollars and raw scores; normalisation happens in
:func:`build_training_set` with statistics fitted on the training episodes only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.benchmarks import get_benchmark
from harness.errors import ConfigError, TrajectoryError
from harness.records import EpisodeRecord, TurnRecord
from harness.trajectory import RunStore
from harness.types import Message, ModelCard
from routers.learned.encoder_spec import EncoderConfig
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.targets import TARGET_KINDS

log = logging.getLogger(__name__)

ANNEAL_START, ANNEAL_END = 0.3, 0.7
ANNEAL_LOW, ANNEAL_HIGH = 0.3, 1.0


@dataclass(frozen=True)
class DecisionSample:
    """One logged routing decision and what followed it, in raw units (dollars, benchmark score)."""

    run: str
    episode: str  # the task instance key, benchmark/task/variation
    benchmark: str
    task: str
    task_description: str
    history: list[Message] = field(repr=False)  # what the router saw: messages before this turn
    turn: int
    episode_turns: int
    model: str
    propensity: float
    score: float  # the episode's final score
    score_before: float  # the score shown in the history before this turn (public, not privileged)
    cost_to_go: float  # dollars from this turn to the end, router charges included
    episode_cost: float
    valid: bool
    error: str | None
    error_turns: tuple[int, ...]  # turns of this episode that the benchmark classifies as errors
    # A counterfactual branch's decisions (harness.branching) name their branch point (parent run, episode
    # and turn) and the branched turn; None for ordinary episodes.
    branch_group: str | None = None
    branch_turn: int | None = None

    @property
    def paired_group(self) -> str | None:
        """The branch point of a branched decision (its siblings share it); None for every other decision."""
        return self.branch_group if self.turn == self.branch_turn else None


@dataclass(frozen=True)
class TargetStats:
    """Normalisation constants, fitted on training episodes and stored with every checkpoint."""

    score_low: float
    score_high: float
    mean_episode_cost: float
    mean_episode_turns: float

    def normalise_score(self, score: np.ndarray | float) -> np.ndarray:
        span = self.score_high - self.score_low
        return np.clip((np.asarray(score, dtype=np.float64) - self.score_low) / span, 0.0, 1.0)

    def normalise_cost(self, dollars: np.ndarray | float) -> np.ndarray:
        return np.asarray(dollars, dtype=np.float64) / self.mean_episode_cost

    @classmethod
    def fit(
        cls, samples: Sequence[DecisionSample], score_range: tuple[float, float] | None = None
    ) -> TargetStats:
        if not samples:
            raise ConfigError("cannot fit target statistics on zero decisions")
        low, high = score_range or benchmark_score_range(samples)
        if not high > low:
            raise ConfigError(f"score range ({low}, {high}) is empty")
        episodes = {(s.run, s.episode): s for s in samples}.values()
        mean_cost = float(np.mean([s.episode_cost for s in episodes]))
        # Free models (mean cost 0) leave cost-to-go at 0 rather than dividing by zero.
        return cls(
            score_low=float(low),
            score_high=float(high),
            mean_episode_cost=mean_cost if mean_cost > 0 else 1.0,
            mean_episode_turns=float(np.mean([s.episode_turns for s in episodes])),
        )


@dataclass(frozen=True)
class TargetOptions:
    """How targets and weights are formed; stored with the checkpoint so retraining repeats it."""

    error_weight: float = 0.0  # weight of the annealed error cost on the cost side; 0 turns it off
    weight_clip: float = 50.0  # inverse-propensity weights are clipped here before self-normalising
    # "final": the reference's target, the normalised final score. "gain": the score still to be
    # gained from this turn on, (final - score so far) / span. The score so far is the same for every
    # candidate at a state, so the ranking of models is unchanged, but the variance that past turns
    # put into the final score is gone: the signal of a decision is not drowned by earlier ones.
    score_target: str = "gain"
    # How the regression targets are formed from the logged outcomes (routers.learned.targets):
    # "mc" (Monte Carlo, the reference), "td" (TD(td_lambda)), "fqi" (fitted-Q iteration), "advantage"
    # (minus a state baseline), "dr" (doubly robust) or "paired" (branched decisions against their
    # siblings, harness.branching). The bootstrapped ones refit ``fqi_iterations``
    # times, each time on targets from the previous fit; "fqi" and "dr" bootstrap from the router that
    # is greedy at ``policy_lam``.
    target: str = "mc"
    td_lambda: float = 0.8
    fqi_iterations: int = 3
    policy_lam: float = 0.0

    def __post_init__(self) -> None:
        if self.score_target not in ("final", "gain"):
            raise ConfigError(f"score_target must be 'final' or 'gain', got {self.score_target!r}")
        if self.target not in TARGET_KINDS:
            raise ConfigError(f"target must be one of {', '.join(TARGET_KINDS)}, got {self.target!r}")
        if not 0.0 <= self.td_lambda <= 1.0:
            raise ConfigError(f"td_lambda must be in [0, 1], got {self.td_lambda}")
        if self.fqi_iterations < 1:
            raise ConfigError(f"fqi_iterations must be >= 1, got {self.fqi_iterations}")
        if self.policy_lam < 0:
            raise ConfigError(f"policy_lam must be >= 0, got {self.policy_lam}")
        if self.error_weight < 0:
            raise ConfigError(f"error_weight must be >= 0, got {self.error_weight}")
        if self.weight_clip < 1:
            raise ConfigError(f"weight_clip must be >= 1, got {self.weight_clip}")


@dataclass
class TrainingSet:
    """Arrays a value model is fitted on; row i is decision i of ``samples``."""

    embeddings: np.ndarray  # (n, dim) float32 history vectors
    model_index: np.ndarray  # (n,) index into ``cards`` of the chosen model
    score: np.ndarray  # (n,) normalised final score
    cost: np.ndarray  # (n,) normalised cost-to-go plus weighted error cost
    weight: np.ndarray  # (n,) clipped, self-normalised inverse-propensity weights
    cards: list[ModelCard]
    stats: TargetStats
    options: TargetOptions
    encoder: EncoderConfig | None = None  # the vector space of ``embeddings``
    # Per row, for targets that look across turns: which episode (0..), the turn, the logged propensity,
    # and the score offset that the "gain" target subtracts ((score so far - low) / span; 0 for "final").
    episode_index: np.ndarray | None = None
    turn: np.ndarray | None = None
    propensity: np.ndarray | None = None
    score_offset: np.ndarray | None = None
    task: np.ndarray | None = (
        None  # (n,) the task each row's episode is an instance of (public: routers see it)
    )
    paired_group: np.ndarray | None = (
        None  # (n,) a branched decision's branch point, else None (paired target)
    )

    def __len__(self) -> int:
        return len(self.score)

    def rows(self, index: np.ndarray) -> TrainingSet:
        """The rows ``index`` (repeats allowed, for bootstrap resamples), weights renormalised to mean 1."""
        index = np.asarray(index, dtype=np.int64)

        def take(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[index]

        weight = self.weight[index]
        return dataclasses.replace(
            self,
            embeddings=self.embeddings[index],
            model_index=self.model_index[index],
            score=self.score[index],
            cost=self.cost[index],
            weight=(weight / weight.mean()).astype(np.float32) if len(weight) else weight,
            episode_index=take(self.episode_index),
            turn=take(self.turn),
            propensity=take(self.propensity),
            score_offset=take(self.score_offset),
            task=take(self.task),
            paired_group=take(self.paired_group),
        )

    def with_targets(self, score: np.ndarray, cost: np.ndarray) -> TrainingSet:
        return dataclasses.replace(
            self, score=np.asarray(score, dtype=np.float32), cost=np.asarray(cost, dtype=np.float32)
        )

    def episode_rows(self) -> list[np.ndarray]:
        """Row indices of each episode, in turn order."""
        if self.episode_index is None or self.turn is None:
            raise ConfigError("this training set does not record episodes and turns")
        order = np.lexsort((self.turn, self.episode_index))
        bounds = np.flatnonzero(np.diff(self.episode_index[order])) + 1
        return [rows for rows in np.split(order, bounds) if len(rows)]


def benchmark_score_range(samples: Iterable[DecisionSample]) -> tuple[float, float]:
    """The score range the benchmark plug-ins of the samples declare (they must agree)."""
    benchmarks = sorted({s.benchmark for s in samples})
    ranges = {tuple(get_benchmark(name).score_range) for name in benchmarks}
    if len(ranges) > 1:
        raise ConfigError(f"runs mix benchmarks with different score ranges ({', '.join(benchmarks)})")
    return ranges.pop()


def annealed_error_weight(turn: int, expected_turns: float) -> float:
    """0.3 up to 30% of the expected episode length, then linear to 1.0 at 70% and after (turn is 0-based)."""
    progress = turn / max(expected_turns, 1e-9)
    if progress <= ANNEAL_START:
        return ANNEAL_LOW
    if progress >= ANNEAL_END:
        return ANNEAL_HIGH
    return ANNEAL_LOW + (ANNEAL_HIGH - ANNEAL_LOW) * (progress - ANNEAL_START) / (ANNEAL_END - ANNEAL_START)


def error_cost_to_go(sample: DecisionSample, expected_turns: float) -> float:
    return sum(annealed_error_weight(t, expected_turns) for t in sample.error_turns if t >= sample.turn)


def turn_dollars(record: TurnRecord) -> float:
    """The model call's dollars plus any router overhead charged on the same turn."""
    return float(record.dollars) + record.router_dollars


def episode_samples(
    run: str, episode: EpisodeRecord, turns: list[TurnRecord], where: str
) -> list[DecisionSample]:
    """One finished episode's turn records as its decisions, each with the history its router saw."""
    turns = sorted(turns, key=lambda record: record.turn)
    if [record.turn for record in turns] != list(range(len(turns))):
        raise TrajectoryError(f"{where}: turn indices are not 0..{len(turns) - 1}")
    if episode.turns != len(turns):
        raise TrajectoryError(
            f"{where}: episode record says {episode.turns} turns, the turn file has {len(turns)}"
        )
    if not turns:
        return []
    initial = turns[0].initial_messages
    description = turns[0].task_description
    if not initial or description is None:
        raise TrajectoryError(f"{where}: turn 0 has no initial_messages or task_description")
    messages = list(initial)
    dollars = [turn_dollars(record) for record in turns]
    to_go = np.cumsum(dollars[::-1])[::-1]
    benchmark = get_benchmark(episode.benchmark)
    error_turns = tuple(r.turn for r in turns if benchmark.is_error_turn(r))
    branch = episode.branch_of
    branch_group = f"{branch['run']}:{branch['group']}" if branch else None
    samples = []
    score_before = 0.0
    for record in turns:
        if record.history_len is not None and record.history_len != len(messages):
            raise TrajectoryError(
                f"{where}: turn {record.turn} saw {record.history_len} messages, replay gives {len(messages)}"
            )
        if record.propensity is None:
            raise TrajectoryError(f"{where}: turn {record.turn} has no propensity")
        propensity = float(record.propensity)
        if not 0.0 < propensity <= 1.0:
            raise TrajectoryError(f"{where}: turn {record.turn} has propensity {propensity}, outside (0, 1]")
        samples.append(
            DecisionSample(
                run=run,
                episode=episode.episode,
                benchmark=episode.benchmark,
                task=episode.task,
                task_description=description,
                history=list(messages),
                turn=record.turn,
                episode_turns=len(turns),
                model=record.model,
                propensity=propensity,
                score=float(episode.score),  # type: ignore[arg-type]  # finished episodes only
                score_before=score_before,
                cost_to_go=float(to_go[record.turn]),
                episode_cost=float(to_go[0]),
                valid=bool(record.valid),
                error=record.error,
                error_turns=error_turns,
                branch_group=branch_group,
                branch_turn=branch["turn"] if branch else None,
            )
        )
        messages.extend(record.messages)
        score_before = float(record.score)  # type: ignore[arg-type]
    return samples


def load_samples(run_dirs: Iterable[Path]) -> list[DecisionSample]:
    """Every decision of every finished, non-failed episode of the given run directories."""
    samples: list[DecisionSample] = []
    for run_dir in map(Path, run_dirs):
        store = RunStore(run_dir)
        store.config()  # raises if this is not a run directory
        finished = {e.episode: e for e in store.episodes() if not e.failed and e.score is not None}
        for key, episode in sorted(finished.items()):
            where = f"{run_dir}/{key}"
            samples.extend(episode_samples(str(run_dir), episode, store.turns(key), where))
    return samples


def ipw_weights(propensities: np.ndarray, clip: float = 50.0) -> np.ndarray:
    """1/propensity, clipped at ``clip`` and scaled to mean 1 (self-normalised)."""
    propensities = np.asarray(propensities, dtype=np.float64)
    if propensities.size == 0:
        return propensities
    if np.any(propensities <= 0):
        raise ValueError("propensities must be positive")
    weights = np.minimum(1.0 / propensities, clip)
    return weights / weights.mean()


def split_episodes(
    samples: Sequence[DecisionSample], val_fraction: float, seed: int
) -> tuple[list[DecisionSample], list[DecisionSample]]:
    """Train/validation by task instance, never by turn, so no episode (nor a rerun of it) straddles both."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    keys = sorted(
        {s.branch_group or s.episode for s in samples}
    )  # the siblings of a branch point stay together
    n_val = math.ceil(val_fraction * len(keys)) if val_fraction > 0 and len(keys) > 1 else 0
    order = np.random.default_rng(seed).permutation(len(keys))
    val_keys = {keys[i] for i in order[:n_val]}
    train = [s for s in samples if (s.branch_group or s.episode) not in val_keys]
    val = [s for s in samples if (s.branch_group or s.episode) in val_keys]
    return train, val


def encode_histories(
    samples: Sequence[DecisionSample], encoder: HistoryEncoder, chunk_size: int = 2048
) -> np.ndarray:
    """History vectors of all samples; chunks keep memory flat, the encoder's cache removes repeats."""
    parts = [
        encoder.encode_batch([(s.task_description, s.history) for s in samples[start : start + chunk_size]])
        for start in range(0, len(samples), chunk_size)
    ]
    if not parts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def cost_targets(samples: Sequence[DecisionSample], stats: TargetStats, options: TargetOptions) -> np.ndarray:
    cost = stats.normalise_cost([s.cost_to_go for s in samples])
    if options.error_weight:
        errors = np.array([error_cost_to_go(s, stats.mean_episode_turns) for s in samples])
        cost = cost + options.error_weight * errors
    return cost


def score_targets(
    samples: Sequence[DecisionSample], stats: TargetStats, options: TargetOptions
) -> np.ndarray:
    if options.score_target == "final":
        return stats.normalise_score([s.score for s in samples])
    span = stats.score_high - stats.score_low
    return np.array([(s.score - s.score_before) / span for s in samples], dtype=np.float64)


def score_offsets(
    samples: Sequence[DecisionSample], stats: TargetStats, options: TargetOptions
) -> np.ndarray:
    """What the score target subtracts from the normalised final score at each state."""
    if options.score_target == "final":
        return np.zeros(len(samples))
    span = stats.score_high - stats.score_low
    return np.array([(s.score_before - stats.score_low) / span for s in samples], dtype=np.float64)


def build_training_set(
    samples: Sequence[DecisionSample],
    embeddings: np.ndarray,
    cards: list[ModelCard],
    stats: TargetStats,
    options: TargetOptions = TargetOptions(),
    encoder: EncoderConfig | None = None,
) -> TrainingSet:
    index = {card.name: i for i, card in enumerate(cards)}
    unknown = sorted({s.model for s in samples} - set(index))
    if unknown:
        raise ConfigError(f"logged model {unknown[0]!r} is not in the pool ({', '.join(index)})")
    if len(embeddings) != len(samples):
        raise ValueError(f"{len(embeddings)} embeddings for {len(samples)} samples")
    return TrainingSet(
        embeddings=np.asarray(embeddings, dtype=np.float32),
        model_index=np.array([index[s.model] for s in samples], dtype=np.int64),
        score=score_targets(samples, stats, options).astype(np.float32),
        cost=cost_targets(samples, stats, options).astype(np.float32),
        weight=ipw_weights(np.array([s.propensity for s in samples]), options.weight_clip).astype(np.float32),
        cards=list(cards),
        stats=stats,
        options=options,
        encoder=encoder,
        episode_index=episode_indices(samples),
        turn=np.array([s.turn for s in samples], dtype=np.int64),
        propensity=np.array([s.propensity for s in samples], dtype=np.float64),
        score_offset=score_offsets(samples, stats, options),
        task=np.array([s.task for s in samples], dtype=object),
        paired_group=np.array([s.paired_group for s in samples], dtype=object),
    )


def episode_indices(samples: Sequence[DecisionSample]) -> np.ndarray:
    """Per sample, a number for its (run, episode), in order of first appearance."""
    numbers: dict[tuple[str, str], int] = {}
    return np.array([numbers.setdefault((s.run, s.episode), len(numbers)) for s in samples], dtype=np.int64)
