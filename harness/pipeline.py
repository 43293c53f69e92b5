"""A benchmark definition end to end: collect, train, tune, evaluate, track, report.

A definition is a YAML file under ``benchmarks/`` (see ``quick.yaml``) that names a
benchmark plug-in, a pool and the routers to compare. Every stage writes into one
results directory (:mod:`harness.layout`) and is resumable: run directories skip
finished episodes, trained checkpoints are reused while their training inputs are
unchanged, and the Optuna study lives in SQLite beside the runs. Tuning only ever
evaluates on ``val``; test splits are only evaluated, never selected on.

This is a library: progress goes to a :class:`harness.batch.BatchProgress` the
caller passes (the CLI passes a progress bar) and stage messages to logging.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.batch import BatchProgress, execute, prepare_check
from harness.benchmarks import get_benchmark
from harness.config import (
    BENCHMARKS_DIR,
    EXECUTORS,
    Limits,
    RouterSpec,
    RunConfig,
    from_dict,
    load_yaml,
    to_plain,
)
from harness.errors import ConfigError, UnknownNameError
from harness.layout import SEEDS_DIR, ResultsLayout
from harness.trajectory import write_json_atomic
from harness.tuning import DEFAULT_LAM_RANGE
from routers import check_training_params, router_class

if TYPE_CHECKING:
    from harness.executors import Executor

EVAL_FIXED = ("all", "val_best_single")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectStage:
    """Exploration data for training: Stage A is uniform random routing over the pool."""

    router: RouterSpec = field(default_factory=lambda: RouterSpec("random"))
    split: str = "train"
    quick: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass(frozen=True)
class LearnedRouter:
    name: str  # a trainable router family (see `harness routers`)
    params: dict = field(default_factory=dict)  # training hyperparameters
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
    from harness.results import MARGIN_RULES, SELECTION_RULES

    if rule not in SELECTION_RULES:
        raise ConfigError(f"{where}.rule {rule!r} is not one of {', '.join(SELECTION_RULES)}")
    if rule in MARGIN_RULES and (margin is None or margin < 0):
        raise ConfigError(f"{where}.rule {rule} needs {where}.margin, a score margin >= 0")
    if rule not in MARGIN_RULES and margin is not None:
        raise ConfigError(f"{where}.margin applies to rule {' or '.join(MARGIN_RULES)}, not {rule}")


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
            raise ConfigError(f"select.split {self.split!r} is a test split: select on val")
        if self.repeats < 1:
            raise ConfigError(f"select.repeats must be >= 1, got {self.repeats}")
        keys = [r.key for r in self.rules]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"select.also repeats a rule: {', '.join(keys)}")

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
    Points are the benchmark's score units (ScienceWorld: -100..100; HLE accuracy 0..1
    needs a margin such as 0.05).
    """

    margin: float = 5.0

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ConfigError(f"verdict.margin must be >= 0, got {self.margin}")


@dataclass(frozen=True)
class BenchmarkDef:
    """``benchmark`` and ``pool`` default to the run config's; ``limits`` and ``reference_point`` to the plug-in's."""

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
    split_file: str | None = None
    judge: str | None = None
    eval_splits: list[str] = field(default_factory=lambda: ["test_id", "test_ood"])
    eval_quick: dict[str, bool] = field(default_factory=dict)  # per eval split, overrides ``quick``
    eval_grid: bool = True  # False: learned families are evaluated only at their selected lambda
    eval_repeats: int = 1  # plays of each test variation, each with its own episode seed
    # all | val_best_single: on eval splits, every fixed router, or only the val-best single model (the
    # verdict's reference) besides the fixed routers that are not single models
    eval_fixed: str = "all"
    verdict: VerdictSpec = field(default_factory=VerdictSpec)
    trace_episodes: str | float = "all"  # all | none | the fraction of episodes traced in MLflow
    prefix_cache: bool = False  # serve repeated engine prefixes from RESULTS/<bench>/prefix-cache/
    quick: bool = True
    seed: int = 0
    workers: int = 2
    executor: str = RunConfig.executor  # local | ray; ``harness benchmark --executor`` overrides it
    backend: str = RunConfig.backend  # simulated | litellm (real models: a pool's providers or local servers)
    constrained: bool = RunConfig.constrained  # constrained decoding where the format offers it
    limits: Limits | None = None
    reference_point: dict | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")


