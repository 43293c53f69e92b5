"""Learning curves against exploration spend: sticky-random collections and counterfactual branches on one axis.

Both arms start from the same sticky-random episodes of the train split (played once,
in one run directory). The *sticky* arm trains on the first n of them (one seeded
order). The *branch* arm takes the first m of them as parents, branches each at
``--states`` sampled turns with ``--models`` candidates and the ``--continuation``
policy (:mod:`harness.branching`), and trains on the branched decisions (``--branch-target``,
``paired`` by default). Each point's spend is what its data cost to collect
(:mod:`harness.exploration`: model calls, tokens, dollars, engine steps; a branch point
pays for its parents too). Each point's fitted family is then measured twice:

* held-out ranking accuracy: the diagnostics' comparison of the router's top model with
  the best observed model among comparable logged states of a held-out sticky-random
  run of the val split (:mod:`routers.learned.diagnostics`), beside the best single
  model's and chance;
* held-out sibling ranking: the held-out run branched at one turn of each episode with
  every model of the pool (same continuation), and the router's top model at each branch
  point compared with the best observed sibling (:func:`routers.learned.diagnostics.sibling_ranking`:
  the per-decision measure without other states' luck), beside the best single model's;
* val score: the router at ``--lam`` played on the val split (quick subset unless
  ``--full-val``), mean score and mean cost per episode.

Everything is played in this process on one engine; rerunning resumes every run
directory. A small instance (CPU is scarce):

    python benchmarks/branching_curve.py --out runs/branching-curve --tasks 'boil|melt|freeze' \\
        --max-turns 12 --repeats 2 --sticky 4,8,12 --parents 2,4 --models 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.batch import Player, prepare  # noqa: E402
from harness.benchmarks import get_benchmark  # noqa: E402
from harness.branching import BranchDesign, collect_branches  # noqa: E402
from harness.config import Limits, RouterSpec, RunConfig  # noqa: E402
from harness.exploration import ExplorationSpend, episode_spend, exploration_spend  # noqa: E402
from harness.protocols import Environment  # noqa: E402
from harness.trajectory import RunStore  # noqa: E402
from routers.learned.dataset import TargetOptions, load_samples  # noqa: E402
from routers.learned.diagnostics import diagnose_model  # noqa: E402
from routers.learned.train import default_encoder, pool_cards  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curves import EncodedSamples, fit_point, num  # noqa: E402


def play_run(env: Environment, config: RunConfig, out: Path) -> list[dict[str, Any]]:
    """Play a run's pending episodes on ``env`` in this process; the run directory is what ``harness run`` writes."""
    batch = prepare(config, out)
    try:
        player = Player(config, out, env)
        for task in batch.pending:
            batch.store.record_episode(player.play(task))
        return batch.store.episodes()
    finally:
        batch.store.close()


def spend_of(run_dir: Path, keys: set[str]) -> ExplorationSpend:
    store = RunStore(run_dir)
    total = ExplorationSpend()
    for record in store.episodes():
        if record.episode in keys:
            total = total + episode_spend(record, store.ordered_turns(record.episode))
    return total


