"""The configuration: every file and option a user writes, its schema, its defaults and its rules, in one module.

Two schemas live here: :class:`RunConfig` (one batch, what ``harness run`` plays and ``config.json``
records) and :class:`BenchmarkDef` (a benchmark definition under ``benchmarks/``, which builds run
configs stage by stage). A default is written once, on the dataclass field; a definition takes the
run config's defaults for what they share, and the CLI has none of its own: it overlays the options a
user gave on these (:func:`run_config`, :class:`BenchmarkOptions`).

Reading is strict. YAML with a duplicate key is refused naming the key and both lines
(:func:`load_yaml`); the data is then validated by pydantic against the dataclass's annotations in
strict mode (no "2" for 2, no 1 for true, no NaN or infinity for a number, no unknown key), and each
cross-field rule is checked once, in ``__post_init__``, whether the object comes from a file or from
code. Every problem is a one-line :class:`ConfigError` naming the file and the field, raised before any
work starts. The same validation checks router parameters against a constructor's annotations
(:func:`coerce`), and :func:`json_schemas` publishes the schemas for editors (``benchmarks/schema/``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic
import yaml

from harness.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from harness.pool import Pool
    from harness.splits import Split

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
SCHEMA_DIR = BENCHMARKS_DIR / "schema"

# What plays a batch's episodes (harness.executors): this machine's worker processes, or actors on Ray.
Executor = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = typing.get_args(Executor)
Backend = Literal["simulated", "litellm"]
# The lambda search range of a tune stage that names none.
DEFAULT_LAM_RANGE = (0.0, 5.0)


class RuleError(ConfigError, ValueError):
    """A rule of a configuration dataclass, broken at construction. A ValueError too, so that the
    validator reading a file reports the path of the object that broke it."""


# -- one batch ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Per-episode limits; a field left None takes the benchmark plug-in's (the reference's) value."""

    max_turns: int | None = None
    budget_dollars: float | None = None

    def __post_init__(self) -> None:
        if self.max_turns is not None and self.max_turns <= 0:
            raise RuleError(f"limits.max_turns must be positive, got {self.max_turns}")
        if self.budget_dollars is not None and not self.budget_dollars > 0:
            raise RuleError(f"limits.budget_dollars must be positive, got {self.budget_dollars}")

    def over(self, default: Limits) -> Limits:
        """These limits with every unset field taken from ``default``."""
        return Limits(
            max_turns=default.max_turns if self.max_turns is None else self.max_turns,
            budget_dollars=default.budget_dollars if self.budget_dollars is None else self.budget_dollars,
        )


