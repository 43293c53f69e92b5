"""Any router evaluated offline on logged run directories: score and cost estimates, and decision agreement.

The logs are read with the importers' reader (every version this project wrote; what
is skipped is reported), the router's behaviour at every logged state is tabled once
(:mod:`harness.replay.policies`), and :func:`harness.replay.ope.evaluate_policy` turns
it into estimates.

Which logging propensities: a single logging router (one exploration run, or several
runs of the same router) is its logged per-turn propensities. Logs of *several* routers
(the fixed baselines of a benchmark: six single-model routers, random, heuristic) are one
sample from their mixture, each run weighed by its share of the episodes (the balance
heuristic of multiple importance sampling): the propensity of turn *t* becomes the
mixture's conditional probability ``M_t / M_{t-1}``, with
``M_t = sum_k (n_k / N) prod_{s <= t} mu_k(a_s | h_s)``, every logger's probability being
recomputed at every state. Per-episode logged propensities would be wrong there: a
single-model router gives every other model probability 0, so its episodes carry no
information about a target that picks another model, while the mixture's support is
the union of the loggers'. ``logging="as-logged"`` forces the logged propensities.

Value model for the direct method and doubly robust: the router's own where it has one
(learned routers, see :mod:`harness.replay.policies`), otherwise fitted-Q evaluation
over these router-independent features of a logged state (:func:`state_features`): the
fraction of the turn limit used, the score so far over the benchmark's score span, the
fraction of the dollar budget spent, whether the last action was valid, consecutive
errors (capped at 3, over 3), a one-hot of the previous turn's model, and a turn-0 flag.
FQE is refit on every bootstrap resample for the dm and dr intervals
(``OPEConfig.refit_resamples``); a router's own value model is not (it was trained
elsewhere), and its intervals say that they are conditional on it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.benchmarks import get_benchmark
from harness.config import Limits, RouterSpec, resolved_limits
from harness.errors import ConfigError
from harness.replay.importers import FileReport, read_run_dir
from harness.replay.logged import LoggedEpisode
from harness.replay.ope import (
    ESTIMATORS,
    INTERVAL_CONDITIONAL,
    INTERVAL_EPISODES,
    NEEDS_Q,
    ActionValues,
    FeatureFunction,
    FittedQ,
    FQEConfig,
    FQEProblem,
    OPEConfig,
    PolicyEstimate,
    QFunction,
    Refit,
    evaluate_policy,
)
from harness.replay.policies import PolicyTable, StateVectors, episode_key, policy_table
from harness.types import ModelCard
from routers import make_router

LOGGING_MODES = ("auto", "as-logged", "mixture")
VALUE_MODELS = ("auto", "router", "fqe")
FQE_FEATURE_NAMES = (
    "turn / max_turns",
    "score so far / score span",
    "dollars spent / budget",
    "last action valid",
    "min(consecutive errors, 3) / 3",
    "previous model (one-hot)",
    "turn 0",
)


@dataclass(frozen=True)
class RunLog:
    """One logged run directory: where, which router logged it (None: unknown, e.g. an import)."""

    path: str
    router: RouterSpec | None
    limits: Limits | None
    episodes: int


@dataclass
class LoggedData:
    episodes: list[LoggedEpisode]
    runs: list[RunLog]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file: item, reason) from the reader

    @property
    def turns(self) -> int:
        return sum(len(e.turns) for e in self.episodes)

    @property
    def limits(self) -> dict[str, Limits]:
        return {r.path: r.limits for r in self.runs if r.limits is not None}


def load_logs(run_dirs: Sequence[Path]) -> LoggedData:
    """Every finished episode of the run directories, with the router and limits each ran under."""
    if not run_dirs:
        raise ConfigError("offline evaluation needs at least one logged run directory")
    episodes, runs, skipped = [], [], []
    for run_dir in run_dirs:
        found, reports, config = read_run_dir(Path(run_dir))
        run = config.get("run") or {}
        router = run.get("router")
        spec = RouterSpec(router["name"], dict(router.get("params") or {})) if router else None
        limits = Limits(**run["limits"]) if run.get("limits") else None
        runs.append(RunLog(str(Path(run_dir)), spec, limits, len(found)))
        episodes.extend(found)
        skipped.extend(_skips(reports))
    if not episodes:
        raise ConfigError(f"no finished episodes in {', '.join(map(str, run_dirs))}")
    return LoggedData(episodes, runs, skipped)


def _skips(reports: list[FileReport]) -> list[tuple[str, str]]:
    return [(f"{r.path}: {s.item}", s.reason) for r in reports for s in r.skipped]


def _logger_key(spec: RouterSpec) -> str:
    return json.dumps({"name": spec.name, "params": spec.params}, sort_keys=True, default=str)


def mixture_episodes(
    data: LoggedData, cards: Sequence[ModelCard], vectors: StateVectors | None = None
) -> tuple[list[LoggedEpisode], str]:
    """The episodes with each turn's propensity replaced by the loggers' mixture's (balance heuristic)."""
    unknown = [r.path for r in data.runs if r.router is None]
    if unknown:
        raise ConfigError(f"a mixture of logging policies needs every run's router; {unknown[0]} names none")
    shares: dict[str, float] = {}
    specs: dict[str, RouterSpec] = {}
    for run in data.runs:
        assert run.router is not None
        key = _logger_key(run.router)
        specs[key] = run.router
        shares[key] = shares.get(key, 0.0) + run.episodes / len(data.episodes)
    names = [c.name for c in cards]
    log_probabilities = []  # per logger: {episode key: (turns,) log mu_k(a_t | h_t)}
    for spec in specs.values():
        table = policy_table(
            make_router(spec.name, spec.params, names), data.episodes, cards, data.limits, vectors
        )
        with np.errstate(divide="ignore"):
            log_probabilities.append(
                {episode_key(e): np.log(table.logged_probability(e)) for e in data.episodes}
            )
    own = {r.path: _logger_key(r.router) for r in data.runs if r.router is not None}
    order = list(specs)
    log_shares = np.log([shares[k] for k in order])
    out = []
    for episode in data.episodes:
        k = episode_key(episode)
        prefix = np.stack([np.cumsum(log_probabilities[i][k]) for i in range(len(order))])  # (loggers, turns)
        own_row = prefix[order.index(own[episode.source])]
        if not np.isfinite(own_row[-1]):
            turn = int(np.argmax(~np.isfinite(own_row)))
            raise ConfigError(
                f"{episode.source}: its logging router gives probability 0 to the logged model of "
                f"{episode.episode!r} turn {turn}; the run's config does not describe its log"
            )
        log_m = np.logaddexp.reduce(log_shares[:, None] + prefix, axis=0)
        conditional = np.exp(np.diff(np.concatenate([[0.0], log_m])))
        turns = tuple(
            dataclasses.replace(t, propensity=float(min(1.0, p)))
            for t, p in zip(episode.turns, conditional, strict=True)
        )
        out.append(dataclasses.replace(episode, turns=turns))
    described = ", ".join(f"{specs[k].label} {shares[k]:.0%}" for k in order)
    return out, f"mixture of {len(order)} logging routers (balance heuristic): {described}"


