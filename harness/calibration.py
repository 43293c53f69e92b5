"""Calibrating the simulated pool against the paper's single-model baselines.

The pool file states each model's specialisation pattern (which topics it is good
at, how it fails); calibration only moves two knobs per model so that the pattern
survives: a shift of all its skills in logit space (score), and its mean
completion length (cost). Each single-model baseline is run on the real engine
over ``test_id``; the fit iterates a secant step on the score and solves the cost
knob in closed form from the measured token counts.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.batch import BatchProgress, execute
from harness.config import RouterSpec, RunConfig
from harness.pool import load_pool
from harness.trajectory import RunStore


@dataclass(frozen=True)
class Row:
    """One single-model baseline, ours against the paper, with the pool file's tolerances."""

    model: str
    score: float
    cost: float  # mean dollars per episode
    target_score: float
    target_cost: float
    episodes: int
    tol_score: float = 5.0
    tol_cost: float = 0.25

    @property
    def score_ok(self) -> bool:
        return abs(self.score - self.target_score) <= self.tol_score

    @property
    def cost_ok(self) -> bool:
        return abs(self.cost - self.target_cost) <= self.tol_cost * self.target_cost


def targets(pool_name: str) -> tuple[dict[str, tuple[float, float]], dict]:
    """Per-model (score, $ per episode) targets from the pool file's calibration block."""
    spec = load_pool(pool_name).spec
    block = spec.calibration
    episodes = block["episodes"]
    per_model = {m: (t["score"], t["total_cost"] / episodes) for m, t in block["targets"].items()}
    return per_model, block.get("tolerance", {})


def run_single(
    pool: str,
    model: str,
    out: Path,
    workers: int,
    split: str = "test_id",
    seed: int = 0,
    progress: BatchProgress | None = None,
) -> list[dict]:
    config = RunConfig(
        router=RouterSpec("single", {"model": model}), pool=pool, split=split, workers=workers, seed=seed
    )
    return execute(config, out, label=f"{model}", progress=progress)


def measure(
    pool: str,
    out: Path,
    workers: int,
    models: list[str] | None = None,
    progress: BatchProgress | None = None,
) -> list[Row]:
    goal, tol = targets(pool)
    rows = []
    for model in models or list(goal):
        records = run_single(pool, model, out / model, workers, progress=progress)
        records = [r for r in records if r["status"] != "failed"]
        score = sum(r["score"] for r in records) / len(records)
        cost = sum(r["cost"] for r in records) / len(records)
        rows.append(
            Row(
                model,
                score,
                cost,
                goal[model][0],
                goal[model][1],
                len(records),
                tol.get("score_points", 5.0),
                tol.get("cost_fraction", 0.25),
            )
        )
    return rows


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _shifted(skill: dict[str, float], delta: float) -> dict[str, float]:
    return {k: round(1 / (1 + math.exp(-(_logit(v) + delta))), 4) for k, v in skill.items()}


def fit(
    pool_name: str, work: Path, workers: int, rounds: int = 7, progress: BatchProgress | None = None
) -> Path:
    """Fit every model's skill shift and completion length; rewrites the pool file in place.

    All models move together, one measured round at a time, until every one is within
    half the tolerance or the rounds run out. The logit shifts are relative to the
    skills in the file when the fit starts, so the stated pattern is kept.
    """
    pool = load_pool(pool_name)
    data = yaml.safe_load(pool.path.read_text())
    goal, tol = targets(pool_name)
    base = {m["name"]: copy.deepcopy(m["simulated"]["skill"]) for m in data["models"]}
    history: dict[str, list[tuple[float, float]]] = {m: [] for m in goal}
    delta = {m: 0.0 for m in goal}
    todo = list(goal)
    for round_ in range(rounds):
        for model in todo:
            data_model(data, model)["simulated"]["skill"] = _shifted(base[model], delta[model])
        pool.path.write_text(dump(data))
        out = work / f"round{round_}-{load_pool(pool_name).sha256[:12]}"
        rows = measure(pool_name, out, workers, todo, progress)
        for row in rows:
            history[row.model].append((delta[row.model], row.score))
            _fit_cost(data_model(data, row.model)["simulated"], out / row.model, row.target_cost)
            if abs(row.score - row.target_score) > tol.get("score_points", 5.0) * 0.5:
                delta[row.model] = _next_delta(history[row.model], row.target_score)
        pool.path.write_text(dump(data))
        todo = [
            r.model
            for r in rows
            if abs(r.score - r.target_score) > tol.get("score_points", 5.0) * 0.5 or not r.cost_ok
        ]
        if not todo:
            break
    return pool.path


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


def _fit_cost(profile: dict, run_dir: Path, target_cost: float) -> None:
    """Solve the mean completion length that makes the measured episodes cost ``target_cost``.

    Prompt tokens do not depend on this knob (the history holds the visible reply, not
    the billed reasoning tokens), so the completion budget is what is left of the target.
    """
    store = RunStore(run_dir)
    cards = store.config()["price_cards"]
    episodes = [e for e in store.episodes() if e["status"] != "failed"]
    prompt_dollars = 0.0
    calls = 0
    out_price = 0.0
    for e in episodes:
        for turn in store.turns(e["episode"]):
            card = cards[turn["model"]]
            prompt_dollars += turn["prompt_tokens"] * card["input_per_mtok"] / 1e6
            out_price = card["output_per_mtok"] / 1e6
            calls += 1
    if calls and out_price:
        left = target_cost * len(episodes) - prompt_dollars
        profile["completion_tokens"] = round(max(20.0, left / out_price / calls), 1)


def data_model(data: dict, name: str) -> dict:
    return next(m for m in data["models"] if m["name"] == name)


def dump(data: dict) -> str:
    header = (
        "# The paper's six-model pool with real price cards ($ per 1M tokens, input/output).\n"
        "# The `simulated` profiles drive the embedded default (SimulatedBackend over the real ScienceWorld engine);\n"
        "# they are fitted by `harness calibrate --fit` and checked by `harness calibrate`.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, width=110)
