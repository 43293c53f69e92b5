"""Calibrating a simulated pool against the paper's single-model baselines, on one or more splits.

The pool file states each model's specialisation pattern (which topics it is good
at, how it fails); calibration only moves a few knobs per model so that the
pattern survives: per target split, a shift of the skills of that split's topics
in logit space (score); the mean completion length, fitted on the first split,
and a verbosity multiplier for the topics of each further split (cost). A split
that shares topics with an earlier one (ScienceWorld's OOD split: unseen task
types of seen topics) is fitted by its task types instead: a logit offset of the
critical-step chance (``task_difficulty``) and a verbosity multiplier
(``task_verbosity``), so the earlier split's rows do not move. Each
single-model baseline is run on the real benchmark over the target splits; the
fit iterates a bracketing step on the score and solves the cost knobs in closed
form from the measured token counts.

The pool file's ``calibration`` block names the benchmark (default ``scienceworld``),
the targets per split (``splits: {test_id: {episodes, targets, tolerance}, ...}``,
or the older one-split form with ``episodes``/``targets``/``tolerance`` at the top,
meaning test_id), a ``score_scale`` (100 for accuracy in % of a 0/1 score) and
``unfitted`` rows (the random router) that are printed beside ours but never fitted.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.batch import BatchProgress, execute
from harness.benchmarks import get_benchmark
from harness.config import RouterSpec, RunConfig
from harness.pool import load_pool
from harness.records import EpisodeRecord
from harness.trajectory import RunStore


@dataclass(frozen=True)
class Row:
    """One router on one split, ours against the paper, with the pool file's tolerances."""

    model: str
    split: str
    score: float
    cost: float  # mean dollars per episode
    target_score: float
    target_cost: float
    episodes: int
    tol_score: float = 5.0
    tol_cost: float = 0.25
    fitted: bool = True  # False: an unfitted plausibility row (the random router)

    @property
    def score_ok(self) -> bool:
        return abs(self.score - self.target_score) <= self.tol_score

    @property
    def cost_ok(self) -> bool:
        return abs(self.cost - self.target_cost) <= self.tol_cost * self.target_cost


@dataclass(frozen=True)
class SplitTargets:
    episodes: int
    per_model: dict[str, tuple[float, float]]  # (score, $ per episode)
    tolerance: dict[str, float]


@dataclass(frozen=True)
class Calibration:
    benchmark: str
    score_scale: float
    splits: dict[str, SplitTargets]
    unfitted: dict[str, dict[str, tuple[float, float]]]  # router -> split -> (score, $ per episode)


def _split_targets(block: dict) -> SplitTargets:
    episodes = block["episodes"]
    per_model = {m: (t["score"], t["total_cost"] / episodes) for m, t in block["targets"].items()}
    return SplitTargets(episodes, per_model, block.get("tolerance", {}))


def calibration(pool_name: str) -> Calibration:
    block = load_pool(pool_name).spec.calibration
    splits = block.get("splits") or {"test_id": block}
    parsed = {name: _split_targets(b) for name, b in splits.items()}
    unfitted = {
        router: {
            split: (t["score"], t["total_cost"] / parsed[split].episodes)
            for split, t in per_split.items()
            if split in parsed
        }
        for router, per_split in (block.get("unfitted") or {}).items()
    }
    return Calibration(
        load_pool(pool_name).spec.calibrated_on, float(block.get("score_scale", 1.0)), parsed, unfitted
    )


def targets(pool_name: str) -> tuple[dict[str, tuple[float, float]], dict]:
    """Per-model (score, $ per episode) targets and tolerance of the first target split."""
    first = next(iter(calibration(pool_name).splits.values()))
    return first.per_model, first.tolerance


def run_router(
    pool: str,
    router: RouterSpec,
    out: Path,
    workers: int,
    split: str = "test_id",
    benchmark: str = RunConfig.benchmark,
    seed: int = 0,
    progress: BatchProgress | None = None,
) -> list[EpisodeRecord]:
    config = RunConfig(router=router, pool=pool, benchmark=benchmark, split=split, workers=workers, seed=seed)
    return execute(config, out, label=f"{router.label} {split}", progress=progress)