def logging_episodes(
    data: LoggedData, cards: Sequence[ModelCard], mode: str = "auto", vectors: StateVectors | None = None
) -> tuple[list[LoggedEpisode], str]:
    """The episodes with the propensities the estimators should use, and a sentence saying which."""
    if mode not in LOGGING_MODES:
        raise ConfigError(f"logging mode {mode!r} is not one of {', '.join(LOGGING_MODES)}")
    loggers = {_logger_key(r.router) for r in data.runs if r.router is not None}
    every_known = all(r.router is not None for r in data.runs)
    if mode == "mixture" or (mode == "auto" and len(loggers) > 1 and every_known):
        return mixture_episodes(data, cards, vectors)
    labels = sorted({r.router.label for r in data.runs if r.router is not None}) or ["unknown router"]
    return data.episodes, f"logged propensities ({', '.join(labels)})"


def state_features(
    pool: Sequence[str], limits: dict[str, Limits], score_range: tuple[float, float]
) -> FeatureFunction:
    """The router-independent FQE features (see the module docstring), computed once per episode."""
    index = {name: i for i, name in enumerate(pool)}
    span = score_range[1] - score_range[0]
    cache: dict[tuple[str, str], np.ndarray] = {}

    def episode_rows(episode: LoggedEpisode) -> np.ndarray:
        bound = resolved_limits(limits.get(episode.source), episode.benchmark)
        assert bound.max_turns is not None and bound.budget_dollars is not None
        rows = np.zeros((len(episode.turns), 5 + len(pool) + 1))
        score_before, spent, errors = 0.0, 0.0, 0
        for t, turn in enumerate(episode.turns):
            rows[t, 0] = t / bound.max_turns
            rows[t, 1] = score_before / span
            rows[t, 2] = spent / bound.budget_dollars
            rows[t, 3] = float(errors == 0)
            rows[t, 4] = min(errors, 3) / 3
            if t > 0 and episode.turns[t - 1].model in index:
                rows[t, 5 + index[episode.turns[t - 1].model]] = 1.0
            rows[t, -1] = float(t == 0)
            score_before = float(turn.extra.get("score") or 0.0)
            spent += turn.dollars
            errors = errors + 1 if turn.valid is False else 0
        return rows

    def features(episode: LoggedEpisode, turn: int) -> np.ndarray:
        key = episode_key(episode)
        if key not in cache:
            cache[key] = episode_rows(episode)
        return cache[key][turn]

    return features


