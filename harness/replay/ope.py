r"""Off-policy evaluation: a router's mean final score and mean cost, estimated from logged episodes.

A logged episode *i* has turns :math:`t = 0 \dots T_i-1`; at each the logging policy
:math:`\mu` picked model :math:`a_t` with the logged propensity :math:`\mu_t = \mu(a_t \mid h_t)`,
and the target router :math:`\pi` (given as a function ``(episode, turn) -> probabilities
over the pool``; a deterministic router is an indicator) would have picked it with
:math:`\pi_t = \pi(a_t \mid h_t)`. Two rewards, undiscounted:

* score: the final score :math:`S_i` arrives once, at the last turn
  (:math:`r^S_t = S_i [t = T_i - 1]`), a terminal reward;
* cost: the model call's dollars :math:`d_t` at every turn (:math:`r^C_t = d_t`), so cost is
  naturally per decision. The logging router's own overhead is left out: it is not a
  consequence of which model was picked.

Weights: :math:`\rho_t = \pi_t / \mu_t`, :math:`w_t = \prod_{k \le t} \rho_k`, :math:`w_{-1} = 1`.
With clipping at *c* (an explicit parameter, reported with every estimate),
:math:`\tilde w_t = \min(w_t, c)`: less variance, bias towards the logged behaviour.

Estimators (each gives score and cost; *n* episodes):

* **Trajectory IS** (``tis``): :math:`\frac1n \sum_i \tilde w_{i,T_i-1} G_i` with
  :math:`G_i` the episode's total reward. Unbiased (unclipped) if :math:`\mu_t > 0` wherever
  :math:`\pi_t > 0` and the propensities are the logger's true probabilities given the
  history; its variance grows with the product of all ratios. ``wtis`` divides by
  :math:`\sum_i \tilde w_i` instead of *n*: biased by :math:`O(1/n)`, but it stays inside the
  range of the logged returns, and is undefined when no episode has weight.
* **Per-decision IS** (``pdis``, Precup et al. 2000): :math:`\frac1n \sum_i \sum_t \tilde w_{i,t} r_{i,t}`.
  A reward at *t* cannot depend on later choices, so it needs only the ratios up to *t*.
  That helps the cost (early turns carry short products); it does not help the score,
  whose only reward sits at the last turn: for the score, PDIS *is* trajectory IS.
  ``wpdis`` normalises per turn, :math:`\sum_t \frac{\sum_i \tilde w_{i,t} r_{i,t}}{\sum_i \tilde w_{i,t}}`,
  with an ended episode frozen in an absorbing state (its weight stays at its last value,
  its reward is 0), which is the fixed-horizon form of the self-normalised estimator.
* **Direct method** (``dm``): :math:`\frac1n \sum_i \hat V(h_{i,0})` with
  :math:`\hat V(h) = \sum_a \pi(a \mid h) \hat Q(h, a)` from a caller-supplied value model
  (score: expected final score; cost: expected dollars from this turn to the end, both
  when taking *a* and following :math:`\pi` after). No weights, so no weight variance;
  all of its error is :math:`\hat Q`'s bias, which the bootstrap interval does not show.
  :func:`fit_fqe` gives a :math:`\hat Q` for routers without a value model of their own.
* **Doubly robust, per decision** (``dr``, Jiang & Li 2016):
  :math:`\frac1n \sum_i \sum_t [\tilde w_t (r_t - \hat Q(h_t, a_t)) + \tilde w_{t-1} \hat V(h_t)]`.
  Unbiased (unclipped) whatever :math:`\hat Q` is, with :math:`\hat Q` as a control variate:
  the closer it is, the smaller the variance. For the terminal score this is where
  per-decision structure pays: every earlier turn's term uses a shorter product.

Uncertainty: a percentile bootstrap over episodes (seeded; ``confidence`` default 95%) and
Kish's effective sample size :math:`(\sum w)^2 / \sum w^2`: of the terminal weights for the
score, and the smallest over turns of the per-turn weights for the cost (DM: *n*). Below
``min_ess``, or when the estimate is undefined, the estimate is marked untrusted, a warning
is logged, and the reported interval is widened to cover the whole range the logs can speak
to (the score range given, else the logged final scores' range; cost from 0 to the largest
logged episode cost): a bootstrap over a handful of heavy weights is narrow and wrong.

The value model is part of what a resample changes. Resampling episodes under a fixed
:math:`\hat Q` (fitted once on all of them) leaves out the model's own sampling error, so
a DM interval is too narrow. Where the value model can be refit (fitted-Q evaluation), the
``dm`` and ``dr`` intervals come from ``refit_resamples`` resamples (default 200, seeded
with ``seed``) that each refit it on the resampled episodes (:func:`evaluate_policy`'s
``refit``; every estimate says which interval it has, :attr:`Estimate.interval`). A
router's own value model cannot be refit here: its interval is labelled as conditional on
that model.

What the logging policy does to the weights, for a deterministic target over 35-turn episodes
and a pool of six models:

* uniform logging (1/6 per turn): each ratio is 6 or 0, so an episode that agrees with the
  target on every turn has weight :math:`6^{35} \approx 1.7 \times 10^{27}` and probability
  :math:`6^{-35} \approx 5.8 \times 10^{-28}`. No finite log contains one: trajectory IS (and
  PDIS for the score) returns 0 with an ESS of 0, and the per-decision cost of turn *t*
  keeps :math:`n \cdot 6^{-(t+1)}` effective episodes, under one by turn 4 for n = 1000;
* sticky logging (one uniform draw at turn 0, then re-drawing with probability 0.03 per turn,
  so the previous model is kept with probability :math:`0.97 + 0.03/6 = 0.975` and each other
  one is chosen with 0.005): a target that keeps one model throughout matches
  :math:`\frac16 0.975^{34} \approx 7.0\%` of the episodes, each with weight
  :math:`6 / 0.975^{34} \approx 14.2`, so the ESS is about 7% of *n*. Every switch the target
  makes multiplies the weight by 200 and the matching probability by 0.005: one switch at a
  given turn leaves :math:`3.6 \times 10^{-4}` of the episodes at weight about 2,800.

Sticky logging buys IS estimates of low-switch routers, not of routers that switch often;
for those only DM and DR (resting on :math:`\hat Q`) have anything to say, and the ESS tells.
``tests/test_replay_ope.py`` checks these numbers against simulated logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.errors import ConfigError
from harness.replay.logged import LoggedEpisode

log = logging.getLogger(__name__)

ESTIMATORS = ("dm", "tis", "wtis", "pdis", "wpdis", "dr")
INTERVAL_EPISODES = "episode bootstrap"
INTERVAL_CONDITIONAL = "episode bootstrap, conditional on the value model (not refit)"
NEEDS_Q = frozenset({"dm", "dr"})
NEEDS_PROPENSITIES = frozenset({"tis", "wtis", "pdis", "wpdis", "dr"})
_BOOTSTRAP_CHUNK = 256
_REFIT_CHUNK = 25  # resamples refit together (memory: resamples x logged turns x models x features)


@dataclass(frozen=True)
class ActionValues:
    """A value model's prediction at one logged state, one entry per pool model (pool order)."""

    score: np.ndarray  # expected final score when taking the model here and following the target after
    cost: np.ndarray  # expected dollars from this turn (inclusive) to the end