def parameter(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Ranking accuracy and val score against exploration dollars, one line per arm, on shared axes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 4))
    for axis, key, label in zip(
        figure.subplots(1, 3),
        ("ranking_accuracy", "sibling_accuracy", "val_score"),
        ("held-out ranking accuracy", "held-out sibling ranking", "val score"),
        strict=True,
    ):
        for arm in sorted({r["arm"] for r in rows}):
            points = sorted((r["dollars"], r[key]) for r in rows if r["arm"] == arm and r[key] is not None)
            if points:
                dollars, values = zip(*points, strict=True)
                axis.plot(dollars, values, marker="o", label=arm)
        axis.set_xlabel("exploration spend ($)")
        axis.set_ylabel(label)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory of every run this script writes")
    parser.add_argument("--pool", default="paper6")
    parser.add_argument("--tasks", default=None, help="regular expression on task type names")
    parser.add_argument(
        "--quick", action=argparse.BooleanOptionalAction, default=True, help="quick train subset"
    )
    parser.add_argument(
        "--full-val", action="store_true", help="play the whole val split, not its quick subset"
    )
    parser.add_argument("--max-turns", type=int, default=None)
    parser.add_argument(
        "--repeats", type=int, default=2, help="plays of each train variation (sticky episodes)"
    )
    parser.add_argument("--switch-prob", type=float, default=0.03, help="sticky-random's switch probability")
    parser.add_argument("--sticky", default="4,8,16", help="sticky arm: training episodes per point")
    parser.add_argument("--parents", default="2,4", help="branch arm: parent episodes per point")
    parser.add_argument("--states", type=int, default=2, help="branch points per parent")
    parser.add_argument("--models", type=int, default=None, help="models tried per branch point (all: omit)")
    parser.add_argument("--continuation", default="random", help="the shared continuation router")
    parser.add_argument(
        "--continuation-param", action="append", default=[], help="its parameters, key=value (JSON values)"
    )
    parser.add_argument("--prefix", default="log", choices=["log", "calls"])
    parser.add_argument("--family", default="ridge")
    parser.add_argument("--sticky-target", default="mc")
    parser.add_argument("--branch-target", default="paired")
    parser.add_argument("--lam", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedder", default=None)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    limits = Limits(max_turns=args.max_turns)
    common = dict(pool=args.pool, task_filter=args.tasks, seed=args.seed, limits=limits)
    sticky = RouterSpec("sticky-random", {"switch_prob": args.switch_prob})
    env = get_benchmark("scienceworld").make_environment()
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        collected = play_run(
            env,
            RunConfig(router=sticky, split="train", quick=args.quick, repeats=args.repeats, **common),
            out / "sticky",
        )
        held_out = out / "val-logged"
        play_run(
            env, RunConfig(router=sticky, split="val", quick=not args.full_val, repeats=2, **common), held_out
        )
        timings["sticky and held-out episodes"] = time.perf_counter() - started
        started = time.perf_counter()
        continuation = RouterSpec(args.continuation, dict(map(parameter, args.continuation_param)))
        held_out_branches = out / "val-logged-branches"
        collect_branches(held_out, held_out_branches, BranchDesign(continuation, seed=args.seed), env=env)
        timings["held-out branches"] = time.perf_counter() - started

        keys = sorted(r.episode for r in collected if not r.failed)
        order = [keys[i] for i in np.random.default_rng(args.seed).permutation(len(keys))]
        sticky_sizes = [n for n in map(int, args.sticky.split(",")) if n <= len(order)]
        parent_sizes = [m for m in map(int, args.parents.split(",")) if m <= len(order)]
        design = BranchDesign(
            continuation=continuation,
            states_per_episode=args.states,
            models=args.models,
            prefix=args.prefix,
            seed=args.seed,
        )
        started = time.perf_counter()
        branches = out / "branches"
        if parent_sizes:
            collect_branches(out / "sticky", branches, design, env=env, parents=order[: max(parent_sizes)])
        timings["branches"] = time.perf_counter() - started

        cards = pool_cards(None, [out / "sticky"])
        encoder = default_encoder("incremental", args.cache_dir, args.embedder)
        samples = {
            "sticky": load_samples([out / "sticky"]),
            "held-out": load_samples([held_out]),
            "held-out branches": load_samples([held_out, held_out_branches]),
        }
        samples["branches"] = load_samples([branches]) if parent_sizes else []
        encoded = EncodedSamples([s for part in samples.values() for s in part], encoder, cards)

        points: list[tuple[str, int, list, ExplorationSpend, str]] = []
        for n in sticky_sizes:
            chosen = set(order[:n])
            part = [s for s in samples["sticky"] if s.episode in chosen]
            points.append(("sticky", n, part, spend_of(out / "sticky", chosen), args.sticky_target))
        branch_records = RunStore(branches).episodes() if parent_sizes else []
        for m in parent_sizes:
            parents = set(order[:m])
            children = {r.episode for r in branch_records if r.branch_of["parent"] in parents}
            part = [s for s in samples["branches"] if s.episode in children]
            spend = spend_of(out / "sticky", parents) + spend_of(branches, children)
            points.append(("branch", m, part, spend, args.branch_target))

        rows = []
        print(
            f"{'arm':<7} {'n':>4} {'decisions':>9} {'calls':>6} {'tokens':>8} {'dollars':>8} {'steps':>6} "
            f"{'rank acc':>8} {'single':>6} {'chance':>6} {'sib acc':>7} {'single':>6} {'val score':>9} {'val $':>7}"
        )
        for arm, n, part, spend, target in points:
            started = time.perf_counter()
            options = TargetOptions(target=target, policy_lam=args.lam)
            point = fit_point(encoded, part, args.family, options, args.seed)
            model = point.model
            held_out_set = encoded.training_set(samples["held-out"], point.stats, options)
            ranking = diagnose_model(model, samples["held-out"], held_out_set, args.lam).ranking
            branched_set = encoded.training_set(samples["held-out branches"], point.stats, options)
            siblings = diagnose_model(model, samples["held-out branches"], branched_set, args.lam).siblings
            checkpoint = out / "checkpoints" / f"{arm}-{n}"
            model.save(checkpoint)
            router = RouterSpec(
                args.family, {"checkpoint": str(checkpoint), "lam": args.lam, "label": f"{arm}-{n}"}
            )
            played = play_run(
                env,
                RunConfig(router=router, split="val", quick=not args.full_val, **common),
                out / f"val-{arm}-{n}",
            )
            scored = [r for r in played if not r.failed]
            row = {
                "arm": arm,
                "n": n,
                "target": target,
                "decisions": sum(s.paired_group is not None for s in part)
                if target == "paired"
                else len(part),
                **spend.as_dict(),
                "ranking_accuracy": ranking.accuracy,
                "single_best_accuracy": ranking.single_best_accuracy,
                "chance": ranking.chance,
                "sibling_accuracy": siblings.accuracy if siblings else None,
                "sibling_single_best_accuracy": siblings.single_best_accuracy if siblings else None,
                "sibling_chance": siblings.chance if siblings else None,
                "val_score": float(np.mean([r.score for r in scored])) if scored else None,
                "val_cost": float(np.mean([r.cost for r in scored])) if scored else None,
                "val_episodes": len(scored),
                "seconds": time.perf_counter() - started,
            }
            rows.append(row)
            print(
                f"{arm:<7} {n:>4} {row['decisions']:>9} {spend.model_calls:>6} {spend.tokens:>8} "
                f"{spend.dollars:>8.4f} {spend.engine_steps:>6} {num(ranking.accuracy, 3):>8} "
                f"{num(ranking.single_best_accuracy, 3):>6} {num(ranking.chance, 3):>6} "
                f"{num(row['sibling_accuracy'], 3):>7} {num(row['sibling_single_best_accuracy'], 3):>6} "
                f"{num(row['val_score'], 1):>9} {num(row['val_cost'], 4):>7}",
                flush=True,
            )
        total = exploration_spend([out / "sticky", *([branches] if parent_sizes else [])])
        result = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "timings_s": timings}
        result["collected_spend"] = total.as_dict()
        (out / "branching-curve.json").write_text(json.dumps(result, indent=2))
        plot(rows, out / "branching-curve.png")
        print(f"rows in {out / 'branching-curve.json'}, figure in {out / 'branching-curve.png'}")
    finally:
        env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