@dataclass(frozen=True)
class RouterSpec:
    """A router by registry name plus its constructor parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.params.get("label") or (
            f"{self.name}:{self.params['model']}" if "model" in self.params else self.name
        )


@dataclass(frozen=True)
class RunConfig:
    """One batch: one router over one split with one pool. A run directory holds exactly one.

    ``limits`` None means the benchmark's own; ``split_file`` None its shipped split;
    ``split`` ``any`` is every split's tasks together; ``variation`` plays only that variation
    of each task the split and ``task_filter`` select (``harness episode``);
    ``judge`` names the pool model a judge-based scorer calls; ``repeats`` plays each
    variation that many times, each play with its own episode seed (:class:`TaskInstance`).
    ``executor`` says where the episodes are played (see :data:`EXECUTORS`); ``prefix_cache`` is a
    directory where the engine prefix cache lives (:mod:`harness.replay.prefix_store`), None: no
    cache. ``constrained`` turns on constrained decoding where the benchmark's format offers it (the
    reply limited by a JSON schema sent as the request's ``response_format``; a real backend only).
    Neither ``executor`` nor ``prefix_cache`` changes what is recorded, so both are left out of the run's config snapshot
    (:data:`UNRECORDED_FIELDS`): a run may be resumed on another executor, with or without the cache.
    """

    router: RouterSpec = field(default_factory=lambda: RouterSpec("random"))
    pool: str = "paper6"
    benchmark: str = "scienceworld"
    split: str = "test_id"
    split_file: str | None = None
    quick: bool = False
    task_filter: str | None = None
    variation: int | None = None
    seed: int = 0
    workers: int = 1
    limits: Limits | None = None
    backend: Backend = "simulated"
    judge: str | None = None
    repeats: int = 1
    executor: Executor = "local"
    prefix_cache: str | None = None
    constrained: bool = False

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise RuleError(f"repeats must be >= 1, got {self.repeats}")
        if self.workers < 1:
            raise RuleError(f"workers must be >= 1, got {self.workers}")
        if self.variation is not None and self.variation < 0:
            raise RuleError(f"variation must be >= 0, got {self.variation}")
        if self.constrained and self.backend != "litellm":
            raise RuleError("constrained decoding needs a real backend (backend: litellm)")
        if self.constrained and self.prefix_cache is not None:
            raise RuleError(
                "constrained decoding reads the live engine's valid actions: turn off the prefix cache"
            )


UNRECORDED_FIELDS = frozenset({"prefix_cache", "executor"})


def recorded(config: RunConfig) -> dict[str, Any]:
    """The config as a run directory records it: every field that can change its episodes (``repeats``
    only when above 1, ``variation`` only when set and ``constrained`` only when on, so run directories written before they existed
    hold the same run)."""
    run = {k: v for k, v in to_plain(config).items() if k not in UNRECORDED_FIELDS}
    if config.repeats == 1:
        del run["repeats"]
    if config.variation is None:
        del run["variation"]
    if not config.constrained:
        del run["constrained"]
    return run


def snapshot(config: RunConfig, pool: Pool, split: Split | None = None, **more: Any) -> dict[str, Any]:
    """A run directory's ``config.json``: the recorded config, the pool's hash and price cards and, for a
    run played on a split, the split's version and the engine's fingerprint; ``more`` adds what only some
    runs have (a branch design, ``served``). What a run directory records is written here only, so a
    batch, a branch collection and a server record one run alike."""
    from harness.benchmarks import get_benchmark  # the plug-ins import this module

    written: dict[str, Any] = {
        "run": recorded(config),
        "pool_sha256": pool.sha256,
        "price_cards": {m.name: to_plain(m.price) for m in pool.spec.models},
    }
    if split is not None:
        written["split_version"] = split.version
        written["engine"] = get_benchmark(config.benchmark).fingerprint()
    return written | more


def resolve(config: RunConfig) -> RunConfig:
    """The config with the benchmark plug-in's limits in every limit left unset: what a batch plays."""
    return replace(config, limits=resolved_limits(config.limits, config.benchmark))


def resolved_limits(limits: Limits | None, benchmark: str) -> Limits:
    """``limits`` (None: none set) with every unset field taken from ``benchmark``'s plug-in: what an
    episode of it is played, served or replayed under."""
    from harness.benchmarks import get_benchmark  # the plug-ins import this module

    return (limits or Limits()).over(get_benchmark(benchmark).limits)


def run_config(file: Path | None = None, **options: Any) -> RunConfig:
    """The effective configuration of a batch, as its ``config.json`` records it.

    :class:`RunConfig`'s defaults, overlaid by the YAML ``file``'s values (if any), overlaid by every
    option given (None: not given), with each limit still unset taken from the benchmark plug-in.
    ``options`` are RunConfig's fields, with ``max_turns`` and ``budget_dollars`` for the limits and
    ``router`` (a name) and ``params`` for the router. Parameters add to the file's router's, unless
    ``router`` names another router: the file's parameters were for its own.
    """
    where = str(file or "options")
    data = load_yaml(file) if file is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    given = {k: v for k, v in options.items() if v is not None}
    limits = {k: given.pop(k) for k in ("max_turns", "budget_dollars") if k in given}
    name, params = given.pop("router", None), given.pop("params", None) or {}
    for key, changed in (("limits", limits), ("router", name or params)):
        if changed and not isinstance(data.get(key) or {}, dict):
            raise ConfigError(f"{where}.{key}: expected a mapping, got {data[key]!r}")
    if limits:
        data["limits"] = {**(data.get("limits") or {}), **limits}
    if name or params:
        router = data.get("router") or {}
        if not router or (name is not None and name != router.get("name")):
            router = {"name": name or RunConfig().router.name}
        if not isinstance(router.get("params") or {}, dict):
            raise ConfigError(f"{where}.router.params: expected a mapping, got {router['params']!r}")
        data["router"] = {**router, "params": {**(router.get("params") or {}), **params}}
    return resolve(from_dict(RunConfig, {**data, **given}, where))