TargetPolicy = Callable[[LoggedEpisode, int], np.ndarray]
QFunction = Callable[[LoggedEpisode, int], ActionValues]
FeatureFunction = Callable[[LoggedEpisode, int], np.ndarray]
# Episode weights of several resamples (resamples, episodes) -> the value model refit on each, predicted
# at every logged state: (resamples, logged turns, models, 2), score then cost, episode by episode.
Refit = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class OPEConfig:
    clip: float | None = None  # cap on cumulative importance weights; None: unclipped (unbiased)
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    # Kish ESS below which an estimate is untrusted: about the size where a bootstrap percentile
    # interval of a mean starts to be roughly calibrated.
    min_ess: float = 30.0
    # Resamples whose dm/dr value model is refit (when it can be); each is a whole FQE fit, so fewer
    # than n_bootstrap. 0: hold the model fixed and resample episodes only.
    refit_resamples: int = 200

    def __post_init__(self) -> None:
        if self.clip is not None and not self.clip > 0:
            raise ConfigError(f"OPE clip must be positive or None, got {self.clip}")
        if self.n_bootstrap < 10:
            raise ConfigError(f"OPE n_bootstrap must be at least 10, got {self.n_bootstrap}")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"OPE confidence must be in (0, 1), got {self.confidence}")
        if self.min_ess < 0:
            raise ConfigError(f"OPE min_ess must be >= 0, got {self.min_ess}")
        if self.refit_resamples != 0 and self.refit_resamples < 10:
            raise ConfigError(f"OPE refit_resamples must be 0 or at least 10, got {self.refit_resamples}")


