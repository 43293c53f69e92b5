"""A benchmark definition end to end: collect, train, tune, evaluate, track, report.

A definition is a YAML file under ``benchmarks/`` (see ``quick.yaml``) that names a
benchmark plug-in, a pool and the routers to compare. Every stage writes into one
results directory (:mod:`harness.layout`) and is resumable: run directories skip
finished episodes, trained checkpoints are reused while their training inputs are
unchanged, and the Optuna study lives in SQLite beside the runs. Tuning only ever
evaluates on ``val``; test splits are only evaluated, never selected on.

This is a library: progress goes to a :class:`BenchmarkProgress` the caller passes
(the CLI passes a progress bar), told the time estimate of :mod:`harness.estimate`
before the first episode, and stage messages to logging.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from harness.batch import BatchProgress, batch_problem, execute, prepare_check
from harness.benchmarks import get_benchmark
from harness.branching import collect_branches
from harness.config import (
    BenchmarkDef,
    BenchmarkOptions,
    LearnedRouter,
    RouterSpec,
    RunConfig,
    load_benchmark,
    resolve,
    to_plain,
)
from harness.errors import ConfigError, InfrastructureError
from harness.exploration import exploration_spend
from harness.layout import SEEDS_DIR, ResultsLayout
from harness.records import EpisodeRecord
from harness.storage import guarded
from harness.trajectory import CONFIG_FILE, RunStore, write_json_atomic
from routers import router_class

if TYPE_CHECKING:
    from harness.estimate import PlannedBatch, TimeEstimate
    from harness.executors import Executor
    from harness.summary import RunSummary
    from harness.verdict import VarianceComponents

log = logging.getLogger(__name__)


class BenchmarkProgress(BatchProgress, Protocol):
    """A batch progress that also follows the whole benchmark: told its plan and time estimate before
    the first episode (:mod:`harness.estimate`), and when the benchmark is over."""

    def plan(self, estimate: TimeEstimate) -> None: ...

    def finish(self) -> None: ...


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
        progress: BenchmarkProgress | None = None,
        embeddings: Path | None = None,
        prefix_cache: Path | None = None,
        *,
        executor: str | None = None,
        ray_address: str | None = None,
        tracking_uri: str | None = None,
        tuning_storage: str | None = None,
        root: Path | None = None,
    ):
        """``prefix_cache``: the cache directory, overriding the definition's ``prefix_cache`` (seed
        replicates share their parent's); ``root``: the whole results directory this one is part of (a
        seed replicate's is its parent's), inside which every run records paths relatively."""
        self.d = definition
        self.tuning_storage = tuning_storage
        self.layout = ResultsLayout.of(results, definition.name, tracking_uri)
        # Wall seconds per stage over every attempt: a resumed benchmark adds to what its earlier ones spent.
        earlier = json.loads(self.layout.manifest.read_text()) if self.layout.manifest.exists() else {}
        self.stage_seconds: dict[str, float] = dict(earlier.get("stage_seconds") or {})
        self.dir = self.layout.root
        self.root = root or self.dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.plugin = get_benchmark(definition.benchmark)
        self.executor = executor or definition.executor
        self.ray_address = ray_address
        self.workers: Executor | None = None  # while execute() runs
        self.planned_seeds = 1  # the seed replicates the verdict pools (its parent's count, for a replicate)
        self.power: dict[str, dict[str, dict]] = {}  # family -> eval split -> power plan
        self.val_components: dict[str, VarianceComponents] = {}  # family -> read off its val episodes
        self.val_differences: dict[
            str, tuple[float, float]
        ] = {}  # family -> (val mean difference, its variance)
        self.commit: str | None = None  # the git commit runs are logged under; None: no MLflow logging
        self._embeddings = embeddings  # seed replicates share their parent's cache
        self.prefix_cache = prefix_cache or (self.layout.prefix_cache if definition.prefix_cache else None)

    @property
    def margin(self) -> float:
        """The verdict's margin in score units: the definition's, else its benchmark's default."""
        return self.plugin.default_margin if self.d.verdict.margin is None else self.d.verdict.margin

    def repeats(self, split: str) -> int:
        """Plays of each variation of ``split``: the eval repeats on eval splits (the split's own where
        given), the selection's on its split (tuning there too, since its trials are selection
        candidates), else one."""
        if split in self.d.eval_splits:
            return self.d.eval_split_repeats.get(split, self.d.eval_repeats)
        if self.d.select is not None and split == self.d.select.split:
            return self.d.select.repeats
        return 1

    def config(
        self, router: RouterSpec, split: str, quick: bool, seed: int | None = None, repeats: int = 1
    ) -> RunConfig:
        """The effective configuration of one of the benchmark's batches (:func:`harness.config.resolve`)."""
        run = RunConfig(
            router=router,
            pool=self.d.pool,
            benchmark=self.d.benchmark,
            split=split,
            split_file=self.d.split_file,
            quick=quick,
            seed=self.d.seed if seed is None else seed,
            workers=self.d.workers,
            limits=self.d.limits,
            judge=self.d.judge,
            repeats=repeats,
            executor=self.executor,
            backend=self.d.backend,
            constrained=self.d.constrained,
            prefix_cache=str(self.prefix_cache) if self.prefix_cache is not None else None,
        )
        return resolve(run)

    def run(self, config: RunConfig, out: Path, label: str) -> list[EpisodeRecord]:
        records = execute(
            config, out, label=label, workers=self.workers, progress=self.progress, root=self.root
        )
        if self.commit is not None:
            # Live progress: the point's MLflow run and its traces appear as its batch finishes (idempotent).
            from harness.tracking import log_run

            log_run(self.dir, out, self.commit, tracking_uri=self.layout.tracking_server)
        return records

    def validate(self) -> None:
        """What the definition's own rules cannot see, checked before the first episode: that each learned
        family is trainable with its hyperparameters, and every router, pool, split and file of every
        batch (:func:`harness.batch.prepare_check`)."""
        from routers.learned.train import TrainOptions

        d = self.d
        for learned in d.learned:
            if not router_class(learned.name).trainable:
                raise ConfigError(f"learned router {learned.name!r} is not a trainable router family")
            TrainOptions.from_params(learned.name, learned.params)
        checks = [self.config(d.collect.router, d.collect.split, d.collect.quick)]
        if d.collect.branch is not None:  # the continuation router, checked against the pool
            checks.append(self.config(d.collect.branch.continuation, d.collect.split, d.collect.quick))
        checks += [
            self.config(spec, split, d.eval_quick.get(split, d.quick), repeats=self.repeats(split))
            for split in d.eval_splits
            for spec in d.fixed_routers
        ]
        if d.tune is not None:
            checks.append(self.config(d.collect.router, d.tune.split, d.tune.quick))
        if d.select is not None:
            checks.append(self.config(d.collect.router, d.select.split, d.select.quick))
        for config in checks:
            prepare_check(config)

    def planned_batches(self) -> list[PlannedBatch]:
        """Every batch the stages will play, with its episodes and those already recorded (for the estimate).

        Mirrors the stages below. A batch whose run directory is not known before it runs (an Optuna
        trial's, the val-best single's, a selected lambda's before selection) is counted at its planned
        size; selected lambdas already in benchmark.json are used. A branch collection counts one episode
        per branch its design asks for (parents x states x models), each as long as an episode.
        """
        from harness.estimate import PlannedBatch

        if self.d.seeds:
            return [b for run in self.replicates() for b in run.planned_batches()]
        d, split = self.d, self.plugin.load_split(self.d.split_file)

        def batch(stage: str, name: str, quick: bool, *dirs: Path, repeats: int = 1, times: int = 1):
            episodes = len(split.tasks(name, quick=quick, repeats=repeats)) * times
            recorded = sum(len(RunStore(p).finished_keys()) for p in dirs if (p / CONFIG_FILE).exists())
            return PlannedBatch(stage, episodes, min(recorded, episodes))

        c = d.collect
        batches = [batch("collect", c.split, c.quick, self.collect_dirs(seed)[0]) for seed in c.seeds]
        if c.branch is not None:
            from harness.pool import load_pool

            parents = len(split.tasks(c.split, quick=c.quick))
            models = c.branch.models or len(load_pool(d.pool).names)
            planned = min(c.branch.episodes or parents, parents) * c.branch.states_per_episode * models
            for seed in c.seeds:
                branches = self.collect_dirs(seed)[1]
                done = len(RunStore(branches).finished_keys()) if (branches / CONFIG_FILE).exists() else 0
                batches.append(PlannedBatch("collect", planned, min(done, planned)))
        if d.stage_b is not None and d.learned:
            b = d.stage_b
            batches += [
                batch("stage B", b.split, b.quick, self.layout.data(f"stage-b-{b.family}-{b.split}-s{seed}"))
                for seed in b.seeds
            ]
        if d.tune is not None:
            t = d.tune
            for learned in d.learned:
                trials = [p for p in self.layout.runs(t.split).glob(f"{learned.name}@lam=*") if p.is_dir()]
                batches.append(
                    batch("tune", t.split, t.quick, *trials, repeats=self.repeats(t.split), times=t.trials)
                )
        s = d.select
        if s is not None:
            for spec in d.fixed_routers:
                if spec.name == "single":
                    where = self.layout.run(s.split, spec.label)
                    batches.append(batch("select", s.split, s.quick, where, repeats=self.repeats(s.split)))
            for learned in d.learned:
                for lam in learned.lambdas:
                    where = self.layout.run(s.split, point_label(learned.name, lam))
                    batches.append(batch("select", s.split, s.quick, where, repeats=self.repeats(s.split)))
        selected = {}
        if self.layout.manifest.exists():
            selected = json.loads(self.layout.manifest.read_text()).get("selected") or {}
        for name in d.eval_splits:
            quick, repeats = d.eval_quick.get(name, d.quick), self.repeats(name)
            fixed = [spec.label for spec in d.fixed_routers if d.eval_fixed == "all" or spec.name != "single"]
            if d.eval_fixed != "all":  # the val-best single, one of them
                best = {choice.get("best_single") for choice in selected.values()} - {None}
                fixed += sorted(best) or [
                    next(spec.label for spec in d.fixed_routers if spec.name == "single")
                ]
            points = [*fixed]
            rules = [a for a in (s.also if s is not None else []) if a.splits is None or name in a.splits]
            for learned in d.learned:
                choice = selected.get(learned.name)
                if choice is not None:
                    chosen = {c["lam"] for c in [choice, *choice.get("also", {}).values()] if "lam" in c}
                    lams = sorted((set(learned.lambdas) if d.eval_grid else set()) | chosen)
                    points += [point_label(learned.name, lam) for lam in lams]
                else:
                    lams = set(learned.lambdas) if d.eval_grid else set()
                    points += [point_label(learned.name, lam) for lam in sorted(lams)]
                    unknown = 1 + len(rules) if d.tune is not None or s is not None else 0
                    batches += [batch("evaluate", name, quick, repeats=repeats) for _ in range(unknown)]
            batches += [
                batch("evaluate", name, quick, self.layout.run(name, point), repeats=repeats)
                for point in points
            ]
        return batches

    def estimate(self) -> TimeEstimate:
        """The benchmark's time estimate (:mod:`harness.estimate`) from its plan and the recorded episodes."""
        from harness.estimate import TimeEstimate, measured_seconds_per_episode

        seconds, basis = measured_seconds_per_episode(self.dir.parent, self.d.benchmark, self.d.workers)
        reference = self.plugin.reference_episode_seconds
        if seconds is None and reference is not None and self.d.backend == "simulated":
            seconds = reference / max(self.d.workers, 1)
            basis = f"{basis}; {reference:g} s per episode on one worker of a 2-core reference machine"
        return TimeEstimate(tuple(self.planned_batches()), seconds, basis)

    # Stage 1 -----------------------------------------------------------------
    def collect(self) -> list[Path]:
        c = self.d.collect
        dirs = []
        for seed in c.seeds:
            out, branches = self.collect_dirs(seed)
            self.run(self.config(c.router, c.split, c.quick, seed), out, f"collect {c.split} s{seed}")
            dirs.append(out)
            if c.branch is not None:
                collect_branches(out, branches, replace(c.branch, seed=c.branch.seed + seed))
                dirs.append(branches)
        return dirs

    def collect_dirs(self, seed: int) -> tuple[Path, Path]:
        """Stage A's run directory of one collection seed, and that of its branches."""
        c = self.d.collect
        out = self.layout.data(f"{c.router.label}-{c.split}-s{seed}")
        return out, out.with_name(f"{out.name}-branches")

    def exploration_spend(self) -> dict | None:
        """What Stage A's collections written so far spent (:mod:`harness.exploration`); None before any."""
        dirs = [
            d for seed in self.d.collect.seeds for d in self.collect_dirs(seed) if (d / CONFIG_FILE).exists()
        ]
        return exploration_spend(dirs).as_dict() if dirs else None

    # Stage 2 -----------------------------------------------------------------
    @property
    def embedding_cache(self) -> Path:
        return self._embeddings or self.layout.embeddings

    def train(
        self, data: list[Path], stage: str = "a", warm: dict[str, Path] | None = None
    ) -> dict[str, Path]:
        """Train every learned family on ``data``; a checkpoint is reused while its inputs are unchanged."""
        from routers.learned.train import TrainOptions, train_router

        checkpoints = {}
        for learned in self.d.learned:
            out = self.layout.model(learned.name if stage == "a" else f"{learned.name}-{stage}")
            init = (warm or {}).get(learned.name) if router_class(learned.name).warm_startable else None
            fingerprint = training_fingerprint(learned, data, init and init.relative_to(self.dir))
            stamp = out / "trained-from.json"
            if stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
                log.info("train %s (%s): checkpoint up to date", learned.name, stage)
            else:
                log.info("train %s (%s) on %d run(s)", learned.name, stage, len(data))
                options = TrainOptions.from_params(
                    learned.name,
                    {
                        **learned.params,
                        "cache_dir": str(self.embedding_cache),
                        "init_from": None if init is None else str(init),
                    },
                )
                with guarded(out):  # a full disk while the checkpoint is saved is one line
                    report = train_router(learned.name, data, out, options)
                    write_json_atomic(stamp, {"fingerprint": fingerprint})
                log.info("%s", report)
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
                records = self.run(config, out, f"tune {spec.label}")
                if any(r.infrastructure_failure for r in records):
                    # Not a result: the trial fails, so the rerun queues this λ again and its batch plays
                    # those episodes again, as if the fault had not happened.
                    raise InfrastructureError(batch_problem(records, str(out)))
                records = [r for r in records if not r.failed]
                return mean(r.score for r in records), mean(r.cost for r in records)

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
        records = [r for r in self.run(config, self.layout.run(split, spec.label), stage) if not r.failed]
        return {
            "n": len(records),
            "mean_score": mean(r.score for r in records),
            "mean_cost": mean(r.cost for r in records),
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

    def plan_power(self, checkpoints: dict[str, Path], selected: dict[str, dict]) -> dict[str, dict]:
        """Before any test episode: what each family's verdict can decide on each eval split.

        The variance of the paired difference to the val-best single model is read off the
        selected point's val episodes (between variations and between repeats of one) and kept in
        ``val_components``, with the val mean difference and its sampling variance in
        ``val_differences``; :meth:`plans` turns them into the plans.
        """
        from harness.results import paired_variation_groups, task_of
        from harness.verdict import (
            planned_standard_error,
            split_design,
            stratified_difference,
            variance_components,
        )

        s = self.d.select
        if s is None:
            return {}
        split = self.plugin.load_split(self.d.split_file)
        for family, choice in sorted(selected.items()):
            best = choice.get("best_single")
            if not best or "lam" not in choice:
                continue
            mine = self.layout.run(
                s.split, self.learned_spec(family, checkpoints[family], choice["lam"]).label
            )
            by_type: dict[str, list] = {}
            for variation, rows in paired_variation_groups(mine, self.layout.run(s.split, best)).items():
                by_type.setdefault(task_of(variation), []).append(rows)
            try:
                components = variance_components(by_type)
            except ValueError as exc:  # too few val variations to tell (a quick run)
                if self.d.verdict.power == "refuse":
                    raise ConfigError(f"the verdict of {family} cannot be planned: {exc}") from None
                log.warning("power: %s %s: no plan (%s)", self.d.name, family, exc)
                continue
            val_design = split_design(split, s.split, s.quick, s.repeats)
            self.val_components[family] = components
            self.val_differences[family] = (
                stratified_difference(by_type, val_design),
                planned_standard_error(components, val_design) ** 2,
            )
        return self.plans()

    def plans(self, seed_variances: Mapping[str, float] | None = None) -> dict[str, dict]:
        """Each planned family's power plan on each eval split from its val components: the eval split's
        design (task-type weights, variations, plays) and the seeds give the planned standard error and the
        minimum detectable difference at the margin; ``seed_variances`` (family -> variance between
        training seeds, :meth:`plan_seed_power`) adds how far apart the seeds' selected points land."""
        from harness.verdict import power_plan, power_text, split_design

        split = self.plugin.load_split(self.d.split_file)
        if seed_variances is not None:
            basis = " (with the seeds' spread)"
        else:
            basis = " (this seed's val alone)" if self.planned_seeds > 1 else ""
        plans: dict[str, dict] = {}
        for family, components in sorted(self.val_components.items()):
            spread = (seed_variances or {}).get(family, 0.0)
            for name in self.d.eval_splits:
                quick = self.d.eval_quick.get(name, self.d.quick)
                design = split_design(split, name, quick, self.repeats(name))
                plan = power_plan(components, design, self.margin, self.planned_seeds, seed_variance=spread)
                plans.setdefault(family, {})[name] = plan
                (log.info if plan["powered"] else log.warning)(
                    "power: %s %s on %s%s: %s", self.d.name, family, name, basis, power_text(plan)
                )
        return plans

    def refuse_unpowered(self) -> None:
        """With ``verdict.power: refuse``, stop before any test episode when a judged family's plan is not
        powered (an exploratory row's plan is only reported); the plan is in benchmark.json by then."""
        from harness.verdict import is_judged, power_text

        if self.d.verdict.power != "refuse":
            return
        for family, per in sorted(self.power.items()):
            for name, plan in per.items():
                if is_judged(self.d.verdict.judged, family) and not plan["powered"]:
                    raise ConfigError(
                        f"the verdict of {family} on {name} is not powered ({power_text(plan)}); "
                        "add test variations, repeats or seeds, or set verdict.power: warn"
                    )

    def plan_seed_power(
        self, runs: list[BenchmarkRun], prepared: list[tuple[dict[str, Path], dict[str, dict]]]
    ) -> None:
        """Replan every replicate's verdict with the variance between training seeds, before any test episode.

        A replicate's own plan counts only the luck of its episodes; the verdict resamples training
        seeds too, and seeds of a learned family can land far apart. That spread is estimated from
        the replicates' val mean differences (their variance less what val's own sampling adds,
        :func:`harness.verdict.seed_variance`), at least ``verdict.seed_sd`` squared, and added to each
        plan, which each replicate's benchmark.json records; ``verdict.power: refuse`` then refuses an
        unpowered verdict here.
        """
        from harness.verdict import seed_variance

        families = sorted({family for run in runs for family in run.val_differences})
        stated = (self.d.verdict.seed_sd or 0.0) ** 2
        spreads = {}
        for family in families:
            differences = [run.val_differences[family] for run in runs if family in run.val_differences]
            if len(differences) >= 2:
                spreads[family] = max(seed_variance(differences), stated)
        if spreads:
            for run, (_, selected) in zip(runs, prepared, strict=True):
                run.power = run.plans(spreads)
                run.write_manifest(selected)
        for run in runs:
            run.refuse_unpowered()

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

    def tables(self) -> list[tuple[str, list[RunSummary]]]:
        """One titled table of run summaries per eval split, for this run and each seed replicate."""
        from harness.summary import summarize_run

        # A seeded definition keeps one replicate per seed under seeds/s<k>/, each with its own runs/.
        tables = []
        for layout in [self.layout, *self.layout.replicates()]:
            for split in self.d.eval_splits:
                runs = layout.point_runs(split)
                if not runs:
                    continue
                title = f"{self.d.name}: {split}" + (
                    f" ({layout.root.name})" if layout != self.layout else ""
                )
                tables.append((title, [summarize_run(r.path) for r in runs]))
        return tables

    def problems(self) -> list[str]:
        """What went wrong in each run directory under the results, the seed replicates' included (see
        :func:`harness.batch.batch_problem`)."""
        problems = []
        layouts = [self.layout, *self.layout.replicates()]
        for run_dir in sorted(run for layout in layouts for run in layout.all_runs()):
            problem = batch_problem(RunStore(run_dir).episodes(), str(run_dir))
            if problem:
                problems.append(problem)
        return problems

    def prefix_cache_counts(self) -> dict | None:
        """The prefix-cache counters of every batch of this results directory, added up."""
        from harness.batch import CACHE_FILE, read_cache_counts

        return read_cache_counts(sorted(p for p in self.layout.all_runs() if (p / CACHE_FILE).exists()))

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
                "power": self.power,
                "stage_seconds": self.stage_seconds,
                "exploration_spend": self.exploration_spend(),
            },
        )

    def write_verdict(self) -> None:
        """Add the verdict (:mod:`harness.verdict`, recomputed from the runs) to benchmark.json."""
        from harness.verdict import verdict_rows

        manifest = json.loads(self.layout.manifest.read_text())
        margin = self.margin
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
        estimate = self.estimate()
        log.info("%s", estimate.line())
        if self.progress is not None:
            self.progress.plan(estimate)
        self.commit = git_commit() if track else None
        try:
            with open_executor(self.executor, self.d.workers, self.ray_address) as self.workers:
                return self._execute(track, report_dir)
        finally:
            if self.progress is not None:
                self.progress.finish()

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
                root=self.root,
            )
            for seed in self.d.seeds or ()
        ]

    def prepare(self, refuse: bool = True) -> tuple[dict[str, Path], dict[str, dict]]:
        """Everything before the first test episode: collect, train, tune, select on val, plan the power
        (a seed replicate's refusal waits for every replicate's plan: :meth:`plan_seed_power`)."""
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
        self.power = self.plan_power(checkpoints, selected)
        self.write_manifest(selected)
        if refuse:
            self.refuse_unpowered()
        return checkpoints, selected

    def finish(self, track: bool, checkpoints: dict[str, Path], selected: dict[str, dict]) -> dict:
        """The test episodes, the verdict and the MLflow record of a prepared run; returns what it logged."""
        outputs: dict = {}
        self.write_manifest(selected)  # with the power plan as it stands before testing
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
        return outputs

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
                run.planned_seeds = len(runs)
            # Every replicate is trained and selected before any is tested, so the verdict's plan can
            # count how far apart training seeds land (plan_seed_power) before a test episode is played.
            prepared = [run.prepare(refuse=False) for run in runs]
            self.plan_seed_power(runs, prepared)
            for run, (checkpoints, selected) in zip(runs, prepared, strict=True):
                run.finish(track, checkpoints, selected)
            self.write_verdict()
        else:
            checkpoints, selected = self.prepare()
            outputs.update(self.finish(track, checkpoints, selected))
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


