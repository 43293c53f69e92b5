"""Routing decision latency of every router on CPU, at 30-turn ScienceWorld-shaped histories, per embedder.

For each named embedder (``routers.learned.encoder_spec.EMBEDDERS``) the learned
routers are trained (briefly: the predictor's size, not its quality, sets the
latency) on a synthetic logged run over the paper's pool and then asked to
route the last decision of 30-turn histories from ``perf_history_encoder.py``.
Three cache states of the embedding cache:

* warm: every text of the history is cached (a repeated state);
* live: an episode routed turn by turn, so each decision embeds only the
  messages the previous turn added, as in a real run;
* cold: nothing cached (a fresh cache per decision), the worst case.

The summary gives, per embedder, the live p50/p95 over the learned routers
(the issue's goal: p50 <= 5 ms, p95 <= 15 ms), their ratio to the reference
MiniLM measured in the same run (the machine is shared: ratios travel better
than milliseconds), and how often each router picked the model its
reference-trained twin picked on the live decisions. That agreement is on a
synthetic run, so it checks plumbing; ``perf_encoder_routing.py`` measures it
on logged ScienceWorld runs.

Run: ``.venv/bin/python benchmarks/perf_router_latency.py [--episodes-per-task 2] [--embedders minilm minilm-static]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from perf_history_encoder import decision_points, percentile, print_table, synthetic_episodes

from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.pool import load_pool
from harness.types import Message, ModelCard, TurnState
from routers import make_router
from routers.base import Router
from routers.learned.embedding import CachedEmbedder, Embedder
from routers.learned.encoder_spec import EMBEDDERS, REFERENCE_EMBEDDER, make_embedder
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.train import TrainOptions, train_router
from routers.learned.value_router import ValueRouter

LEARNED = ("ridge", "cluster", "lgbm", "mtrouter")
FIXED = ("single", "random", "heuristic")
TURNS = 30
GOAL_P50_MS, GOAL_P95_MS = 5.0, 15.0


def state(task: str, history: list[Message], turn: int, cards: list[ModelCard]) -> TurnState:
    return TurnState(
        benchmark="scienceworld",
        task="synthetic",
        variation=0,
        task_description=task,
        history=history,
        turn=turn,
        dollars_spent=0.1,
        budget_dollars=2.0,
        max_turns=50,
        candidates=cards,
    )


def timed_ms(router: Router, turn_state: TurnState, rng: np.random.Generator) -> tuple[float, str]:
    start = time.perf_counter()
    decision = router.route(turn_state, rng)
    return (time.perf_counter() - start) * 1000, decision.model


def fresh_encoder(inner: Embedder, cache: Path, mode: str) -> HistoryEncoder:
    return HistoryEncoder(CachedEmbedder(inner, cache), mode=mode)  # type: ignore[arg-type]


def measure(
    router: Router,
    episodes: list[tuple[str, list[Message]]],
    cards: list[ModelCard],
    inner: Embedder,
    scratch: Path,
    mode: str,
) -> tuple[dict[str, list[float]], list[str]]:
    """Latencies per cache state, and the model chosen at each live decision."""
    rng = np.random.default_rng(0)
    last = [
        state(task, decision_points(messages, TURNS)[-1], TURNS - 1, cards) for task, messages in episodes
    ]
    learned = isinstance(router, ValueRouter)
    times: dict[str, list[float]] = {"warm": [], "live": [], "cold": []}
    for index, turn_state in enumerate(last):
        if learned:
            router.encoder = fresh_encoder(inner, scratch / f"cold-{index}", mode)
        times["cold"].append(timed_ms(router, turn_state, rng)[0])
        for _ in range(5):
            times["warm"].append(timed_ms(router, turn_state, rng)[0])
    if learned:
        router.encoder = fresh_encoder(inner, scratch / "live", mode)
    choices = []
    for task, messages in episodes:
        for turn, history in enumerate(decision_points(messages, TURNS)):
            ms, model = timed_ms(router, state(task, history, turn, cards), rng)
            times["live"].append(ms)
            choices.append(model)
    return times, choices


def cells(times: dict[str, list[float]]) -> list[str]:
    return [f"{percentile(times[c], q):.2f}" for c in ("warm", "live", "cold") for q in (50, 95)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-per-task", type=int, default=2)
    parser.add_argument("--mode", choices=("incremental", "full"), default="incremental")
    parser.add_argument("--embedders", nargs="*", default=list(EMBEDDERS), choices=list(EMBEDDERS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as inside a harness worker: two workers share the two cores
    embedders = [REFERENCE_EMBEDDER] + [name for name in args.embedders if name != REFERENCE_EMBEDDER]

    pool = load_pool("paper6")
    cards, names = pool.cards, pool.names
    episodes = synthetic_episodes(args.episodes_per_task, TURNS, args.seed)
    print(f"load average before start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"{len(episodes)} episodes x {TURNS} turns, pool {pool.name} ({len(cards)} models), "
        f"encoder mode {args.mode}, 1 thread per embedder"
    )
    rows, summary = [], []
    live: dict[str, dict[str, list[float]]] = {}
    chosen: dict[str, dict[str, list[str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        run = write_synthetic_run(
            scratch / "run", cards, {"boil": names[0], "grow-plant": names[1], "measure-melting": names[5]}
        )
        fixed: dict[str, Router] = {
            "single": make_router("single", {"model": names[0]}, names),
            "random": make_router("random", {}, names),
            "heuristic": make_router("heuristic", {}, names),
        }
        for name, router in fixed.items():
            times, _ = measure(router, episodes, cards, make_embedder(REFERENCE_EMBEDDER), scratch, args.mode)
            rows.append(("-", name, *cells(times), ""))
        for embedder_name in embedders:
            inner = make_embedder(embedder_name, threads=1)  # builds the artefact on first use
            start = time.perf_counter()
            inner.embed(["warm-up"])  # the model load is a one-off per process, not a routing cost
            load_s = time.perf_counter() - start
            live[embedder_name], chosen[embedder_name] = {}, {}
            for kind in LEARNED:
                encoder = fresh_encoder(inner, scratch / f"train-cache-{embedder_name}", args.mode)
                out = scratch / f"{kind}-{embedder_name}"
                report = train_router(
                    kind, [run], out, TrainOptions(seed=args.seed), pool=cards, encoder=encoder
                )
                router = make_router(kind, {"checkpoint": str(out), "lam": 0.5, "encoder": encoder}, names)
                times, choices = measure(
                    router, episodes, cards, inner, scratch / f"measure-{kind}-{embedder_name}", args.mode
                )
                live[embedder_name][kind], chosen[embedder_name][kind] = times["live"], choices
                rows.append((embedder_name, kind, *cells(times), str(report.details)))
            summary.append((embedder_name, load_s))
    print_table(
        "Routing decision latency (ms)",
        (
            "embedder",
            "router",
            "warm p50",
            "warm p95",
            "live p50",
            "live p95",
            "cold p50",
            "cold p95",
            "predictor",
        ),
        rows,
    )
    reference_p50 = float(np.median([percentile(live[REFERENCE_EMBEDDER][k], 50) for k in LEARNED]))
    summary_rows = []
    for embedder_name, load_s in summary:
        p50s = [percentile(live[embedder_name][k], 50) for k in LEARNED]
        p95s = [percentile(live[embedder_name][k], 95) for k in LEARNED]
        same = [
            np.mean(np.array(chosen[embedder_name][k]) == np.array(chosen[REFERENCE_EMBEDDER][k]))
            for k in LEARNED
        ]
        met = max(p50s) <= GOAL_P50_MS and max(p95s) <= GOAL_P95_MS
        summary_rows.append(
            (
                embedder_name,
                f"{np.median(p50s):.2f}",
                f"{max(p50s):.2f}",
                f"{max(p95s):.2f}",
                f"{reference_p50 / np.median(p50s):.1f}x",
                "yes" if met else "no",
                " ".join(f"{k}={v:.2f}" for k, v in zip(LEARNED, same, strict=True)),
                f"{load_s:.1f}",
            )
        )
    print_table(
        f"Live decisions of the learned routers, per embedder (goal: p50 <= {GOAL_P50_MS:g} ms and "
        f"p95 <= {GOAL_P95_MS:g} ms for every router)",
        (
            "embedder",
            "median p50",
            "worst p50",
            "worst p95",
            f"speed-up vs {REFERENCE_EMBEDDER}",
            "goal met",
            f"same choice as {REFERENCE_EMBEDDER} (synthetic run)",
            "load s",
        ),
        summary_rows,
    )


if __name__ == "__main__":
    main()