@dataclass(frozen=True)
class Estimate:
    """One estimator's estimate of one quantity, with what it takes to judge it."""

    estimator: str
    quantity: str  # score | cost
    value: float  # NaN when undefined (a self-normalised estimator with no weight)
    low: float  # the interval to report: the bootstrap one, widened when untrusted
    high: float
    bootstrap_low: float
    bootstrap_high: float
    ess: float
    n_episodes: int
    clip: float | None
    clipped_fraction: float  # share of logged turns whose cumulative weight the clip cut
    trusted: bool
    warning: str | None = None
    interval: str = INTERVAL_EPISODES  # what the bootstrap resampled (and refit), see the module docstring


@dataclass(frozen=True)
class PolicyEstimate:
    estimator: str
    score: Estimate
    cost: Estimate


@dataclass
class LogArrays:
    """The log as padded (episode, turn) arrays; past an episode's end rewards are 0, weights frozen."""

    lengths: np.ndarray  # (n,)
    mask: np.ndarray  # (n, H) turn exists
    weights: np.ndarray  # (n, H) clipped cumulative weights w~_t
    previous: np.ndarray  # (n, H) w~_{t-1}, 1 at t = 0
    score_reward: np.ndarray  # (n, H)
    cost_reward: np.ndarray  # (n, H)
    clipped_fraction: float
    q_taken: dict[str, np.ndarray] = field(default_factory=dict)  # quantity -> (n, H) Q(h_t, a_t)
    v: dict[str, np.ndarray] = field(default_factory=dict)  # quantity -> (n, H) V(h_t)
    target: np.ndarray | None = None  # (logged turns, models) the target's probabilities
    actions: np.ndarray | None = None  # (logged turns,) pool index of the logged model

    @property
    def terminal_weights(self) -> np.ndarray:
        return self.weights[np.arange(len(self.lengths)), self.lengths - 1]

    def reward(self, quantity: str) -> np.ndarray:
        return self.score_reward if quantity == "score" else self.cost_reward


