"""Logged runs with a known right answer, for tests and latency benchmarks of the learned routers.

Each task type has one model that helps it: every turn that model answers adds
``200 / turns`` points to the final score (ScienceWorld's -100..100 range), any
other model adds nothing. Only the task description tells task types apart;
replies and observations are drawn from the same few texts for every task, so a
router that ranks well has read the task from the history vector. Models are
chosen uniformly at random, like a Stage A logging run: afresh at every turn by
default, or kept from turn to turn and redrawn with probability ``switch_prob``
(the sticky exploration whose opening model decides the episode, which is what
an episode-level router learns from). Runs are written with the real
:class:`~harness.trajectory.RunStore`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from harness.benchmarks.scienceworld.prompt import ScienceWorldFormat, observation_message
from harness.config import to_plain
from harness.records import EpisodeRecord, TurnRecord, count_switches, switch_rate
from harness.trajectory import RunStore
from harness.types import Charge, Message, ModelCard

TASK_DESCRIPTIONS = {
    "boil": "Your task is to boil water. First, focus on the substance. Then, make it change its state of matter.",
    "grow-plant": "Your task is to grow an orange plant from seed. Plant the seed in a flower pot and water it.",
    "measure-melting": "Your task is to measure the melting point of chocolate with the thermometer in the kitchen.",
}
FIRST_OBSERVATION = (
    "This room is called the hallway. You see a door to the kitchen and a door to the workshop."
)
REPLIES = (
    "Thought: I should see what is around me.\nAction: look around",
    "Thought: The kitchen likely has what I need.\nAction: go to kitchen",
    "Thought: Let me check what I carry.\nAction: inventory",
    "Thought: I will open the cupboard.\nAction: open cupboard",
)
OBSERVATIONS = (
    "You move to the kitchen.",
    "In your inventory, you see: an orange.",
    "The cupboard is now open.",
    "No known action matches that input.",
)


def write_synthetic_run(
    out: Path,
    cards: list[ModelCard],
    best_model: dict[str, str],
    episodes_per_task: int = 40,
    turns: int = 6,
    seed: int = 0,
    noise: float = 10.0,
    switch_prob: float = 1.0,
) -> Path:
    """Write a random-router run over the tasks of ``best_model`` (task -> the model that helps it)."""
    rng = np.random.default_rng(seed)
    sticky = switch_prob < 1.0
    router = (
        {"name": "sticky-random", "params": {"switch_prob": switch_prob}}
        if sticky
        else {"name": "random", "params": {}}
    )
    store = RunStore(out)
    store.open(
        {
            "run": {
                "router": router,
                "pool": "synthetic",
                "benchmark": "scienceworld",
            },
            "price_cards": {card.name: to_plain(card.price) for card in cards},
        }
    )
    n = len(cards)
    for task, helper in best_model.items():
        for variation in range(episodes_per_task):
            key = f"scienceworld/{task}/{variation}"
            path = store.begin_episode(key)
            messages = ScienceWorldFormat().initial_messages(TASK_DESCRIPTIONS[task], FIRST_OBSERVATION)
            hits, total = 0, 0.0
            shift = noise * rng.standard_normal()
            card = None
            models: list[str] = []
            by_model: dict[str, float] = {}
            for turn in range(turns):
                previous = card
                if previous is None or not sticky or rng.random() < switch_prob:
                    card = cards[int(rng.integers(n))]
                propensity = 1.0 / n
                if sticky and previous is not None:
                    propensity = switch_prob / n + (1.0 - switch_prob) * (card.name == previous.name)
                hits += card.name == helper
                prompt_tokens, completion_tokens = 300 + 80 * turn, 60
                dollars = card.price.dollars(prompt_tokens, completion_tokens)
                total += dollars
                models.append(card.name)
                by_model[card.name] = by_model.get(card.name, 0.0) + dollars
                last = turn == turns - 1
                final = float(np.clip(-100 + 200 * hits / turns + shift, -100, 100))
                observation = OBSERVATIONS[int(rng.integers(len(OBSERVATIONS)))]
                reply = REPLIES[int(rng.integers(len(REPLIES)))]
                score = final if last else 0.0
                valid = not observation.startswith("No known action")
                charge = Charge(
                    "model", card.name, prompt_tokens, completion_tokens, dollars, card.price.version
                )
                store.record_turn(
                    path,
                    TurnRecord(
                        episode=key,
                        turn=turn,
                        history_len=2 + 2 * turn,
                        initial_messages=messages if turn == 0 else None,
                        task_description=TASK_DESCRIPTIONS[task] if turn == 0 else None,
                        messages=[Message("assistant", reply), observation_message(observation, score)],
                        model=card.name,
                        propensity=propensity,
                        prompt_tokens=prompt_tokens,
                        cached_prompt_tokens=0,
                        uncached_prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        dollars=dollars,
                        charges=[asdict(charge)],
                        output=reply,
                        action="look around",
                        observation=observation,
                        valid=valid,
                        error=None if valid else "invalid_action",
                        score=score,
                        done=last,
                    ),
                )
            store.record_episode(
                EpisodeRecord(
                    episode=key,
                    benchmark="scienceworld",
                    task=task,
                    variation=variation,
                    split="train",
                    seed=seed,
                    router=router["name"],
                    score=final,
                    cost=total,
                    model_cost=total,
                    cost_by_model=by_model,
                    turns=turns,
                    switches=count_switches(models),
                    switch_rate=switch_rate(models),
                    status="done",
                )
            )
    return out