def load_benchmark(name_or_path: str) -> BenchmarkDef:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = BENCHMARKS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in BENCHMARKS_DIR.glob("*.yaml"))
            raise UnknownNameError(f"unknown benchmark {name_or_path!r} (known: {', '.join(known)})")
    definition = from_dict(BenchmarkDef, load_yaml(path), str(path))
    labels = [r.label for r in definition.fixed_routers]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: two fixed routers share a label")
    if definition.seeds is not None and (
        not definition.seeds or len(set(definition.seeds)) != len(definition.seeds)
    ):
        raise ConfigError(f"{path}: seeds must be a non-empty list of distinct seeds")
    t, sel = definition.tune, definition.select
    if t is not None and sel is not None and t.split == sel.split and t.quick != sel.quick:
        raise ConfigError(f"{path}: tune and select run on {t.split} with different quick settings")
    if definition.eval_repeats < 1:
        raise ConfigError(f"{path}: eval_repeats must be >= 1, got {definition.eval_repeats}")
    if sel is not None and sel.split in definition.eval_splits and sel.repeats != definition.eval_repeats:
        raise ConfigError(f"{path}: {sel.split} is selected on and evaluated with different repeats")
    return definition


def replicate(definition: BenchmarkDef, seed: int) -> BenchmarkDef:
    """One seed replicate of a definition: its own exploration, training and evaluation seeds.

    Seed ``s`` shifts every collection seed by ``1000 * s`` and trains with seed ``s``, so
    replicate 0 is the single-seed benchmark and no two replicates share an episode draw.
    """
    c, b = definition.collect, definition.stage_b
    return replace(
        definition,
        name=f"s{seed}",
        seed=seed,
        seeds=None,
        collect=replace(c, seeds=[1000 * seed + x for x in c.seeds]),
        stage_b=None if b is None else replace(b, seeds=[1000 * seed + x for x in b.seeds]),
        learned=[replace(x, params={"seed": seed, **x.params}) for x in definition.learned],
    )


def point_label(family: str, lam: float) -> str:
    return f"{family}@lam={lam:g}"