def kish_ess(weights: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many equally weighted episodes these weights are worth."""
    weights = np.asarray(weights, dtype=np.float64)
    total_sq = float(np.sum(weights**2))
    return float(np.sum(weights) ** 2 / total_sq) if total_sq > 0 else 0.0


def deterministic(choose: Callable[[LoggedEpisode, int], str], pool: Sequence[str]) -> TargetPolicy:
    """The target policy of a router that picks one model per state: an indicator vector."""
    index = {name: i for i, name in enumerate(pool)}

    def policy(episode: LoggedEpisode, turn: int) -> np.ndarray:
        name = choose(episode, turn)
        if name not in index:
            raise ConfigError(f"target router chose {name!r}, not in the pool ({', '.join(pool)})")
        probabilities = np.zeros(len(pool))
        probabilities[index[name]] = 1.0
        return probabilities

    return policy


def target_probabilities(
    episodes: Sequence[LoggedEpisode], target: TargetPolicy, n_models: int
) -> np.ndarray:
    """(logged turns, models): the target's probabilities at every logged state, episode by episode, checked."""
    places = [(e, t) for e in episodes for t in range(len(e.turns))]
    stacked = getattr(target, "stacked", None)  # a policy that knows its whole table (PolicyTable.target)
    rows = (
        list(stacked(episodes))
        if stacked is not None
        else [np.asarray(target(e, t), float) for e, t in places]
    )
    shaped = [r.shape == (n_models,) for r in rows]
    if all(shaped):
        p = np.stack(rows) if rows else np.zeros((0, n_models))
        ok = np.isfinite(p).all(axis=1) & (p >= 0).all(axis=1) & (np.abs(p.sum(axis=1) - 1.0) <= 1e-6)
        if ok.all():
            return p
        bad = int(np.argmin(ok))
    else:
        bad = shaped.index(False)
    episode, turn = places[bad]
    raise ConfigError(
        f"target policy at {episode.episode!r} turn {turn} gave {rows[bad]!r}: not a probability vector over "
        f"the {n_models} pool models"
    )


def logged_actions(episodes: Sequence[LoggedEpisode], pool: Sequence[str]) -> np.ndarray:
    """Pool index of every logged turn's model, episode by episode."""
    index = {name: i for i, name in enumerate(pool)}
    for episode in episodes:
        for turn in episode.turns:
            if turn.model not in index:
                raise ConfigError(
                    f"logged model {turn.model!r} ({episode.episode!r} turn {turn.turn}) is not in the pool "
                    f"({', '.join(pool)})"
                )
    return np.array([index[t.model] for e in episodes for t in e.turns], dtype=np.int64)


def log_arrays(
    episodes: Sequence[LoggedEpisode],
    pool: Sequence[str],
    target: TargetPolicy,
    q: QFunction | None = None,
    clip: float | None = None,
    need_propensities: bool = True,
) -> LogArrays:
    if not episodes:
        raise ConfigError("off-policy evaluation needs at least one logged episode")
    empty = next((e for e in episodes if not e.turns), None)
    if empty is not None:
        raise ConfigError(f"episode {empty.episode!r} has no turns; there is no decision to evaluate")
    lengths = np.array([len(e.turns) for e in episodes])
    n, horizon = len(episodes), int(lengths.max())
    mask = np.arange(horizon)[None, :] < lengths[:, None]
    rows, cols = np.nonzero(mask)  # row-major: episode by episode, turn by turn, as the flat arrays below
    actions = logged_actions(episodes, pool)
    p = target_probabilities(episodes, target, len(pool))
    chosen = p[np.arange(len(actions)), actions]
    ratio = np.ones((n, horizon))
    if need_propensities:
        missing = [(e, t) for e in episodes for t in e.turns if t.propensity is None]
        if missing:
            episode, turn = missing[0]
            raise ConfigError(
                f"importance-weighted estimators need logged propensities; {len(missing)} turn(s) have none "
                f"(first: {episode.episode!r} turn {turn.turn} from {episode.source or '?'})"
            )
        ratio[rows, cols] = chosen / np.array([t.propensity for e in episodes for t in e.turns])
    score_reward, cost_reward = np.zeros((n, horizon)), np.zeros((n, horizon))
    score_reward[np.arange(n), lengths - 1] = [e.score for e in episodes]
    cost_reward[rows, cols] = [t.dollars for e in episodes for t in e.turns]
    q_taken: dict[str, np.ndarray] = {}
    v: dict[str, np.ndarray] = {}
    if q is not None:
        stacked = getattr(q, "stacked", None)  # (turns, models, 2) at once, if the value model can
        values = None if stacked is not None else [q(e, t) for e in episodes for t in range(len(e.turns))]
        tables = []
        for k, quantity in enumerate(("score", "cost")):
            if values is None:
                table = np.asarray(stacked(episodes)[..., k], dtype=np.float64)  # type: ignore[misc]
            else:
                table = np.array([np.asarray(getattr(x, quantity), dtype=np.float64) for x in values])
            if table.shape != p.shape:
                raise ConfigError(
                    f"value model gave {quantity} tables of shape {table.shape[1:]}, pool has {len(pool)}"
                )
            tables.append(table)
        q_taken, v = value_arrays(np.stack(tables, axis=-1), p, actions, mask)
    raw = np.cumprod(ratio, axis=1)
    weights = raw if clip is None else np.minimum(raw, clip)
    clipped = 0.0 if clip is None else float(np.sum((raw > clip) & mask) / np.sum(mask))
    previous = np.concatenate([np.ones((n, 1)), weights[:, :-1]], axis=1)
    return LogArrays(
        lengths, mask, weights, previous, score_reward, cost_reward, clipped, q_taken, v, p, actions
    )


def value_arrays(
    predictions: np.ndarray, p: np.ndarray, actions: np.ndarray, mask: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Q of the logged model and V under the target, as (episode, turn) arrays, from (turns, models, 2)."""
    rows, cols = np.nonzero(mask)
    q_taken, v = {}, {}
    for k, quantity in enumerate(("score", "cost")):
        table = predictions[..., k]
        q_taken[quantity], v[quantity] = np.zeros(mask.shape), np.zeros(mask.shape)
        q_taken[quantity][rows, cols] = table[np.arange(len(actions)), actions]
        v[quantity][rows, cols] = np.einsum("nm,nm->n", p, table)
    return q_taken, v


# Each estimator maps (arrays, quantity, counts) to one estimate per row of ``counts``: row b holds
# how often each episode appears in bootstrap resample b (the point estimate is a row of ones).


def _mean(per_episode: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return counts @ per_episode / counts.sum(axis=1)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _dm(a: LogArrays, quantity: str, counts: np.ndarray) -> np.ndarray:
    return _mean(a.v[quantity][:, 0], counts)


def _tis(a: LogArrays, quantity: str, counts: np.ndarray) -> np.ndarray:
    return _mean(a.terminal_weights * a.reward(quantity).sum(axis=1), counts)


def _wtis(a: LogArrays, quantity: str, counts: np.ndarray) -> np.ndarray:
    w = a.terminal_weights
    return _ratio(counts @ (w * a.reward(quantity).sum(axis=1)), counts @ w)


def _pdis(a: LogArrays, quantity: str, counts: np.ndarray) -> np.ndarray:
    return _mean((a.weights * a.reward(quantity)).sum(axis=1), counts)


def _wpdis(a: LogArrays, quantity: str, counts: np.ndarray) -> np.ndarray:
    per_turn = _ratio(counts @ (a.weights * a.reward(quantity)), counts @ a.weights)
    return per_turn.sum(axis=1)  # NaN if any turn has no weight left: undefined, not zero


def _dr(a: LogArrays, quantity: str, counts: np.ndarray) -> np.ndarray:
    terms = a.weights * (a.reward(quantity) - a.q_taken[quantity]) + a.previous * a.v[quantity]
    return _mean(np.where(a.mask, terms, 0.0).sum(axis=1), counts)


_ESTIMATOR_FUNCTIONS = {"dm": _dm, "tis": _tis, "wtis": _wtis, "pdis": _pdis, "wpdis": _wpdis, "dr": _dr}


def _ess(a: LogArrays, estimator: str, quantity: str) -> float:
    if estimator == "dm":
        return float(len(a.lengths))
    if quantity == "score" or estimator in ("tis", "wtis"):
        return kish_ess(a.terminal_weights)
    return min(kish_ess(a.weights[:, t]) for t in range(a.weights.shape[1]))


def bootstrap_counts(n: int, config: OPEConfig) -> list[np.ndarray]:
    """Resamples of n episodes as count matrices, in chunks; every estimator sees the same resamples."""
    rng = np.random.default_rng(config.seed)
    sizes = [
        min(_BOOTSTRAP_CHUNK, config.n_bootstrap - start)
        for start in range(0, config.n_bootstrap, _BOOTSTRAP_CHUNK)
    ]
    return [rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64) for size in sizes]


def _estimate(
    a: LogArrays,
    estimator: str,
    quantity: str,
    config: OPEConfig,
    outcome_range: tuple[float, float],
    resamples: list[np.ndarray],
    refit_draws: np.ndarray | None = None,
    interval: str = INTERVAL_EPISODES,
) -> Estimate:
    function = _ESTIMATOR_FUNCTIONS[estimator]
    n = len(a.lengths)
    value = float(function(a, quantity, np.ones((1, n)))[0])
    if refit_draws is None:
        draws = np.concatenate([function(a, quantity, counts) for counts in resamples])
    else:
        draws = refit_draws
    finite = draws[np.isfinite(draws)]
    tail = (1.0 - config.confidence) / 2.0
    if finite.size:
        boot_low, boot_high = (float(x) for x in np.quantile(finite, [tail, 1.0 - tail]))
    else:
        boot_low = boot_high = float("nan")
    ess = _ess(a, estimator, quantity)
    problems = []
    if not np.isfinite(value):
        problems.append("undefined: no logged episode has weight under the target policy")
    if ess < config.min_ess:
        problems.append(f"effective sample size {ess:.3g} of {n} episodes is below {config.min_ess:g}")
    undefined = 1.0 - finite.size / draws.size
    if undefined > 1.0 - config.confidence:
        problems.append(f"{undefined:.0%} of bootstrap resamples leave it undefined")
    low, high = boot_low, boot_high
    warning = None
    if problems:
        low = float(np.nanmin([boot_low, outcome_range[0]]))
        high = float(np.nanmax([boot_high, outcome_range[1]]))
        warning = f"{estimator} {quantity} estimate not to be trusted: {'; '.join(problems)}"
        log.warning("%s; reporting the interval [%g, %g]", warning, low, high)
    return Estimate(
        estimator=estimator,
        quantity=quantity,
        value=value,
        low=low,
        high=high,
        bootstrap_low=boot_low,
        bootstrap_high=boot_high,
        ess=ess,
        n_episodes=n,
        clip=config.clip,
        clipped_fraction=a.clipped_fraction,
        trusted=not problems,
        warning=warning,
        interval=interval,
    )


def refit_draws(
    a: LogArrays, refit: Refit, estimators: Sequence[str], config: OPEConfig
) -> tuple[dict[tuple[str, str], np.ndarray], str]:
    """Each (estimator, quantity)'s bootstrap draws with the value model refit on every resample."""
    rng = np.random.default_rng([config.seed, 1])  # its own stream: the episode resamples stay as they are
    n = len(a.lengths)
    assert a.target is not None and a.actions is not None
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=config.refit_resamples).astype(np.float64)
    draws: dict[tuple[str, str], list[float]] = {(e, q): [] for e in estimators for q in ("score", "cost")}
    for start in range(0, len(counts), _REFIT_CHUNK):
        chunk = counts[start : start + _REFIT_CHUNK]
        for row, predictions in zip(chunk, refit(chunk), strict=True):
            q_taken, v = value_arrays(predictions, a.target, a.actions, a.mask)
            resampled = LogArrays(**{**a.__dict__, "q_taken": q_taken, "v": v})
            for (estimator, quantity), out in draws.items():
                out.append(float(_ESTIMATOR_FUNCTIONS[estimator](resampled, quantity, row[None, :])[0]))
    label = f"episode bootstrap, value model refit on each of {config.refit_resamples} resamples"
    return {k: np.array(v) for k, v in draws.items()}, label


def evaluate_policy(
    episodes: Sequence[LoggedEpisode],
    pool: Sequence[str],
    target: TargetPolicy,
    estimators: Sequence[str] = ("tis", "wtis", "pdis", "wpdis"),
    q: QFunction | None = None,
    config: OPEConfig = OPEConfig(),
    score_range: tuple[float, float] | None = None,
    refit: Refit | None = None,
    q_interval: str = INTERVAL_EPISODES,
) -> dict[str, PolicyEstimate]:
    """Each requested estimator's score and cost estimate of ``target`` on ``episodes``.

    ``pool`` orders the probability vectors of ``target`` and ``q``; ``score_range`` is the
    benchmark's score range, used to widen untrusted intervals (default: the logged range).
    ``refit`` refits ``q`` on a resample's episode weights: with it (and ``refit_resamples``
    above 0) the dm and dr intervals refit the model on every resample; without it they say
    ``q_interval`` (e.g. that they are conditional on a model that cannot be refit).
    """
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise ConfigError(f"unknown estimator {unknown[0]!r}; known: {', '.join(ESTIMATORS)}")
    if q is None and NEEDS_Q.intersection(estimators):
        raise ConfigError(
            f"estimators {', '.join(sorted(NEEDS_Q.intersection(estimators)))} need a value model q"
        )
    arrays = log_arrays(
        episodes,
        pool,
        target,
        q,
        config.clip,
        need_propensities=bool(NEEDS_PROPENSITIES.intersection(estimators)),
    )
    scores = [e.score for e in episodes]
    ranges = {
        "score": score_range or (min(scores), max(scores)),
        "cost": (0.0, max(e.cost for e in episodes)),
    }
    resamples = bootstrap_counts(len(episodes), config)
    with_q = [e for e in estimators if e in NEEDS_Q]
    refitted: dict[tuple[str, str], np.ndarray] = {}
    if refit is not None and config.refit_resamples and with_q:
        refitted, q_interval = refit_draws(arrays, refit, with_q, config)
    return {
        name: PolicyEstimate(
            name,
            *(
                _estimate(
                    arrays,
                    name,
                    quantity,
                    config,
                    ranges[quantity],
                    resamples,
                    refitted.get((name, quantity)),
                    q_interval if name in NEEDS_Q else INTERVAL_EPISODES,
                )
                for quantity in ("score", "cost")
            ),
        )
        for name in estimators
    }


# ---------------------------------------------------------------------------------------------
# Fitted-Q evaluation: a value model for DM and DR when the router has none.


@dataclass(frozen=True)
class FQEConfig:
    ridge: float = 1.0  # L2 penalty on the feature weights (the intercept is not penalised)
    iterations: int | None = None  # Bellman backups; None: the longest episode's length
    tolerance: float = 1e-9  # stop early when no prediction on a logged state moves more than this

    def __post_init__(self) -> None:
        if not self.ridge > 0:
            raise ConfigError(f"FQE ridge must be positive, got {self.ridge}")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"FQE iterations must be at least 1, got {self.iterations}")