# -- a benchmark definition --------------------------------------------------------------------------


@dataclass(frozen=True)
class BranchDesign:
    """Counterfactual branches of Stage A's episodes (:mod:`harness.branching`): where to branch, what
    to try there, and how every branch is finished.

    ``episodes`` parent episodes are branched (a seeded uniform sample; None: all);
    ``states_per_episode`` turns are drawn per parent episode, uniformly without
    replacement; at each, ``models`` candidates (None: the whole pool) are drawn
    uniformly without replacement; ``continuation`` plays every branch from the turn
    after the branched one to the end; ``prefix`` is how the state is restored (``log``:
    the history from the turn lines, no model called; ``calls``: every prefix turn asked
    again and checked); ``seed`` fixes the draws of the design.
    """

    continuation: RouterSpec = field(default_factory=lambda: RouterSpec("random"))
    episodes: int | None = None
    states_per_episode: int = 1
    models: int | None = None
    prefix: str = "log"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.episodes is not None and self.episodes < 1:
            raise RuleError(f"branch: episodes must be >= 1, got {self.episodes}")
        if self.states_per_episode < 1:
            raise RuleError(f"branch: states_per_episode must be >= 1, got {self.states_per_episode}")
        if self.models is not None and self.models < 2:
            raise RuleError(f"branch: models must be >= 2 (a branch point needs siblings), got {self.models}")
        if self.prefix not in ("log", "calls"):
            raise RuleError(f"branch: prefix must be one of log, calls, got {self.prefix!r}")


DEFAULT_KEY_ENV = "HARNESS_SERVE_API_KEY"


@dataclass(frozen=True)
class ServeConfig:
    """What ``harness serve`` runs: a router over a pool, its run directory, and how it listens.

    ``limits`` left unset take the benchmark's, as in ``harness run``; ``benchmark`` is what the
    router and the recorded episodes are told the traffic is (a request's ``metadata`` may say
    otherwise per session). ``client_key_env`` names the variable holding the key clients must send;
    unset or empty, no key is asked, which only a loopback host allows.
    """

    router: RouterSpec
    out: Path
    pool: str = RunConfig.pool
    benchmark: str = RunConfig.benchmark
    seed: int = 0
    limits: Limits = field(default_factory=Limits)
    host: str = "127.0.0.1"
    port: int = 8000
    client_key_env: str = DEFAULT_KEY_ENV
    idle_timeout_s: float = 600.0
    drain_s: float = 30.0

    def run_config(self) -> RunConfig:
        """The run directory's config as ``harness run`` would record it (split "served", backend litellm)."""
        return RunConfig(router=self.router, pool=self.pool, benchmark=self.benchmark, split="served",
                         seed=self.seed, limits=self.limits, backend="litellm")  # fmt: skip


@dataclass(frozen=True)
class CollectStage:
    """Exploration data for training (Stage A): ``router`` over ``split``, one batch per seed.

    Sticky-random by default (a uniform draw that keeps its model with probability 1 - switch_prob
    each turn), as every shipped definition uses: under uniform per-turn exploration a decision's
    return mostly reflects a random continuation, not the model chosen (``routers.baselines``).
    """

    router: RouterSpec = field(default_factory=lambda: RouterSpec("sticky-random"))
    split: str = "train"
    quick: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])
    branch: BranchDesign | None = None  # also branch each seed's episodes, the design seed shifted by it


@dataclass(frozen=True)
class LearnedRouter:
    name: str  # a trainable router family (see `harness routers`)
    params: dict[str, Any] = field(default_factory=dict)  # training hyperparameters
    lambdas: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0])


@dataclass(frozen=True)
class StageB:
    """Beta-mixed collection with a trained router, then warm-started retraining on A + B."""

    family: str = "mtrouter"
    beta: float = 0.5
    lam: float = 0.5
    split: str = "train"
    quick: bool = False
    seeds: list[int] = field(default_factory=lambda: [1])