def _row(
    router: RouterSpec, records: list[EpisodeRecord], split: str, target: tuple[float, float], targets: SplitTargets,
    scale: float, fitted: bool,
) -> Row:  # fmt: skip
    records = [r for r in records if not r.failed]
    return Row(
        router.label if not fitted else router.params["model"],
        split,
        scale * sum(r.score for r in records) / len(records),
        sum(r.cost for r in records) / len(records),
        target[0],
        target[1],
        len(records),
        targets.tolerance.get("score_points", 5.0),
        targets.tolerance.get("cost_fraction", 0.25),
        fitted,
    )


def measure(
    pool: str,
    out: Path,
    workers: int,
    models: list[str] | None = None,
    progress: BatchProgress | None = None,
    unfitted: bool = False,
) -> list[Row]:
    """Every (model, target split) row, plus the unfitted routers' rows when ``unfitted``."""
    cal = calibration(pool)
    rows = []
    for split, goal in cal.splits.items():
        for model in models or list(goal.per_model):
            router = RouterSpec("single", {"model": model})
            records = run_router(
                pool, router, out / split / model, workers, split, cal.benchmark, progress=progress
            )
            rows.append(_row(router, records, split, goal.per_model[model], goal, cal.score_scale, True))
    if unfitted:
        for name, per_split in cal.unfitted.items():
            for split, target in per_split.items():
                router = RouterSpec(name)
                records = run_router(
                    pool, router, out / split / name, workers, split, cal.benchmark, progress=progress
                )
                rows.append(_row(router, records, split, target, cal.splits[split], cal.score_scale, False))
    return rows


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _shifted(skill: dict[str, float], delta: float) -> dict[str, float]:
    return {k: round(1 / (1 + math.exp(-(_logit(v) + delta))), 4) for k, v in skill.items()}


@dataclass(frozen=True)
class Knob:
    """What a target split's fit moves: the skills of its topics, or the difficulty of its task types.

    A split whose topics are disjoint from the earlier splits' moves topic skills (``keys`` None:
    every skill, for a single target split). A split that shares topics with an earlier one (the
    ScienceWorld OOD split holds unseen task types of seen topics) moves a logit offset and a
    completion length multiplier for its own task types instead, so the earlier split is untouched.
    """

    by: str  # "topic" | "task"
    keys: frozenset[str] | None


def split_knobs(cal: Calibration) -> dict[str, Knob]:
    if len(cal.splits) == 1:
        return {name: Knob("topic", None) for name in cal.splits}
    split = get_benchmark(cal.benchmark).load_split()
    tasks = {name: {t.task for t in split.tasks(name)} for name in cal.splits}
    knobs: dict[str, Knob] = {}
    seen_topics: set[str] = set()
    for name in cal.splits:
        topics = {split.topics[t] for t in tasks[name]}
        if topics & seen_topics:
            shared = [other for other in knobs if tasks[other] & tasks[name]]
            if shared:
                raise ValueError(f"target splits {shared[0]} and {name} share task types")
            knobs[name] = Knob("task", frozenset(tasks[name]))
        else:
            knobs[name] = Knob("topic", frozenset(topics))
        seen_topics |= topics
    topic_splits = [name for name, knob in knobs.items() if knob.by == "topic"]
    if len(topic_splits) == 1:  # the only topic split moves every skill, ``default`` included
        knobs[topic_splits[0]] = Knob("topic", None)
    return knobs


def fit(
    pool_name: str, work: Path, workers: int, rounds: int = 7, progress: BatchProgress | None = None
) -> Path:
    """Fit every model's skill shifts and cost knobs; rewrites the pool file in place.

    All models move together, one measured round at a time, until every row is within
    half the score tolerance and within the cost tolerance, or the rounds run out. The
    logit shifts are relative to the skills (and task difficulties) in the file when the
    fit starts, so the stated pattern is kept.
    """
    pool = load_pool(pool_name)
    data = yaml.safe_load(pool.path.read_text())
    header = _header(pool.path.read_text())
    cal = calibration(pool_name)
    knobs = split_knobs(cal)
    first = next(iter(cal.splits))
    base = {m["name"]: copy.deepcopy(m["simulated"]) for m in data["models"]}
    models = list(cal.splits[first].per_model)
    history: dict[tuple[str, str], list[tuple[float, float]]] = {
        (m, s): [] for m in models for s in cal.splits
    }
    delta = {(m, s): 0.0 for m in models for s in cal.splits}
    todo = models
    for round_ in range(rounds):
        for model in todo:
            data_model(data, model)["simulated"].update(_moved(base[model], knobs, delta, model))
        pool.path.write_text(header + dump(data))
        out = work / f"round{round_}-{load_pool(pool_name).sha256[:12]}"
        rows = measure(pool_name, out, workers, todo, progress)
        for row in rows:
            key = (row.model, row.split)
            history[key].append((delta[key], row.score))
            if abs(row.score - row.target_score) > row.tol_score * 0.5:
                delta[key] = _next_delta(history[key], row.target_score)
        for model in todo:
            _fit_costs(data_model(data, model)["simulated"], out, model, cal, knobs)
        pool.path.write_text(header + dump(data))
        todo = sorted(
            {r.model for r in rows if abs(r.score - r.target_score) > r.tol_score * 0.5 or not r.cost_ok}
        )
        if not todo:
            break
    return pool.path