class FittedQ:
    """Per-model ridge regressions of (score, cost-to-go) on a state's feature vector."""

    def __init__(
        self, pool: Sequence[str], coefficients: np.ndarray, features: FeatureFunction, iterations: int
    ):
        self.pool = list(pool)
        self.coefficients = coefficients  # (models, features + 1, 2): the last feature row is the intercept
        self.features = features
        self.iterations = iterations  # backups actually run

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(rows, models, 2) predictions for feature rows ``x`` (without the intercept column)."""
        x = np.concatenate([np.atleast_2d(x), np.ones((np.atleast_2d(x).shape[0], 1))], axis=1)
        return np.tensordot(x, self.coefficients, axes=([1], [1]))  # (rows, models, 2)

    def __call__(self, episode: LoggedEpisode, turn: int) -> ActionValues:
        values = self.predict(np.asarray(self.features(episode, turn), dtype=np.float64))[0]
        return ActionValues(score=values[:, 0], cost=values[:, 1])


class FQEProblem:
    """What fitted-Q evaluation needs, computed once, so the fit can be repeated on reweighted episodes
    (the bootstrap refits it on every resample, many resamples at once).

    Each backup is a ridge regression per logged model (rows weighted by their episode's
    count in the resample). The Gram matrices do not change between backups, only the
    targets, so a backup is two matrix products over all resamples and one batched solve
    of (features + 1)-square systems.
    """

    def __init__(
        self,
        episodes: Sequence[LoggedEpisode],
        pool: Sequence[str],
        target: TargetPolicy,
        features: FeatureFunction,
        config: FQEConfig = FQEConfig(),
    ):
        if not any(e.turns for e in episodes):
            raise ConfigError("FQE needs at least one logged turn")
        self.pool, self.features, self.config = list(pool), features, config
        self.lengths = np.array([len(e.turns) for e in episodes])
        self.actions = logged_actions(episodes, pool)
        self.pi = target_probabilities(episodes, target, len(pool))
        x = np.stack(
            [np.asarray(features(e, t), dtype=np.float64) for e in episodes for t in range(len(e.turns))]
        )
        self.x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
        rewards, next_rows = [], []
        for episode in episodes:
            start = len(next_rows)
            for t, turn in enumerate(episode.turns):
                last = t == len(episode.turns) - 1
                rewards.append((episode.score if last else 0.0, turn.dollars))
                next_rows.append(-1 if last else start + t + 1)
        self.rewards, self.next = np.array(rewards), np.array(next_rows)
        self.iterations = config.iterations or int(self.lengths.max())
        self.penalty = config.ridge * np.eye(self.x.shape[1])
        self.penalty[-1, -1] = 0.0  # the intercept is not penalised

    def fit(self, episode_weights: np.ndarray | None = None) -> FittedQ:
        """The fit with each episode's turns counted ``episode_weights[i]`` times (None: once each)."""
        weights = (
            np.ones((1, len(self.lengths))) if episode_weights is None else np.atleast_2d(episode_weights)
        )
        coefficients, backups = self.fit_many(weights)
        return FittedQ(self.pool, coefficients[0], self.features, backups)

    def fit_many(self, episode_weights: np.ndarray) -> tuple[np.ndarray, int]:
        """Coefficients (resamples, models, features + 1, 2) for each row of episode weights, and the backups run.

        A model with no weighted row in a resample gets that resample's regression over all rows.
        The products are small (features + 1 columns), so BLAS runs on one thread: on two shared
        cores its threads cost 50 times what they save (measured: 87 ms against 1.5 ms per backup).
        """
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            return self._fit_many(episode_weights)

    def _fit_many(self, episode_weights: np.ndarray) -> tuple[np.ndarray, int]:
        x, rows, (b, m) = self.x, len(self.x), (len(episode_weights), len(self.pool))
        f = x.shape[1]
        w = np.repeat(np.asarray(episode_weights, dtype=np.float64), self.lengths, axis=1)  # (B, rows)
        chosen = np.zeros((m + 1, rows))  # one row per model and a last one for the pooled regression
        chosen[self.actions, np.arange(rows)] = 1.0
        chosen[m] = 1.0
        rw = (w[:, None, :] * chosen[None]).reshape(b * (m + 1), rows)
        outer = (x[:, :, None] * x[:, None, :]).reshape(rows, f * f)
        gram = (rw @ outer).reshape(b, m + 1, f, f) + self.penalty
        present = rw.sum(axis=1).reshape(b, m + 1) > 0
        gram[~present] = np.eye(f)  # a regression without rows is replaced by the pooled one below
        absent = ~present[:, :m]
        has_next = self.next >= 0
        following = self.next[has_next]
        pi_next = self.pi[following][None, :, :, None]  # (1, next rows, m, 1)
        # The rows of each regression (each model's, then all), features transposed, for X^T W y.
        groups = [np.flatnonzero(self.actions == a) for a in range(m)] + [np.arange(rows)]
        x_t = [x[g].T for g in groups]
        coefficients = np.zeros((b, m, f, 2))
        predictions = np.zeros((b, rows, m, 2))
        backups = 0
        while backups < self.iterations:
            backups += 1
            y = np.broadcast_to(self.rewards, (b, rows, 2)).copy()
            y[:, has_next] += (pi_next * predictions[:, following]).sum(axis=2)
            wy = (w[:, :, None] * y).transpose(1, 0, 2).reshape(rows, b * 2)
            rhs = np.stack([(xt @ wy[g]).reshape(f, b, 2) for xt, g in zip(x_t, groups, strict=True)], axis=1)
            solved = np.linalg.solve(gram, rhs.transpose(2, 1, 0, 3))  # (B, m + 1, f, 2)
            coefficients = solved[:, :m].copy()
            coefficients[absent] = np.broadcast_to(solved[:, m : m + 1], coefficients.shape)[absent]
            updated = (x @ coefficients.transpose(2, 0, 1, 3).reshape(f, b * m * 2)).reshape(rows, b, m, 2)
            updated = updated.transpose(1, 0, 2, 3)
            moved = float(np.max(np.abs(updated - predictions)))
            predictions = updated
            if moved < self.config.tolerance:
                break
        return coefficients, backups

    def refit(self) -> Refit:
        """:data:`Refit` for :func:`evaluate_policy`: the fit on each resample, predicted at every logged state."""
        x = self.x

        def refit(episode_weights: np.ndarray) -> np.ndarray:
            coefficients, _ = self.fit_many(episode_weights)
            b, m, f, _ = coefficients.shape
            flat = x @ coefficients.transpose(2, 0, 1, 3).reshape(f, b * m * 2)
            return flat.reshape(len(x), b, m, 2).transpose(1, 0, 2, 3)

        return refit


def fit_fqe(
    episodes: Sequence[LoggedEpisode],
    pool: Sequence[str],
    target: TargetPolicy,
    features: FeatureFunction,
    config: FQEConfig = FQEConfig(),
) -> FittedQ:
    r"""Fitted-Q evaluation of ``target``: repeated Bellman backups, each a ridge fit per model.

    Backup *k* regresses :math:`r_t + \sum_{a'} \pi(a' \mid h_{t+1}) \hat Q_{k-1}(h_{t+1}, a')` on the
    features of :math:`h_t`, separately for each logged model; after *k* backups the terminal
    score has propagated *k* turns back, so the default runs as many as the longest episode
    has turns. One regression serves every turn, so ``features`` should say where in the
    episode the state is (the turn index, or the fraction of the turn limit used). A model
    never logged gets the regression over all turns, whatever was chosen: a prior, no more.
    """
    return FQEProblem(episodes, pool, target, features, config).fit()