@dataclass(frozen=True)
class TuneStage:
    trials: int = 8
    lam_range: tuple[float, float] = DEFAULT_LAM_RANGE
    split: str = "val"
    quick: bool = True
    budget_per_episode: float | None = None


def _check_rule(rule: str, margin: float | None, where: str) -> None:
    from harness.results import MARGIN_RULES, SELECTION_RULES  # results imports this module

    if rule not in SELECTION_RULES:
        raise RuleError(f"{where}.rule {rule!r} is not one of {', '.join(SELECTION_RULES)}")
    if rule in MARGIN_RULES and (margin is None or margin < 0):
        raise RuleError(f"{where}.rule {rule} needs {where}.margin, a score margin >= 0")
    if rule not in MARGIN_RULES and margin is not None:
        raise RuleError(f"{where}.margin applies to rule {' or '.join(MARGIN_RULES)}, not {rule}")


@dataclass(frozen=True)
class SelectionRule:
    """A rule reported beside the headline one (``select.also``): it chooses from the same val runs, its
    points are played on the same test splits, and the report gives its verdict too, so two rules are
    compared on one set of episodes instead of on two runs' draws."""

    rule: str
    margin: float | None = None
    splits: list[str] | None = None  # the eval splits its points are played on; None: all of them

    def __post_init__(self) -> None:
        _check_rule(self.rule, self.margin, "select.also")

    @property
    def key(self) -> str:
        from harness.results import rule_key

        return rule_key(self.rule, self.margin)


@dataclass(frozen=True)
class SelectStage:
    """How each learned family's headline operating point is chosen, before any test split is seen.

    The candidates are the family's fixed grid (``lambdas``) plus the tune stage's trial
    points when it tunes on the same split, all run on ``split``; the single-model routers
    run there too, since the rules compare with the best of them on that split.
    Rules: see :func:`harness.results.select_point`. ``repeats`` plays each variation of
    ``split`` that many times (each play its own episode seed), so a lambda is chosen on
    the mean over those plays rather than on one draw of each; ``margin`` (score points)
    is the non-inferiority margin of ``cheapest_noninferior`` and ``cheapest_bound_noninferior``.
    ``also``: further rules whose choices are evaluated and given a verdict beside the headline's.
    """

    rule: str = "cheapest_reaching_best_single"
    split: str = "val"
    quick: bool = False
    repeats: int = 1
    margin: float | None = None
    also: list[SelectionRule] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_rule(self.rule, self.margin, "select")
        if self.split.startswith("test"):
            raise RuleError(f"select.split {self.split!r} is a test split: select on val")
        if self.repeats < 1:
            raise RuleError(f"select.repeats must be >= 1, got {self.repeats}")
        keys = [r.key for r in self.rules]
        if len(set(keys)) != len(keys):
            raise RuleError(f"select.also repeats a rule: {', '.join(keys)}")

    @property
    def rules(self) -> list[SelectionRule]:
        """Every rule whose choice is evaluated, the headline one first (played on every eval split)."""
        return [SelectionRule(self.rule, self.margin), *self.also]


@dataclass(frozen=True)
class VerdictSpec:
    """The non-inferiority question the report answers for each learned family.

    Is the family's val-selected point at most ``margin`` score points worse than the best
    single model (best by its val score) on each test split? It is non-inferior when the
    95% interval of the paired score difference has its lower bound above ``-margin``.
    Points are the benchmark's score units; unset, the benchmark's default margin (5 on
    ScienceWorld's -100..100, 0.05 on HLE's accuracy).
    """

    margin: float | None = None
    # warn | refuse: what the benchmark does when, before any test episode, the power plan says a judged
    # family as good as the best single model would not be shown non-inferior with probability 0.8
    power: Literal["warn", "refuse"] = "warn"
    # the families whose verdict is the benchmark's claim, named before any test episode is played;
    # every other family's row is exploratory. None: every learned family is judged
    judged: list[str] | None = None
    # the least spread (sd, score units) of a family's selected point between training seeds that the
    # power plan assumes, e.g. measured by an earlier benchmark; the plan takes the larger of it and the
    # spread the replicates' val runs show, which a small val split can hide. None: the val estimate only
    seed_sd: float | None = None

    def __post_init__(self) -> None:
        if self.margin is not None and self.margin < 0:
            raise RuleError(f"verdict.margin must be >= 0, got {self.margin}")
        if self.seed_sd is not None and self.seed_sd < 0:
            raise RuleError(f"verdict.seed_sd must be >= 0, got {self.seed_sd}")