def _tabled(fitted: FittedQ, episodes: Sequence[LoggedEpisode], features: FeatureFunction) -> QFunction:
    """FQE's predictions at every logged state in one batch, looked up per state."""
    x = np.stack([features(e, t) for e in episodes for t in range(len(e.turns))])
    predicted = fitted.predict(x)
    tables, start = {}, 0
    for e in episodes:
        tables[episode_key(e)] = predicted[start : start + len(e.turns)]
        start += len(e.turns)

    def q(episode: LoggedEpisode, turn: int) -> ActionValues:
        row = tables[episode_key(episode)][turn]
        return ActionValues(score=row[:, 0], cost=row[:, 1])

    return q


@dataclass(frozen=True)
class Agreement:
    """Decision-level replay on the logged states."""

    logged_probability: float  # mean probability the router gives the logged model (deterministic: agreement)
    picks: dict[str, float]  # share of the router's probability mass on each model
    mean_advantage: float | None  # router's own score of its pick minus of the logged model, where it scores
    advantage_states: int


def agreement(table: PolicyTable, episodes: Sequence[LoggedEpisode]) -> Agreement:
    logged = np.concatenate([table.logged_probability(e) for e in episodes])
    mass = np.concatenate([table.probabilities[episode_key(e)] for e in episodes]).mean(axis=0)
    advantages = np.zeros(0)
    if table.router_scores is not None:
        index = {name: i for i, name in enumerate(table.pool)}
        scores = np.concatenate([table.router_scores[episode_key(e)] for e in episodes])
        picks = np.concatenate([table.probabilities[episode_key(e)] for e in episodes]).argmax(axis=1)
        own = np.array([index[t.model] for e in episodes for t in e.turns])
        rows = np.arange(len(own))
        advantages = scores[rows, picks] - scores[rows, own]
        advantages = advantages[np.isfinite(advantages)]
    return Agreement(
        logged_probability=float(logged.mean()),
        picks={name: float(m) for name, m in zip(table.pool, mass, strict=True) if m > 0},
        mean_advantage=float(np.mean(advantages)) if advantages.size else None,
        advantage_states=len(advantages),
    )


