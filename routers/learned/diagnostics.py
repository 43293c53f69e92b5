"""Why a learned router wins or loses, measured on held-out logged episodes.

For every logged decision of the given runs the checkpoint predicts, per model
of its pool, the normalised score and cost-to-go (the units of its fit report:
score on the checkpoint's score target, cost in mean training episodes). The
report gives:

* **calibration**: for the model that was logged, predicted against realised
  Monte-Carlo return by decile of the prediction, for score and cost (a
  bootstrapped or advantage target still predicts returns, so the realised
  logged return is the honest reference; for ``fqi``/``dr`` the prediction is
  of the greedy router's return, which the logging policy's differs from);
* **ranking accuracy**: how often the router's top model (max of score - lam *
  cost) is the best *observed* model among comparable states. Comparable states
  are the decisions of one task type in one turn bucket (turn prefix: 0, 1-2,
  3-5, 6-9, ...) across all held-out episodes and seeds. The models compared in
  a group are those logged there at least ``min_per_model`` times (a group with
  fewer than two is not covered: held-out logs rarely hold every model of the
  pool in every group); the best is the one with the highest
  inverse-propensity-weighted mean observed return there, and the router's pick
  is its top model among the compared ones. The same is measured for the
  always-best-single-model baseline (models ranked by their weighted mean
  observed return over all held-out decisions, chosen on the held-out data
  itself, so the baseline is favoured; its pick is its highest-ranked compared
  model) and for chance (1 / models compared). Besides accuracy, the group-mean
  observed return of the router's pick and of the baseline's is given (the value
  of a choice, which accuracy alone hides);
* **breakdowns** of the ranking by the task's topic (the benchmark plug-in's
  split file), by turn phase (early, middle, late third of the episode), at
  error turns (the benchmark plug-in's ``is_error_turn``: this turn's action
  failed), right after an error, and at critical turns (the plug-in's
  ``critical_turns``, which reads privileged knowledge of the task: it is used
  here to *label* decisions after the fact and nowhere else);
* **switch pattern**: the router's own choices along each logged history (how
  often consecutive choices differ, which models it picks per phase), beside
  the logging policy's;
* **ranking among counterfactual siblings**, where the held-out data holds
  branches (:mod:`harness.branching`): at each branch point every sibling
  continued alike from one state under common random numbers, so the best
  observed sibling (score - lam * cost from that state) is the best decision
  there up to the continuation's luck, not up to the luck of other states; the
  router's top model among the siblings against it, beside the single-model
  baseline's and chance (ties: a pick among the tied best counts);
* for an ensemble, its members' spread at the chosen model and how often its
  defer rule would fire.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.benchmarks import get_benchmark
from harness.errors import ConfigError
from harness.records import EpisodeRecord
from harness.trajectory import RunStore, write_json_atomic
from harness.types import TaskInstance
from routers.learned.dataset import (
    DecisionSample,
    TrainingSet,
    build_training_set,
    encode_histories,
    load_samples,
)
from routers.learned.encoder_spec import build_encoder
from routers.learned.ensemble import EnsembleModel
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.train import DEFAULT_TURN_BUCKETS, turn_bucket
from routers.learned.value_model import ValueModel, load_value_model

PHASES = ("early", "middle", "late")
REPORT_JSON = "diagnosis.json"
REPORT_MD = "diagnosis.md"
EXPERIMENT = "router-diagnostics"


@dataclass(frozen=True)
class CalibrationBin:
    low: float  # prediction range of the bin
    high: float
    decisions: int
    predicted: float  # mean prediction
    realised: float  # mean realised return


@dataclass(frozen=True)
class RankingCell:
    """Ranking on the covered decisions that carry one label."""

    decisions: int
    accuracy: float | None
    single_best_accuracy: float | None
    chance: float | None  # mean of 1 / (models compared)
    router_value: float | None  # mean group-mean observed return of the router's model
    single_value: float | None
    best_value: float | None  # of the best observed model: the ceiling


@dataclass
class Diagnosis:
    checkpoint: str
    kind: str
    lam: float
    data: list[str]
    episodes: int
    decisions: int
    params: dict[str, Any]
    single_best: str
    chance: float
    coverage: float  # share of decisions in a group where at least two models can be compared
    full_pool_coverage: float  # share of the covered decisions whose group compares every model of the pool
    # Per model, the ranking accuracy of always picking it (a miss where it is not compared).
    fixed_model_accuracy: dict[str, float]
    mse: dict[str, float]
    calibration: dict[str, list[CalibrationBin]]
    ranking: RankingCell
    breakdowns: dict[str, dict[str, RankingCell]]
    switches: dict[str, Any]
    ensemble: dict[str, Any] | None = None
    siblings: RankingCell | None = None  # over branch points, where the held-out data holds branches
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for a tracking store."""
        out: dict[str, float] = {"coverage": self.coverage, "decisions": float(self.decisions)}
        out |= {f"mse_{k}": v for k, v in self.mse.items()}
        cells = {"all": self.ranking} | {
            f"{kind}.{label}": cell
            for kind, cells in self.breakdowns.items()
            for label, cell in cells.items()
        }
        if self.siblings is not None:
            cells["siblings"] = self.siblings
            out["ranking.siblings.decisions"] = float(self.siblings.decisions)
        for name, cell in cells.items():
            for key in ("accuracy", "single_best_accuracy", "chance", "router_value", "single_value"):
                value = getattr(cell, key)
                if value is not None:
                    out[f"ranking.{name}.{key}"] = float(value)
        out["router_switch_rate"] = float(self.switches["router_switch_rate"])
        for key in ("mean_spread", "defer_rate"):
            if self.ensemble and self.ensemble.get(key) is not None:
                out[f"ensemble.{key}"] = float(self.ensemble[key])
        return out

    def to_markdown(self) -> str:
        return render_markdown(self)


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def calibration_bins(predicted: np.ndarray, realised: np.ndarray, bins: int = 10) -> list[CalibrationBin]:
    """Deciles of the prediction (fewer bins when predictions repeat), each with its mean realised value."""
    if not len(predicted):
        return []
    edges = np.unique(np.quantile(predicted, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, max(len(edges) - 2, 0))
    out = []
    for b in range(max(len(edges) - 1, 1)):
        rows = which == b
        if rows.any():
            out.append(
                CalibrationBin(
                    low=float(edges[b]),
                    high=float(edges[min(b + 1, len(edges) - 1)]),
                    decisions=int(rows.sum()),
                    predicted=float(predicted[rows].mean()),
                    realised=float(realised[rows].mean()),
                )
            )
    return out


def phase_of(turn: int, episode_turns: int) -> str:
    return PHASES[min(2, 3 * turn // max(episode_turns, 1))]


def decision_labels(samples: Sequence[DecisionSample]) -> dict[str, list[str]]:
    """Per decision: topic, phase, error, after_error and critical labels (see the module docstring)."""
    topics: dict[tuple[str, str], str] = {}
    critical: dict[tuple[str, str], frozenset[int] | None] = {}
    records: dict[str, dict[str, EpisodeRecord]] = {}
    labels: dict[str, list[str]] = defaultdict(list)
    for sample in samples:
        benchmark = get_benchmark(sample.benchmark)
        key = (sample.run, sample.episode)
        if (sample.benchmark, sample.task) not in topics:
            topics[(sample.benchmark, sample.task)] = benchmark.topic(sample.task)
        if key not in critical:
            store = RunStore(Path(sample.run))
            if sample.run not in records:
                records[sample.run] = {e.episode: e for e in store.episodes()}
            record = records[sample.run][sample.episode]
            task = TaskInstance(sample.benchmark, sample.task, record.variation, "")
            critical[key] = benchmark.critical_turns(task, store.turns(sample.episode))
        labels["topic"].append(topics[(sample.benchmark, sample.task)])
        labels["phase"].append(phase_of(sample.turn, sample.episode_turns))
        labels["error_turn"].append("yes" if sample.turn in sample.error_turns else "no")
        labels["after_error"].append("yes" if sample.turn - 1 in sample.error_turns else "no")
        turns = critical[key]
        labels["critical"].append("unknown" if turns is None else ("yes" if sample.turn in turns else "no"))
    return labels


def router_choices(model, embeddings: np.ndarray, cards, lam: float, defer_threshold: float | None):
    """Per decision: the router's pick (index into cards), its Q per model, and the ensemble spread at the pick."""
    if isinstance(model, EnsembleModel):
        member_score, member_cost = model.predict_members(embeddings, cards)
        member_q = member_score - lam * member_cost
        q = member_q.mean(axis=0)
        chosen = q.argmax(axis=1)
        spread = member_q.std(axis=0)[np.arange(len(q)), chosen]
        deferred = np.zeros(len(q), dtype=bool)
        if defer_threshold is not None:
            deferred = spread > defer_threshold
            strongest = [c.name for c in cards].index(model.strongest(cards))
            chosen = np.where(deferred, strongest, chosen)
        return chosen, q, spread, deferred
    score, cost = model.predict(embeddings, cards)
    q = score - lam * cost
    return q.argmax(axis=1), q, None, None


def sibling_ranking(
    samples: Sequence[DecisionSample],
    model_index: np.ndarray,
    observed: np.ndarray,
    q: np.ndarray,
    preference: Sequence[int],
) -> RankingCell | None:
    """Ranking over branch points: per point, the router's top model among the siblings' models (by
    ``q`` at the shared state) against the best observed sibling, beside the baseline's first model of
    ``preference`` there and chance; None when no point has two siblings. ``model_index``, ``observed``
    and ``q`` are per decision (``q``: per model too)."""
    points: dict[str, list[int]] = defaultdict(list)
    for row, sample in enumerate(samples):
        if sample.paired_group is not None:
            points[sample.paired_group].append(row)
    hits, single_hits, chances, values = [], [], [], []
    for rows in points.values():
        if len(rows) < 2:
            continue
        outcome = {int(model_index[r]): float(observed[r]) for r in rows}
        best = max(outcome.values())
        tied = {m for m, v in outcome.items() if np.isclose(v, best)}
        state = rows[0]  # siblings share the state, so the router's values there are one row's
        mine = max(outcome, key=lambda m: q[state, m])
        single = next(m for m in preference if m in outcome)
        hits.append(mine in tied)
        single_hits.append(single in tied)
        chances.append(len(tied) / len(outcome))
        values.append((best, outcome[mine], outcome[single]))
    if not hits:
        return None
    value = np.array(values)
    return RankingCell(
        decisions=len(hits),
        accuracy=float(np.mean(hits)),
        single_best_accuracy=float(np.mean(single_hits)),
        chance=float(np.mean(chances)),
        router_value=float(value[:, 1].mean()),
        single_value=float(value[:, 2].mean()),
        best_value=float(value[:, 0].mean()),
    )


def diagnose(
    checkpoint: str | Path,
    run_dirs: Sequence[str | Path],
    lam: float = 0.0,
    *,
    encoder: HistoryEncoder | None = None,
    cache_dir: str | Path | None = None,
    defer_threshold: float | None = None,
    turn_buckets: Sequence[int] = DEFAULT_TURN_BUCKETS,
    min_per_model: int = 2,
) -> Diagnosis:
    """The diagnosis of ``checkpoint`` on the logged episodes of ``run_dirs``; see the module docstring."""
    if lam < 0:
        raise ConfigError(f"lam must be >= 0, got {lam}")
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ConfigError("no run directories given")
    model = load_value_model(checkpoint)
    assert model.stats is not None and model.encoder is not None
    if encoder is None:
        encoder = build_encoder(model.encoder, cache_dir, torch_threads=2)
    samples = load_samples(run_dirs)
    if not samples:
        raise ConfigError(f"no finished episodes in {', '.join(map(str, run_dirs))}")
    data = build_training_set(
        samples, encode_histories(samples, encoder), model.cards, model.stats, model.options, model.encoder
    )
    diagnosis = diagnose_model(
        model, samples, data, lam, defer_threshold=defer_threshold, turn_buckets=turn_buckets,
        min_per_model=min_per_model,
    )  # fmt: skip
    diagnosis.checkpoint, diagnosis.data = str(checkpoint), [str(d) for d in run_dirs]
    return diagnosis


def comparable_groups(
    samples: Sequence[DecisionSample],
    data: TrainingSet,
    observed: np.ndarray,
    turn_buckets: Sequence[int],
    min_per_model: int,
) -> dict[int, dict[int, float]]:
    """Per covered decision, the weighted mean observed return of each model logged in its group.

    A group is one task type and turn bucket; a model counts there when it was logged at least
    ``min_per_model`` times; a group is covered when at least two models count.
    """
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for row, sample in enumerate(samples):
        groups[(sample.task, turn_bucket(sample.turn, turn_buckets))].append(row)
    means_of: dict[int, dict[int, float]] = {}
    weight = data.weight.astype(np.float64)
    for members in groups.values():
        idx = np.array(members)
        means = {}
        for m in np.unique(data.model_index[idx]):
            of_model = idx[data.model_index[idx] == m]
            if len(of_model) >= min_per_model:
                means[int(m)] = float(np.average(observed[of_model], weights=weight[of_model]))
        if len(means) >= 2:
            means_of.update(dict.fromkeys(members, means))
    return means_of


def diagnose_model(
    model: ValueModel,
    samples: Sequence[DecisionSample],
    data: TrainingSet,
    lam: float = 0.0,
    *,
    defer_threshold: float | None = None,
    turn_buckets: Sequence[int] = DEFAULT_TURN_BUCKETS,
    min_per_model: int = 2,
) -> Diagnosis:
    """The diagnosis of a fitted model on decisions already encoded (``data`` built with its targets)."""
    if defer_threshold is None and isinstance(model, EnsembleModel):
        defer_threshold = model.defer_threshold
    cards = model.cards
    rows = np.arange(len(data))
    chosen, q, spread, deferred = router_choices(model, data.embeddings, cards, lam, defer_threshold)
    score, cost = model.predict(data.embeddings, cards)
    logged_score, logged_cost = score[rows, data.model_index], cost[rows, data.model_index]

    observed = data.score.astype(np.float64) - lam * data.cost.astype(np.float64)
    weight = data.weight.astype(np.float64)
    n_models = len(cards)
    overall = np.array(
        [
            np.average(observed[data.model_index == m], weights=weight[data.model_index == m])
            if (data.model_index == m).any()
            else -np.inf
            for m in range(n_models)
        ]
    )
    preference = list(np.argsort(-overall, kind="stable"))  # the single-model baseline's order
    means_of = comparable_groups(samples, data, observed, turn_buckets, min_per_model)
    covered = np.array(sorted(means_of), dtype=np.int64)

    def picks(row: int) -> tuple[int, int, int]:
        """Best observed, the router's and the baseline's model among the models compared at ``row``."""
        means = means_of[row]
        compared = sorted(means)
        best = max(compared, key=lambda m: means[m])
        if isinstance(model, EnsembleModel) and deferred is not None and deferred[row]:
            mine = chosen[row] if chosen[row] in means else next(m for m in preference if m in means)
        else:
            mine = max(compared, key=lambda m: q[row, m])
        single = next(m for m in preference if m in means)
        return best, int(mine), int(single)

    chosen_among = {int(r): picks(int(r)) for r in covered}

    def cell(selection: np.ndarray) -> RankingCell:
        if not len(selection):
            return RankingCell(0, None, None, None, None, None, None)
        best, mine, single = (np.array([chosen_among[r][i] for r in selection]) for i in range(3))
        value = np.array(
            [
                [means_of[r][m] for m in (b, c, s)]
                for r, b, c, s in zip(selection, best, mine, single, strict=True)
            ]
        )
        return RankingCell(
            decisions=len(selection),
            accuracy=float((mine == best).mean()),
            single_best_accuracy=float((single == best).mean()),
            chance=float(np.mean([1.0 / len(means_of[r]) for r in selection])),
            router_value=float(value[:, 1].mean()),
            single_value=float(value[:, 2].mean()),
            best_value=float(value[:, 0].mean()),
        )

    labels = decision_labels(samples)
    breakdowns = {
        kind: {
            label: cell(np.array([r for r in covered if values[r] == label], dtype=np.int64))
            for label in sorted(set(values))
        }
        for kind, values in labels.items()
    }
    phase_order = {p: i for i, p in enumerate(PHASES)}
    breakdowns["phase"] = dict(sorted(breakdowns["phase"].items(), key=lambda kv: phase_order[kv[0]]))

    mse = {
        "score": float(np.mean((logged_score - data.score) ** 2)),
        "cost": float(np.mean((logged_cost - data.cost) ** 2)),
        "score_heldout_variance": float(np.var(data.score)),
        "cost_heldout_variance": float(np.var(data.cost)),
    }
    diagnosis = Diagnosis(
        checkpoint="",
        kind=model.kind,
        lam=lam,
        data=sorted({s.run for s in samples}),
        episodes=len({(s.run, s.episode) for s in samples}),
        decisions=len(samples),
        params={
            "kind": model.kind,
            **model.get_params(),
            **{f"targets.{k}": v for k, v in dataclasses.asdict(model.options).items()},
            **(
                {"ensemble": len(model.members), "ensemble_mode": model.mode}
                if isinstance(model, EnsembleModel)
                else {}
            ),
        },
        single_best=cards[preference[0]].name,
        chance=1.0 / n_models,
        coverage=len(covered) / len(samples),
        full_pool_coverage=float(np.mean([len(means_of[r]) == n_models for r in covered]))
        if len(covered)
        else 0.0,
        fixed_model_accuracy={
            card.name: float(np.mean([chosen_among[int(r)][0] == m for r in covered]))
            if len(covered)
            else 0.0
            for m, card in enumerate(cards)
        },
        mse=mse,
        calibration={
            "score": calibration_bins(logged_score, data.score.astype(np.float64)),
            "cost": calibration_bins(logged_cost, data.cost.astype(np.float64)),
        },
        ranking=cell(covered),
        breakdowns=breakdowns,
        switches=switch_pattern(samples, data, chosen, cards, labels["phase"]),
        siblings=sibling_ranking(samples, data.model_index, observed, q, preference),
    )
    if spread is not None:
        diagnosis.ensemble = {
            "members": len(model.members),  # type: ignore[attr-defined]
            "mean_spread": float(spread.mean()),
            "spread_quantiles": {str(p): float(np.quantile(spread, p)) for p in (0.1, 0.5, 0.9)},
            "defer_threshold": defer_threshold,
            "defer_rate": float(deferred.mean())
            if deferred is not None and defer_threshold is not None
            else None,
        }
    diagnosis.notes.append(
        "critical turns come from the benchmark plug-in's privileged task knowledge and only label decisions here"
    )
    return diagnosis


def switch_pattern(samples, data, chosen: np.ndarray, cards, phases: list[str]) -> dict[str, Any]:
    """How often the router's choices change along a logged history, and what it picks per phase."""
    by_episode: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row, sample in enumerate(samples):
        by_episode[(sample.run, sample.episode)].append(row)
    router_switches = logged_switches = transitions = 0
    for rows in by_episode.values():
        rows.sort(key=lambda r: samples[r].turn)
        picks, logged = chosen[rows], data.model_index[rows]
        router_switches += int((picks[1:] != picks[:-1]).sum())
        logged_switches += int((logged[1:] != logged[:-1]).sum())
        transitions += len(rows) - 1
    per_phase: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        picks = [cards[chosen[r]].name for r in range(len(samples)) if phases[r] == phase]
        counts = Counter(picks)
        per_phase[phase] = {name: counts[name] / len(picks) for name in sorted(counts)} if picks else {}
    overall = Counter(cards[c].name for c in chosen)
    return {
        "router_switch_rate": router_switches / transitions if transitions else 0.0,
        "logged_switch_rate": logged_switches / transitions if transitions else 0.0,
        "models": {name: overall[name] / len(chosen) for name in sorted(overall)},
        "models_by_phase": per_phase,
    }


def render_markdown(d: Diagnosis) -> str:
    lines = [
        f"# Diagnosis of {d.kind} ({d.checkpoint}) at lam={d.lam:g}",
        "",
        f"Held-out data: {', '.join(d.data)}: {d.episodes} episodes, {d.decisions} decisions. "
        f"Parameters: {json.dumps(d.params, sort_keys=True, default=str)}",
        "",
        "## Ranking (top model = best observed among comparable states)",
        "",
        "Comparable: same task type and turn bucket (turn prefix); the models compared are those logged there "
        "at least twice (at least two of them); best = highest IPW-weighted mean observed score - lam * cost; the "
        "router's and the single-model baseline's picks are taken among the compared models. Coverage "
        f"{d.coverage:.0%} of decisions ({d.full_pool_coverage:.0%} of those compare the whole pool). "
        f"Single best model on these data: {d.single_best}. Values: group-mean observed return of the pick. "
        "Accuracy of always picking one model: "
        + ", ".join(
            f"{name} {acc:.3f}" for name, acc in sorted(d.fixed_model_accuracy.items(), key=lambda kv: -kv[1])
        )
        + ".",
        "",
        "| slice | label | decisions | router acc | single-best acc | chance | router value | single value "
        "| best value |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def row(kind: str, label: str, c: RankingCell) -> str:
        return (
            f"| {kind} | {label} | {c.decisions} | {_number(c.accuracy)} | {_number(c.single_best_accuracy)} "
            f"| {_number(c.chance)} | {_number(c.router_value)} | {_number(c.single_value)} | {_number(c.best_value)} |"
        )

    lines.append(row("all", "", d.ranking))
    for kind, cells in d.breakdowns.items():
        for label, c in cells.items():
            lines.append(row(kind, label, c))
    if d.siblings is not None:
        lines.append(row("siblings", "branch points", d.siblings))
        lines += [
            "",
            f"Siblings: at each of {d.siblings.decisions} branch points of the held-out data, the router's top model "
            "among the models branched there against the best observed branch (all continued alike from one "
            "state); decisions counts branch points, values are the observed return of each pick.",
        ]
    lines += [
        "",
        "## Calibration (logged model; normalised units: score target, cost in mean training episodes)",
        "",
        f"MSE score {d.mse['score']:.4f} (held-out variance {d.mse['score_heldout_variance']:.4f}), "
        f"cost {d.mse['cost']:.4f} (variance {d.mse['cost_heldout_variance']:.4f}).",
        "",
    ]
    for target, bins in d.calibration.items():
        lines += [
            f"| {target} decile | range | decisions | predicted | realised |",
            "| --- | --- | --- | --- | --- |",
        ]
        for i, b in enumerate(bins):
            lines.append(
                f"| {i + 1} | {b.low:.3f}..{b.high:.3f} | {b.decisions} | {b.predicted:.3f} | {b.realised:.3f} |"
            )
        lines.append("")
    s = d.switches
    lines += [
        "## Switch pattern (the router's own picks along the logged histories)",
        "",
        f"Router switch rate {s['router_switch_rate']:.3f} per turn (logging policy {s['logged_switch_rate']:.3f}).",
        "",
        "| phase | models picked |",
        "| --- | --- |",
        f"| all | {_shares(s['models'])} |",
    ]
    for phase, shares in s["models_by_phase"].items():
        lines.append(f"| {phase} | {_shares(shares)} |")
    if d.ensemble:
        e = d.ensemble
        lines += [
            "",
            f"## Ensemble of {e['members']}",
            "",
            f"Std across members of the chosen model's Q: mean {e['mean_spread']:.4f}, quantiles "
            + ", ".join(f"{k}: {v:.4f}" for k, v in e["spread_quantiles"].items())
            + f"; defer threshold {e['defer_threshold']}, defer rate {_number(e['defer_rate'])}.",
        ]
    lines += ["", *(f"Note: {n}." for n in d.notes), ""]
    return "\n".join(lines)


def _shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in sorted(shares.items(), key=lambda kv: -kv[1]))


def write_diagnosis(diagnosis: Diagnosis, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / REPORT_JSON, dataclasses.asdict(diagnosis))
    markdown = out / REPORT_MD
    tmp = markdown.with_name(f".{markdown.name}.tmp")
    tmp.write_text(diagnosis.to_markdown())
    tmp.replace(markdown)
    return out / REPORT_JSON, markdown


def log_diagnosis(diagnosis: Diagnosis, files: Sequence[Path], tracking_uri: str) -> str:
    """One run per (checkpoint, data, lam) in the ``router-diagnostics`` experiment; logging again updates it."""
    from harness.tracking_server import ServerTracker

    if tracking_uri.startswith("sqlite:///"):
        _ensure_local_experiment(tracking_uri)
    tracker = ServerTracker(EXPERIMENT, tracking_uri)
    key = f"diagnose:{Path(diagnosis.checkpoint).resolve()}:{','.join(diagnosis.data)}:lam={diagnosis.lam:g}"
    params = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in diagnosis.params.items()}
    params |= {
        "lam": str(diagnosis.lam),
        "checkpoint": diagnosis.checkpoint,
        "data": ",".join(diagnosis.data),
    }
    return tracker.log(
        key,
        f"{diagnosis.kind} lam={diagnosis.lam:g}",
        params=params,
        metrics=diagnosis.metrics(),
        artifacts=files,
    )


def _ensure_local_experiment(uri: str) -> None:
    """A SQLite store's experiment keeps its artifacts beside the database, not in the working directory."""
    from mlflow import MlflowClient

    db = Path(uri.removeprefix("sqlite:///"))
    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=str((db.parent / "mlartifacts").resolve()))