@dataclass(frozen=True)
class BenchmarkOutcome:
    """What ``harness benchmark`` reports: where the results went (``outputs``: the results directory,
    the MLflow run and URI, the report), one table of run summaries per evaluation split (and seed
    replicate), the prefix cache's counters, and one line per run directory that did not do what was
    asked (:func:`harness.batch.batch_problem`)."""

    definition: BenchmarkDef
    outputs: dict[str, str]
    tables: list[tuple[str, list[RunSummary]]]
    prefix_cache: dict | None
    problems: list[str]


def run_benchmark(options: BenchmarkOptions, progress: BenchmarkProgress | None = None) -> BenchmarkOutcome:
    """``harness benchmark``: load the definition, run every stage (resuming what is done), summarise."""
    definition = load_benchmark(options.definition)
    bench = BenchmarkRun(
        definition,
        options.results,
        progress=progress,
        prefix_cache=options.prefix_cache,
        executor=options.executor,
        ray_address=options.ray_address,
        tracking_uri=options.tracking_uri if options.track else None,
        tuning_storage=options.tuning_storage,
    )
    outputs = bench.execute(track=options.track, report_dir=options.reports)
    return BenchmarkOutcome(
        definition, outputs, bench.tables(), bench.prefix_cache_counts(), bench.problems()
    )


def training_fingerprint(learned: LearnedRouter, data: list[Path], init: Path | None = None) -> str:
    """Changes when the training hyperparameters, the warm start or the training episodes change.

    ``init`` is the warm start's checkpoint relative to the results directory, so that a moved one still
    finds its checkpoints up to date."""
    h = hashlib.sha256(json.dumps(to_plain(learned.params), sort_keys=True).encode())
    h.update(f"{learned.name}|{init}".encode())
    for d in data:
        h.update(str(sorted(RunStore(d).finished_keys())).encode())
    return h.hexdigest()


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


__all__ = [
    "BenchmarkOutcome",
    "BenchmarkProgress",
    "BenchmarkRun",
    "point_label",
    "replicate",
    "run_benchmark",
]