def _moved(base: dict, knobs: dict[str, Knob], delta: dict, model: str) -> dict:
    """The profile fields the score knobs set: skills shifted per topic split, offsets per task split."""
    skills = dict(base["skill"])
    difficulty = dict(base.get("task_difficulty") or {})
    for split, knob in knobs.items():
        d = delta[(model, split)]
        if knob.by == "topic":
            moved = {k: v for k, v in base["skill"].items() if knob.keys is None or k in knob.keys}
            skills.update(_shifted(moved, d))
        else:
            difficulty.update({t: round(difficulty.get(t, 0.0) + d, 4) for t in sorted(knob.keys or ())})
    out: dict = {"skill": skills}
    if difficulty:
        out["task_difficulty"] = difficulty
    return out


def _next_delta(history: list[tuple[float, float]], target: float) -> float:
    """Next logit shift: interpolate inside the tightest bracket, else step towards the target.

    The score is measured with common random numbers (same seeds every round), so it
    is a deterministic, roughly increasing step function of the shift; bracketing
    is robust to its jumps where a plain secant step overshoots.
    """
    below = [h for h in history if h[1] < target]
    above = [h for h in history if h[1] >= target]
    if below and above:
        (d0, s0), (d1, s1) = max(below), min(above)
        t = (target - s0) / (s1 - s0) if s1 != s0 else 0.5
        return d0 + min(max(t, 0.2), 0.8) * (d1 - d0)
    if below:
        return max(below)[0] + 0.75
    return min(above)[0] - 0.75


def _completion_budget(run_dir: Path, target_cost: float) -> tuple[float] | None:
    """(tokens per call that make the measured episodes cost ``target_cost``,), None without calls.

    Prompt tokens do not depend on this knob (the history holds the visible reply, not
    the billed reasoning tokens), so the completion budget is what is left of the target.
    """
    store = RunStore(run_dir)
    cards = store.config()["price_cards"]
    episodes = [e for e in store.episodes() if not e.failed]
    prompt_dollars, calls, out_price = 0.0, 0, 0.0
    for e in episodes:
        for turn in store.turns(e.episode):
            card = cards[turn.model]
            prompt_dollars += turn.prompt_tokens * card["input_per_mtok"] / 1e6
            out_price = card["output_per_mtok"] / 1e6
            calls += 1
    if not (calls and out_price):
        return None
    left = target_cost * len(episodes) - prompt_dollars
    return (max(20.0, left / out_price / calls),)


def _fit_costs(profile: dict, out: Path, model: str, cal: Calibration, knobs: dict[str, Knob]) -> None:
    """The first split sets the completion length; each further split a verbosity multiplier for its
    topics (a topic split) or its task types (a task split)."""
    splits = list(cal.splits)
    first = _completion_budget(out / splits[0] / model, cal.splits[splits[0]].per_model[model][1])
    if first is None:
        return
    profile["completion_tokens"] = round(first[0], 1)
    for split in splits[1:]:
        budget = _completion_budget(out / split / model, cal.splits[split].per_model[model][1])
        knob = knobs[split]
        if budget is None or knob.keys is None:
            continue
        field = "topic_verbosity" if knob.by == "topic" else "task_verbosity"
        verbosity = dict(profile.get(field) or {})
        verbosity.update({k: round(budget[0] / first[0], 4) for k in sorted(knob.keys)})
        profile[field] = verbosity


def data_model(data: dict, name: str) -> dict:
    return next(m for m in data["models"] if m["name"] == name)


def _header(text: str) -> str:
    """The pool file's leading comment lines, kept when the fit rewrites it."""
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=110)