@dataclass
class RouterEvaluation:
    router: str
    episodes: int
    turns: int
    logging: str
    value_model: str | None  # what DM and DR rest on
    estimates: dict[str, PolicyEstimate]
    agreement: Agreement
    policy_kind: str
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            f"router {self.router} ({self.policy_kind} probabilities), offline on {self.episodes} logged episodes "
            f"({self.turns} turns)",
            f"logging: {self.logging}",
        ]
        if self.value_model:
            lines.append(f"value model for dm/dr: {self.value_model}")
        clip = next(iter(self.estimates.values())).score.clip if self.estimates else None
        lines.append(
            f"weight clip: {clip if clip is not None else 'none (unbiased)'}; intervals 95% bootstrap"
        )
        lines.append(
            f"{'estimator':<10} {'score':>9} {'95% interval':>21} {'ESS':>8} {'trust':>5}   "
            f"{'cost $':>9} {'95% interval':>21} {'ESS':>8} {'trust':>5}"
        )
        for name, e in self.estimates.items():
            s, c = e.score, e.cost
            lines.append(
                f"{name:<10} {s.value:>9.2f} [{s.low:>8.2f}, {s.high:>8.2f}] {s.ess:>8.3g} "
                f"{'yes' if s.trusted else 'NO':>5}   {c.value:>9.4f} [{c.low:>8.4f}, {c.high:>8.4f}] "
                f"{c.ess:>8.3g} {'yes' if c.trusted else 'NO':>5}"
            )
        for kind in sorted({e.score.interval for e in self.estimates.values()}):
            names = ", ".join(n for n, e in self.estimates.items() if e.score.interval == kind)
            lines.append(f"intervals of {names}: {kind}")
        a = self.agreement
        picks = ", ".join(f"{k} {v:.0%}" for k, v in sorted(a.picks.items(), key=lambda kv: -kv[1]))
        lines.append(f"decisions: probability of the logged model {a.logged_probability:.3f}; picks {picks}")
        if a.mean_advantage is not None:
            lines.append(
                f"predicted advantage over the logged model (router's own units): {a.mean_advantage:+.4f} "
                f"on {a.advantage_states} states"
            )
        if self.skipped:
            lines.append(f"{len(self.skipped)} logged item(s) skipped on reading (see `harness import run`)")
        return "\n".join(lines)


def evaluate_router(
    spec: RouterSpec,
    data: LoggedData,
    cards: Sequence[ModelCard],
    estimators: Sequence[str] = ESTIMATORS,
    config: OPEConfig | None = None,
    logging_mode: str = "auto",
    value_model: str = "auto",
    vectors: StateVectors | None = None,
    logged: tuple[list[LoggedEpisode], str] | None = None,
    fqe: FQEConfig | None = None,
) -> RouterEvaluation:
    """``spec``'s router estimated on ``data``; ``logged`` reuses episodes and propensities already computed."""
    if value_model not in VALUE_MODELS:
        raise ConfigError(f"value model {value_model!r} is not one of {', '.join(VALUE_MODELS)}")
    started = time.perf_counter()
    config = config or OPEConfig()
    vectors = vectors or StateVectors()
    names = [c.name for c in cards]
    router = vectors.router(spec.name, spec.params, names)
    episodes, logging_text = logged or logging_episodes(data, cards, logging_mode, vectors)
    table = policy_table(router, episodes, cards, data.limits, vectors)
    score_range = tuple(get_benchmark(episodes[0].benchmark).score_range)
    q, described, q_interval = None, None, INTERVAL_EPISODES
    refit: Refit | None = None
    if NEEDS_Q.intersection(estimators):
        if table.values is not None and value_model in ("auto", "router"):
            q, described, q_interval = (
                table.q(),
                f"the router's own ({spec.name} checkpoint, raw units via its TargetStats); its dm/dr "
                "intervals are conditional on it (it cannot be refit here)",
                INTERVAL_CONDITIONAL,
            )
        elif value_model == "router":
            raise ConfigError(f"router {spec.name!r} has no value model of its own; use value_model 'fqe'")
        else:
            features = state_features(names, data.limits, score_range)  # type: ignore[arg-type]
            problem = FQEProblem(episodes, names, table.target(), features, fqe or FQEConfig())
            fitted = problem.fit()
            q = _tabled(fitted, episodes, features)
            refit = problem.refit()
            refits = (
                f"refit on each of {config.refit_resamples} bootstrap resamples"
                if config.refit_resamples
                else "held fixed in the bootstrap (refit_resamples 0): intervals conditional on it"
            )
            described = f"FQE ({fitted.iterations} backups, {refits}) over: {'; '.join(FQE_FEATURE_NAMES)}"
            if not config.refit_resamples:
                q_interval = INTERVAL_CONDITIONAL
    estimates = evaluate_policy(
        episodes,
        names,
        table.target(),
        estimators,
        q,
        config,
        score_range=score_range,  # type: ignore[arg-type]
        refit=refit,
        q_interval=q_interval,
    )
    return RouterEvaluation(
        router=spec.label,
        episodes=len(episodes),
        turns=sum(len(e.turns) for e in episodes),
        logging=logging_text,
        value_model=described,
        estimates=estimates,
        agreement=agreement(table, episodes),
        policy_kind=table.kind,
        seconds=time.perf_counter() - started,
        skipped=data.skipped,
    )