@dataclass(frozen=True)
class BenchmarkDef:
    """A benchmark definition: what to collect, train, tune, select and evaluate, and on what.

    What it shares with :class:`RunConfig` (benchmark, pool, quick, seed, workers, executor, ...) has the
    run config's default; ``limits`` and ``reference_point`` default to the plug-in's. ``eval_quick``
    overrides ``quick`` per eval split, ``eval_split_repeats`` ``eval_repeats``; ``eval_grid`` False evaluates learned families only at their
    selected lambda; ``eval_fixed`` ``val_best_single`` plays on the eval splits only the val-best single
    model (the verdict's reference) besides the fixed routers that are not single models;
    ``trace_episodes`` is ``all``, ``none`` or the fraction of episodes traced in MLflow;
    ``prefix_cache`` serves repeated engine prefixes from ``RESULTS/<name>/prefix-cache/``.
    """

    name: str
    fixed_routers: list[RouterSpec]
    learned: list[LearnedRouter] = field(default_factory=list)
    collect: CollectStage = field(default_factory=CollectStage)
    stage_b: StageB | None = None
    tune: TuneStage | None = None
    select: SelectStage | None = None
    seeds: list[int] | None = None  # repeat exploration, training, selection and evaluation per seed
    benchmark: str = RunConfig.benchmark
    pool: str = RunConfig.pool
    split_file: str | None = RunConfig.split_file
    judge: str | None = RunConfig.judge
    eval_splits: list[str] = field(default_factory=lambda: ["test_id", "test_ood"])
    eval_quick: dict[str, bool] = field(default_factory=dict)
    eval_grid: bool = True
    eval_repeats: int = RunConfig.repeats  # plays of each test variation, each with its own episode seed
    eval_split_repeats: dict[str, int] = field(default_factory=dict)
    eval_fixed: Literal["all", "val_best_single"] = "all"
    verdict: VerdictSpec = field(default_factory=VerdictSpec)
    trace_episodes: str | float = "all"
    prefix_cache: bool = False
    quick: bool = RunConfig.quick
    seed: int = RunConfig.seed
    workers: int = RunConfig.workers
    executor: Executor = RunConfig.executor  # ``harness benchmark --executor`` overrides it
    backend: Backend = (
        RunConfig.backend
    )  # simulated | litellm (real models: a pool's providers or local servers)
    constrained: bool = RunConfig.constrained  # constrained decoding where the format offers it
    limits: Limits | None = None
    reference_point: dict[str, float] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        labels = [r.label for r in self.fixed_routers]
        if len(set(labels)) != len(labels):
            raise RuleError("two fixed routers share a label")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise RuleError("seeds must be a non-empty list of distinct seeds")
        if self.workers < 1:
            raise RuleError(f"workers must be >= 1, got {self.workers}")
        if self.eval_repeats < 1:
            raise RuleError(f"eval_repeats must be >= 1, got {self.eval_repeats}")
        for key in ("eval_quick", "eval_split_repeats"):
            unknown = set(getattr(self, key)) - set(self.eval_splits)
            if unknown:
                raise RuleError(f"{key} names {sorted(unknown)[0]!r}, which is not an eval split")
        for split, plays in self.eval_split_repeats.items():
            if plays < 1:
                raise RuleError(f"eval_split_repeats.{split} must be >= 1, got {plays}")
        if self.stage_b is not None and self.stage_b.family not in {x.name for x in self.learned}:
            raise RuleError(
                f"stage_b.family {self.stage_b.family!r} is not a learned router of this benchmark"
            )
        t, s = self.tune, self.select
        if t is not None and s is not None and t.split == s.split and t.quick != s.quick:
            raise RuleError(f"tune and select run on {t.split} with different quick settings")
        if not self.eval_grid and s is None and t is None:
            raise RuleError("eval_grid: false needs a select or tune stage to choose the lambda")
        stray = sorted(set(self.verdict.judged or ()) - {x.name for x in self.learned})
        if stray:
            raise RuleError(f"verdict.judged names {stray[0]!r}, which is not a learned family here")
        if self.eval_fixed == "val_best_single" and s is None:
            raise RuleError(
                "eval_fixed: val_best_single needs a select stage to find the val-best single model"
            )
        if s is None:
            return
        if s.split in self.eval_splits and s.repeats != self.eval_split_repeats.get(
            s.split, self.eval_repeats
        ):
            raise RuleError(f"{s.split} is selected on and evaluated with different repeats")
        for also in s.also:
            stray = sorted(set(also.splits or ()) - set(self.eval_splits))
            if stray:
                raise RuleError(f"select.also rule {also.key} names {stray[0]!r}, which is not an eval split")
        comparing = [r.rule for r in s.rules if r.rule != "highest_val_score"]
        if comparing and not any(r.name == "single" for r in self.fixed_routers):
            raise RuleError(f"select.rule {comparing[0]} compares with single-model routers; add one")