class BenchmarkRun:
    """The stages of one benchmark over one results directory.

    ``executor`` (default: the definition's) and ``ray_address`` say where episodes
    are played (:func:`harness.executors.open_executor`); ``tracking_uri`` names an
    MLflow tracking server to log to instead of the store in the results directory, and
    ``tuning_storage`` an Optuna storage URL for the studies instead of its SQLite file.
    None is part of the definition, so none (nor a password in it) reaches a stored file
    or a logged param.
    """

    def __init__(
        self,
        definition: BenchmarkDef,
        results: Path,
        progress: BatchProgress | None = None,
        embeddings: Path | None = None,
        prefix_cache: Path | None = None,
        *,
        executor: str | None = None,
        ray_address: str | None = None,
        tracking_uri: str | None = None,
        tuning_storage: str | None = None,
    ):
        """``prefix_cache``: the cache directory, overriding the definition's ``prefix_cache`` (seed
        replicates share their parent's)."""
        self.d = definition
        self.stage_seconds: dict[str, float] = {}
        self.tuning_storage = tuning_storage
        self.layout = ResultsLayout.of(results, definition.name, tracking_uri)
        self.dir = self.layout.root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.plugin = get_benchmark(definition.benchmark)
        self.executor = executor or definition.executor
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        self.ray_address = ray_address
        self.workers: Executor | None = None  # while execute() runs
        self.commit: str | None = None  # the git commit runs are logged under; None: no MLflow logging
        self._embeddings = embeddings  # seed replicates share their parent's cache
        self.prefix_cache = prefix_cache or (self.layout.prefix_cache if definition.prefix_cache else None)

    def repeats(self, split: str) -> int:
        """Plays of each variation of ``split``: the eval repeats on eval splits, the selection's
        on its split (tuning there too, since its trials are selection candidates), else one."""
        if split in self.d.eval_splits:
            return self.d.eval_repeats
        if self.d.select is not None and split == self.d.select.split:
            return self.d.select.repeats
        return 1

    def config(
        self, router: RouterSpec, split: str, quick: bool, seed: int | None = None, repeats: int = 1
    ) -> RunConfig:
        return RunConfig(
            router=router,
            pool=self.d.pool,
            benchmark=self.d.benchmark,
            split=split,
            split_file=self.d.split_file,
            quick=quick,
            seed=self.d.seed if seed is None else seed,
            workers=self.d.workers,
            limits=(self.d.limits or Limits()).over(self.plugin.limits),
            judge=self.d.judge,
            repeats=repeats,
            executor=self.executor,
            backend=self.d.backend,
            constrained=self.d.constrained,
            prefix_cache=str(self.prefix_cache) if self.prefix_cache is not None else None,
        )

    def run(self, config: RunConfig, out: Path, label: str) -> list[dict]:
        records = execute(config, out, label=label, workers=self.workers, progress=self.progress)
        if self.commit is not None:
            # Live progress: the point's MLflow run and its traces appear as its batch finishes (idempotent).
            from harness.tracking import log_run

            log_run(self.dir, out, self.commit, tracking_uri=self.layout.tracking_server)
        return records

    def validate(self) -> None:
        """Every router, family, split and file of the definition, checked before the first episode."""
        d = self.d
        for learned in d.learned:
            if not router_class(learned.name).trainable:
                raise ConfigError(f"learned router {learned.name!r} is not a trainable router family")
            check_training_params(learned.name, learned.params)
        if d.stage_b is not None and d.stage_b.family not in {learned.name for learned in d.learned}:
            raise ConfigError(
                f"stage_b.family {d.stage_b.family!r} is not a learned router of this benchmark"
            )
        checks = [self.config(d.collect.router, d.collect.split, d.collect.quick)]
        unknown = set(d.eval_quick) - set(d.eval_splits)
        if unknown:
            raise ConfigError(f"eval_quick names {sorted(unknown)[0]!r}, which is not an eval split")
        for also in d.select.also if d.select is not None else []:
            stray = sorted(set(also.splits or ()) - set(d.eval_splits))
            if stray:
                raise ConfigError(
                    f"select.also rule {also.key} names {stray[0]!r}, which is not an eval split"
                )
        if not d.eval_grid and d.select is None and d.tune is None:
            raise ConfigError("eval_grid: false needs a select or tune stage to choose the lambda")
        if d.eval_fixed not in EVAL_FIXED:
            raise ConfigError(f"eval_fixed {d.eval_fixed!r} is not one of {', '.join(EVAL_FIXED)}")
        if d.eval_fixed == "val_best_single" and d.select is None:
            raise ConfigError(
                "eval_fixed: val_best_single needs a select stage to find the val-best single model"
            )
        checks += [
            self.config(spec, split, d.eval_quick.get(split, d.quick), repeats=self.repeats(split))
            for split in d.eval_splits
            for spec in d.fixed_routers
        ]
        if d.tune is not None:
            checks.append(self.config(d.collect.router, d.tune.split, d.tune.quick))
        if d.select is not None:
            checks.append(self.config(d.collect.router, d.select.split, d.select.quick))
            comparing = [r.rule for r in d.select.rules if r.rule != "highest_val_score"]
            if comparing and not any(s.name == "single" for s in d.fixed_routers):
                raise ConfigError(f"select.rule {comparing[0]} compares with single-model routers; add one")
        for config in checks:
            prepare_check(config)

    # Stage 1 -----------------------------------------------------------------
    def collect(self) -> list[Path]:
        c = self.d.collect
        dirs = []
        for seed in c.seeds:
            out = self.layout.data(f"{c.router.label}-{c.split}-s{seed}")
            self.run(self.config(c.router, c.split, c.quick, seed), out, f"collect {c.split} s{seed}")
            dirs.append(out)
        return dirs

    # Stage 2 -----------------------------------------------------------------
    @property
    def embedding_cache(self) -> Path:
        return self._embeddings or self.layout.embeddings

    def train(
        self, data: list[Path], stage: str = "a", warm: dict[str, Path] | None = None
    ) -> dict[str, Path]:
        """Train every learned family on ``data``; a checkpoint is reused while its inputs are unchanged."""
        from routers.learned.train import train_router

        checkpoints = {}
        for learned in self.d.learned:
            out = self.layout.model(learned.name if stage == "a" else f"{learned.name}-{stage}")
            init = (warm or {}).get(learned.name) if router_class(learned.name).warm_startable else None
            fingerprint = training_fingerprint(learned, data, init)
            stamp = out / "trained-from.json"
            if stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
                log.info("train %s (%s): checkpoint up to date", learned.name, stage)
            else:
                log.info("train %s (%s) on %d run(s)", learned.name, stage, len(data))
                report = train_router(
                    learned.name, data, out, cache_dir=self.embedding_cache, init_from=init, **learned.params
                )
                log.info("%s", report)
                write_json_atomic(stamp, {"fingerprint": fingerprint})
            checkpoints[learned.name] = out
        return checkpoints

    def stage_b(self, data: list[Path], checkpoints: dict[str, Path]) -> dict[str, Path]:
        b = self.d.stage_b
        if b is None:
            return checkpoints
        spec = RouterSpec(
            "beta-mix",
            {
                "checkpoint": str(checkpoints[b.family]),
                "beta": b.beta,
                "lam": b.lam,
                "cache_dir": str(self.embedding_cache),
                "label": f"beta-mix:{b.family}",
            },
        )
        extra = []
        for seed in b.seeds:
            out = self.layout.data(f"stage-b-{b.family}-{b.split}-s{seed}")
            self.run(self.config(spec, b.split, b.quick, seed), out, f"stage B {b.split} s{seed}")
            extra.append(out)
        return self.train(data + extra, stage="b", warm=checkpoints)

    def learned_spec(self, family: str, checkpoint: Path, lam: float) -> RouterSpec:
        return RouterSpec(
            family,
            {
                "checkpoint": str(checkpoint),
                "lam": float(lam),
                "cache_dir": str(self.embedding_cache),
                "label": point_label(family, lam),
            },
        )

    # Stage 3 -----------------------------------------------------------------
    def tune(self, checkpoints: dict[str, Path]) -> dict[str, dict]:
        from harness.tuning import best_points, tune

        t = self.d.tune
        if t is None:
            return {}
        selected = {}
        for family, checkpoint in checkpoints.items():

            def evaluate(params: dict, family=family, checkpoint=checkpoint) -> tuple[float, float]:
                lam = round(float(params["lam"]), 4)
                spec = self.learned_spec(family, checkpoint, lam)
                out = self.layout.run(t.split, spec.label)
                config = self.config(spec, t.split, t.quick, repeats=self.repeats(t.split))
                records = [r for r in self.run(config, out, f"tune {spec.label}") if r["status"] != "failed"]
                return mean(r["score"] for r in records), mean(r["cost"] for r in records)

            study = tune(
                family,
                evaluate,
                storage_path=self.layout.optuna_db,
                storage=self.tuning_storage,
                study_name=f"{self.d.name}-{family}",
                n_trials=t.trials,
                lam_range=tuple(t.lam_range),
                budget_per_episode=t.budget_per_episode,
                seed=self.d.seed,
            )
            feasible = [
                tr
                for tr in study.best_trials
                if t.budget_per_episode is None or tr.values[1] <= t.budget_per_episode
            ] or list(study.best_trials)
            best = max(feasible, key=lambda tr: (tr.values[0], -tr.values[1]))
            selected[family] = {
                "lam": round(float(best.params["lam"]), 4),
                "val_score": best.values[0],
                "val_cost": best.values[1],
                "pareto": best_points(study),
                "trials": sorted({round(float(tr.params["lam"]), 4) for tr in study.trials if tr.values}),
            }
        return selected

    def _means(self, spec: RouterSpec, split: str, quick: bool, stage: str) -> dict:
        config = self.config(spec, split, quick, repeats=self.repeats(split))
        records = [
            r for r in self.run(config, self.layout.run(split, spec.label), stage) if r["status"] != "failed"
        ]
        return {
            "n": len(records),
            "mean_score": mean(r["score"] for r in records),
            "mean_cost": mean(r["cost"] for r in records),
        }

    def select(self, checkpoints: dict[str, Path], tuned: dict[str, dict]) -> dict[str, dict]:
        """Each family's headline lambda by the definition's rule, from its runs on the selection split."""
        import pandas as pd

        from harness.results import PAIRED_RULES, select_point
        from harness.seeding import derive_seed
        from harness.verdict import paired_lower_bound

        s = self.d.select
        if s is None:
            return tuned
        singles = {
            spec.label: self._means(spec, s.split, s.quick, f"select {s.split} {spec.label}")
            for spec in self.d.fixed_routers
            if spec.name == "single"
        }
        best = max(singles, key=lambda k: (singles[k]["mean_score"], -singles[k]["mean_cost"]), default=None)
        selected = {}
        for learned in self.d.learned:
            tune = tuned.get(learned.name, {})
            same_split = self.d.tune is not None and self.d.tune.split == s.split
            lams = sorted(set(learned.lambdas) | (set(tune.get("trials", [])) if same_split else set()))
            rows = []
            for lam in lams:
                spec = self.learned_spec(learned.name, checkpoints[learned.name], lam)
                rows.append(
                    {"lam": lam, **self._means(spec, s.split, s.quick, f"select {s.split} {spec.label}")}
                )
                if any(r.rule in PAIRED_RULES for r in s.rules) and best is not None:
                    rows[-1]["score_diff_low"] = paired_lower_bound(
                        self.layout.run(s.split, spec.label),
                        self.layout.run(s.split, best),
                        seed=derive_seed("select", self.d.seed, spec.label) % 2**32,
                    )
            reference = singles[best]["mean_score"] if best is not None else None
            candidates = pd.DataFrame(rows)
            choice = select_point(candidates, s.rule, reference, s.margin)
            also = {a.key: select_point(candidates, a.rule, reference, a.margin) for a in s.also}
            selected[learned.name] = {
                **choice,
                **({"also": also} if also else {}),
                "split": s.split,
                "repeats": s.repeats,
                "best_single": best,
                "best_single_score": singles[best]["mean_score"] if best is not None else None,
                "best_single_cost": singles[best]["mean_cost"] if best is not None else None,
                "candidates": rows,
            }
        return selected

    # Stage 4 -----------------------------------------------------------------
    def evaluated_fixed(self, selected: dict[str, dict]) -> list[RouterSpec]:
        """The fixed routers played on the eval splits (``eval_fixed``)."""
        if self.d.eval_fixed == "all":
            return list(self.d.fixed_routers)
        best = {choice.get("best_single") for choice in selected.values()}
        return [spec for spec in self.d.fixed_routers if spec.name != "single" or spec.label in best]

    def evaluate(self, checkpoints: dict[str, Path], selected: dict[str, dict]) -> None:
        for split in self.d.eval_splits:
            quick = self.d.eval_quick.get(split, self.d.quick)
            repeats = self.repeats(split)
            for spec in self.evaluated_fixed(selected):
                self.run(
                    self.config(spec, split, quick, repeats=repeats),
                    self.layout.run(split, spec.label),
                    f"{split} {spec.label}",
                )
            rules = self.d.select.also if self.d.select is not None else []
            also_here = {a.key for a in rules if a.splits is None or split in a.splits}
            for learned in self.d.learned:
                choice = selected.get(learned.name, {})
                also = [c for key, c in choice.get("also", {}).items() if key in also_here]
                chosen = {c["lam"] for c in [choice, *also] if "lam" in c}
                lams = sorted((set(learned.lambdas) if self.d.eval_grid else set()) | chosen)
                for lam in lams:
                    spec = self.learned_spec(learned.name, checkpoints[learned.name], lam)
                    self.run(
                        self.config(spec, split, quick, repeats=repeats),
                        self.layout.run(split, spec.label),
                        f"{split} {spec.label}",
                    )

    def prefix_cache_counts(self) -> dict | None:
        """The prefix-cache counters of every batch of this results directory, added up."""
        from harness.batch import CACHE_FILE, read_cache_counts
        from harness.layout import DATA_DIR, RUNS_DIR

        found = [*self.dir.glob(f"{DATA_DIR}/*/{CACHE_FILE}"), *self.dir.glob(f"{RUNS_DIR}/*/*/{CACHE_FILE}")]
        return read_cache_counts(sorted(p.parent for p in found))

    def write_manifest(self, selected: dict) -> None:
        """benchmark.json: what the report and the tracker read besides the run directories."""
        write_json_atomic(
            self.layout.manifest,
            {
                "name": self.d.name,
                "benchmark": self.d.benchmark,
                "reference_point": self.d.reference_point or self.plugin.reference_point,
                "seeds": sorted({self.d.seed, *self.d.collect.seeds}),
                "selected": selected,
                "selection": to_plain(self.d.select),
                "definition": to_plain(self.d),
                "prefix_cache": self.prefix_cache_counts(),
                "stage_seconds": self.stage_seconds,
            },
        )

    def write_verdict(self) -> None:
        """Add the verdict (:mod:`harness.verdict`, recomputed from the runs) to benchmark.json."""
        from harness.verdict import verdict_rows

        manifest = json.loads(self.layout.manifest.read_text())
        margin = self.d.verdict.margin
        manifest["verdict"] = {"margin": margin, "rows": verdict_rows(self.dir, margin)}
        also = self.d.select.also if self.d.select is not None else []
        if also:
            manifest["verdict"]["also"] = {
                a.key: verdict_rows(self.dir, margin, rule=a.key, splits=a.splits) for a in also
            }
        write_json_atomic(self.layout.manifest, manifest)

    def execute(self, track: bool = True, report_dir: Path | None = None) -> dict:
        from harness.batch import git_commit
        from harness.executors import open_executor

        self.validate()
        self.commit = git_commit() if track else None
        with open_executor(self.executor, self.d.workers, self.ray_address) as self.workers:
            return self._execute(track, report_dir)

    def replicates(self) -> list[BenchmarkRun]:
        return [
            BenchmarkRun(
                replicate(self.d, seed),
                self.dir / SEEDS_DIR,
                self.progress,
                self.embedding_cache,
                self.prefix_cache,
                executor=self.executor,
                tracking_uri=self.layout.tracking_server,
                tuning_storage=self.tuning_storage,
            )
            for seed in self.d.seeds or ()
        ]

    def _execute(self, track: bool, report_dir: Path | None) -> dict:
        outputs: dict = {"results": str(self.dir)}
        if self.d.seeds:
            runs = self.replicates()
            write_json_atomic(
                self.layout.manifest,
                {
                    "name": self.d.name,
                    "benchmark": self.d.benchmark,
                    "replicates": {
                        str(seed): f"{SEEDS_DIR}/{run.d.name}"
                        for seed, run in zip(self.d.seeds, runs, strict=True)
                    },
                    "definition": to_plain(self.d),
                },
            )
            for run in runs:
                run.workers, run.commit = self.workers, self.commit
                run._execute(track, None)
            self.write_verdict()
        else:
            self.write_manifest({})
            with self.timed("collect"):
                data = self.collect()
            checkpoints = {}
            if self.d.learned:
                with self.timed("train"):
                    trained = self.train(data)
                with self.timed("stage_b"):
                    checkpoints = self.stage_b(data, trained)
            with self.timed("tune"):
                tuned = self.tune(checkpoints)
            with self.timed("select"):
                selected = self.select(checkpoints, tuned)
            self.write_manifest(selected)
            with self.timed("evaluate"):
                self.evaluate(checkpoints, selected)
            if self.prefix_cache is not None:
                self.write_manifest(selected)  # with the evaluation batches' cache counters
            self.write_verdict()
            if track:
                from harness.batch import git_commit
                from harness.tracking import log_benchmark, shown_uri

                with self.timed("track"):
                    outputs["mlflow_run"] = log_benchmark(
                        self.dir,
                        self.commit or git_commit(),
                        tracking_uri=self.layout.tracking_server,
                        tuning_storage=self.tuning_storage,
                    )
                outputs["mlflow_uri"] = shown_uri(self.layout)
        if report_dir is not None:
            from harness.report import write_report

            with self.timed("report"):
                outputs["report"] = str(write_report(self.dir, report_dir))
        return outputs

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Adds the stage's wall seconds to benchmark.json's ``stage_seconds``: the profile a slow benchmark
        is read from (collection, training with its embedding, Stage B, tuning, selection, evaluation,
        tracking, report)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] = round(
                self.stage_seconds.get(stage, 0.0) + time.perf_counter() - started, 2
            )
            if self.layout.manifest.exists():
                manifest = json.loads(self.layout.manifest.read_text())
                manifest["stage_seconds"] = self.stage_seconds
                write_json_atomic(self.layout.manifest, manifest)


def training_fingerprint(learned: LearnedRouter, data: list[Path], init: Path | None = None) -> str:
    """Changes when the training hyperparameters, the warm start or the training episodes change."""
    from harness.trajectory import RunStore

    h = hashlib.sha256(json.dumps(to_plain(learned.params), sort_keys=True).encode())
    h.update(f"{learned.name}|{init}".encode())
    for d in data:
        h.update(str(sorted(RunStore(d).finished_keys())).encode())
    return h.hexdigest()


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


__all__ = ["BenchmarkDef", "BenchmarkRun", "SelectStage", "load_benchmark", "point_label", "replicate"]
