"""Routing decision latency of every router on CPU, at 30-turn ScienceWorld-shaped histories.

The learned routers are trained (briefly: the predictor's size, not its
quality, sets the latency) on a synthetic logged run over the paper's pool and
then asked to route the last decision of 30-turn histories from
``perf_history_encoder.py``. Three cache states of the embedding cache:

* warm: every text of the history is cached (a repeated state);
* live: an episode routed turn by turn, so each decision embeds only the
  messages the previous turn added, as in a real run;
* cold: nothing cached (a fresh cache per decision), the worst case.

Run: ``.venv/bin/python benchmarks/perf_router_latency.py [--episodes-per-task 2] [--mode incremental]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from perf_history_encoder import decision_points, percentile, print_table, synthetic_episodes

from harness.pool import load_pool
from harness.types import Message, ModelCard, TurnState
from routers import make_router
from routers.base import Router
from routers.learned.embedding import CachedEmbedder, SentenceTransformerEmbedder
from routers.learned.history_encoder import HistoryEncoder
from routers.learned.synthetic import write_synthetic_run
from routers.learned.train import train_router
from routers.learned.value_router import ValueRouter

LEARNED = ("ridge", "cluster", "lgbm", "mtrouter")
TURNS = 30


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


def timed_ms(router: Router, turn_state: TurnState, rng: np.random.Generator) -> float:
    start = time.perf_counter()
    router.route(turn_state, rng)
    return (time.perf_counter() - start) * 1000


def fresh_encoder(inner: SentenceTransformerEmbedder, cache: Path, mode: str) -> HistoryEncoder:
    return HistoryEncoder(CachedEmbedder(inner, cache), mode=mode)  # type: ignore[arg-type]


def measure(
    router: Router,
    episodes: list[tuple[str, list[Message]]],
    cards: list[ModelCard],
    inner: SentenceTransformerEmbedder,
    scratch: Path,
    mode: str,
) -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    last = [
        state(task, decision_points(messages, TURNS)[-1], TURNS - 1, cards) for task, messages in episodes
    ]
    learned = isinstance(router, ValueRouter)
    times: dict[str, list[float]] = {"warm": [], "live": [], "cold": []}
    for index, turn_state in enumerate(last):
        if learned:
            router.encoder = fresh_encoder(inner, scratch / f"cold-{index}", mode)
        times["cold"].append(timed_ms(router, turn_state, rng))
        for _ in range(5):
            times["warm"].append(timed_ms(router, turn_state, rng))
    if learned:
        router.encoder = fresh_encoder(inner, scratch / "live", mode)
    for task, messages in episodes:
        for turn, history in enumerate(decision_points(messages, TURNS)):
            times["live"].append(timed_ms(router, state(task, history, turn, cards), rng))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-per-task", type=int, default=2)
    parser.add_argument("--mode", choices=("incremental", "full"), default="incremental")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as inside a harness worker: two workers share the two cores

    pool = load_pool("paper6")
    cards, names = pool.cards, pool.names
    episodes = synthetic_episodes(args.episodes_per_task, TURNS, args.seed)
    inner = SentenceTransformerEmbedder(torch_threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        run = write_synthetic_run(
            scratch / "run", cards, {"boil": names[0], "grow-plant": names[1], "measure-melting": names[5]}
        )
        routers: dict[str, Router] = {
            "single": make_router("single", {"model": names[0]}, names),
            "random": make_router("random", {}, names),
            "heuristic": make_router("heuristic", {}, names),
        }
        details = {}
        for kind in LEARNED:
            encoder = fresh_encoder(inner, scratch / "train-cache", args.mode)
            report = train_router(kind, [run], scratch / kind, pool=cards, encoder=encoder, seed=args.seed)
            details[kind] = report.details
            params = {"checkpoint": str(scratch / kind), "lam": 0.5, "encoder": encoder}
            routers[kind] = make_router(kind, params, names)
        inner.embed(["warm-up"])  # the model load is a one-off per process, not a routing cost
        print(
            f"{len(episodes)} episodes x {TURNS} turns, pool {pool.name} ({len(cards)} models), "
            f"encoder mode {args.mode}, torch threads 1"
        )
        rows = []
        for name, router in routers.items():
            times = measure(router, episodes, cards, inner, scratch / f"measure-{name}", args.mode)
            cells = [f"{percentile(times[c], q):.2f}" for c in ("warm", "live", "cold") for q in (50, 95)]
            rows.append((name, *cells, str(details.get(name, ""))))
    print_table(
        "Routing decision latency (ms)",
        ("router", "warm p50", "warm p95", "live p50", "live p95", "cold p50", "cold p95", "predictor"),
        rows,
    )


if __name__ == "__main__":
    main()