def load_benchmark(name_or_path: str) -> BenchmarkDef:
    """A definition by name (``benchmarks/<name>.yaml``) or by the path of a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = BENCHMARKS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in BENCHMARKS_DIR.glob("*.yaml"))
            raise UnknownNameError(f"unknown benchmark {name_or_path!r} (known: {', '.join(known)})")
    return from_dict(BenchmarkDef, load_yaml(path), str(path))


@dataclass(frozen=True)
class BenchmarkOptions:
    """How ``harness benchmark`` runs a definition: where it writes, logs and plays. None of these
    changes a result, so none is part of the definition or of any stored file (a URL may hold a password).

    ``executor`` None plays where the definition says; ``prefix_cache`` overrides the definition's
    cache directory; ``tracking_uri`` names an MLflow server to log to instead of the results' own
    store, ``tuning_storage`` an Optuna storage URL instead of ``optuna.db`` in the results.
    """

    definition: str = "quick"
    results: Path = Path("results")
    reports: Path = Path("reports")
    track: bool = True
    prefix_cache: Path | None = None
    tracking_uri: str | None = None
    tuning_storage: str | None = None
    executor: Executor | None = None
    ray_address: str | None = None


def benchmark_options(**options: Any) -> BenchmarkOptions:
    """:class:`BenchmarkOptions`' defaults overlaid by every option given (None: not given)."""
    given = {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if v is not None}
    return from_dict(BenchmarkOptions, given, "options")


# -- reading ------------------------------------------------------------------------------------------

# Strict: no type coercion from strings or booleans, no NaN or infinity, no key the dataclass lacks.
STRICT = pydantic.ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


@functools.cache
def _adapter(hint: Any) -> pydantic.TypeAdapter:
    """A strict validator of ``hint``, held as the one field of a model so that the strict config
    reaches every dataclass nested in it."""
    holder = pydantic.create_model("Input", __config__=STRICT, value=(hint, ...))
    return pydantic.TypeAdapter(holder)


def _validate(hint: Any, value: Any, where: str) -> Any:
    """``value`` validated against ``hint`` in JSON mode, or a one-line ConfigError naming ``where`` and
    the field. JSON mode because a file's data has no Python types: strict validation of Python input
    would want dataclass instances where a file has mappings. A YAML value JSON lacks (a date) is read
    as its text."""
    try:
        text = json.dumps({"value": value}, default=str)
    except ValueError:  # a circular structure
        raise ConfigError(f"{where}: not plain data") from None
    try:
        return _adapter(hint).validate_json(text).value
    except pydantic.ValidationError as exc:
        raise ConfigError(_message(exc.errors()[0], value, hint, where)) from None
    except ConfigError as exc:  # raised by a dataclass's __post_init__ other than as a RuleError
        raise ConfigError(f"{where}: {exc}") from None


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Dataclass ``cls`` built from plain YAML data, validated strictly; errors name ``where``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    return _validate(cls, data, where)


def coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against (and, int to float, converted to) annotation ``hint``; ``where`` prefixes
    errors. A value that is not plain data (an object a caller passed in code) must be of ``hint``."""
    if hint is Any:
        return value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        if isinstance(hint, type) and not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {describe(hint)}, got {value!r}") from None
        return value
    return _validate(hint, value, where)


_EXPECTED = {float: "a finite number", int: "an integer", str: "a string", bool: "true or false"}


def describe(hint: Any) -> str:
    """A type annotation as a user reads it in an error: ``float`` is "a finite number (float)"."""
    if hint in _EXPECTED:
        return f"{_EXPECTED[hint]} ({hint.__name__})"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _message(error: Any, data: Any, hint: Any, where: str) -> str:
    """One pydantic error as one line: the field's path (list items by name where they have one, as a
    pool's models), then what was wrong with it."""
    loc = list(error["loc"][1:])  # past the holder's field
    kind = error["type"]
    if kind in ("missing", "missing_argument", "unexpected_keyword_argument", "extra_forbidden"):
        *loc, key = loc
    path, node, owner = where, data, _optional(hint)
    for part in loc:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and isinstance(node[part], dict) else None
            path += f"[{name!r}]" if isinstance(name, str) else f"[{part}]"
        elif isinstance(owner, type) and dataclasses.is_dataclass(owner):
            path += f".{part}"
        else:
            path += f"[{part!r}]"
        node = node[part] if isinstance(node, dict | list) and _has(node, part) else None
        owner = _field_type(owner, part)
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        allowed = [f.name for f in dataclasses.fields(owner)] if dataclasses.is_dataclass(owner) else []
        return f"{path}: unknown key {key!r}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if kind in ("missing", "missing_argument"):
        return f"{path}: missing required key {key!r}"
    if kind == "value_error":  # a RuleError of the dataclass at ``path``
        return f"{path}: {error['ctx']['error']}"
    if owner in _EXPECTED:
        return f"{path}: expected {describe(owner)}, got {error['input']!r}"
    return f"{path}: {error['msg'][0].lower()}{error['msg'][1:]}, got {error['input']!r}"


def _has(node: Any, part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node)


def _field_type(owner: Any, part: Any) -> Any:
    """The annotation one step into ``owner`` (a dataclass field, a list item, a mapping value); Optional
    unwrapped, so an error names what was expected."""
    if owner is None:
        return None
    if isinstance(owner, type) and dataclasses.is_dataclass(owner):
        owner = typing.get_type_hints(owner).get(part)
    elif typing.get_origin(owner) in (list, dict, tuple):
        args = typing.get_args(owner)
        owner = args[-1] if args else None
    else:
        return None
    return _optional(owner)


def _optional(hint: Any) -> Any:
    """``X | None`` as ``X``: what an error says was expected."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        real = [a for a in typing.get_args(hint) if a is not type(None)]
        return real[0] if len(real) == 1 else hint
    return hint


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"duplicate key {key!r} at lines {seen[key]} and {line}")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> Any:
    """Read a YAML file strictly, turning I/O, syntax and duplicate keys into one-line ConfigErrors."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{at}") from None


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain data for YAML/JSON snapshots."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each kind of file a user writes, by the file name it is published under in
    ``benchmarks/schema/``: an editor checks a definition, a pool or a run config as it is typed (YAML
    language servers read a ``# yaml-language-server: $schema=...`` first line). The rules between
    fields are the dataclasses' and are not in the schema."""
    from harness.pool import PoolFile  # the pool module reads its files with this one

    kinds = {"benchmark": BenchmarkDef, "pool": PoolFile, "run": RunConfig}
    schemas = {}
    for kind, cls in kinds.items():
        held = _adapter(cls).json_schema()  # the strict reading's, so unknown keys are refused there too
        defs = held["$defs"]
        root = defs.pop(cls.__name__)
        schemas[f"{kind}.schema.json"] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **root,
            **({"$defs": defs} if defs else {}),
        }
    return schemas


def write_json_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write :func:`json_schemas` (``make schema``; a test checks the committed files are current)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
