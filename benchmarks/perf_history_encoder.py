"""Latency and fidelity of the history encoder: ``full`` (reference) versus ``incremental``.

Histories are synthetic but ScienceWorld-shaped and seeded: a task
description, then turns of ``Thought: ...\\nAction: ...`` and engine
observations (room descriptions, door/inventory/thermometer messages,
unknown-action errors). Each episode is encoded turn by turn from a cold
cache, as a live router would see it. Latencies are only meaningful on an
otherwise idle machine, so the load average is printed first; the quality
numbers are deterministic.

Run: ``.venv/bin/python benchmarks/perf_history_encoder.py [--episodes-per-task 3] [--turns 30]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.types import Message
from routers.learned.embedding import CachedEmbedder, SentenceTransformerEmbedder
from routers.learned.history import count_word_pieces, history_text
from routers.learned.history_encoder import HistoryEncoder

SYSTEM_PROMPT = (
    "You are an agent in a text-based science simulator. Each turn, reply with one line 'Thought: ...' "
    "and one line 'Action: ...' using only the valid action templates."
)

ROOM_OBJECTS: dict[str, list[str]] = {
    "kitchen": [
        "a chair. On the chair is: nothing.",
        "a counter. On the counter is: a bowl (containing a red apple, a banana, an orange, a potato), a drawer.",
        "a cupboard. The cupboard door is closed.",
        "a freezer. The freezer door is closed.",
        "a fridge. The fridge door is closed.",
        "a glass jar (containing a substance called sodium chloride)",
        "a lighter",
        "an oven, which is turned off. The oven door is closed.",
        "a sink, which is turned off. In the sink is: nothing.",
        "a stopwatch, which is deactivated.",
        "a stove, which is turned off. On the stove is: nothing.",
        "a table. On the table is: a glass cup (containing nothing).",
        "a thermometer, currently reading a temperature of 10 degrees celsius",
        "a painting",
    ],
    "bathroom": [
        "a bathtub, which is turned off. In the bathtub is: nothing.",
        "a glass cup (containing nothing)",
        "a picture",
        "a sink, which is turned off. In the sink is: nothing.",
        "a toilet. In the toilet is: a drain, which is open, a substance called water.",
    ],
    "workshop": [
        "a table. On the table is: a battery, a black wire, a blue wire, a red light bulb, which is off, a switch, which is off, a violet light bulb, which is off.",
        "a ultra low temperature freezer. The ultra low temperature freezer door is closed.",
        "a wood cup (containing nothing)",
        "an orange wire",
        "a solar panel",
    ],
    "art studio": [
        "a large cupboard. The large cupboard door is closed.",
        "a table. On the table is: a jug (containing nothing).",
        "a wood cup (containing red paint)",
        "a wood cup (containing yellow paint)",
        "a wood cup (containing blue paint)",
    ],
    "greenhouse": [
        "a bee hive. The bee hive door is closed.",
        "a flower pot 1 (containing a banana tree in the adult stage, soil)",
        "a flower pot 2 (containing nothing)",
        "a flower pot 3 (containing soil)",
        "a jug (containing nothing)",
        "a seed jar (containing an apple seed, an apple seed, an apple seed)",
        "a shovel",
        "a sink, which is turned off. In the sink is: nothing.",
    ],
    "foundry": [
        "a blast furnace, which is turned off. The blast furnace door is closed.",
        "a sink, which is turned off. In the sink is: nothing.",
        "a table. On the table is: a metal pot (containing nothing).",
    ],
    "bedroom": [
        "a bed. On the bed is: a mattress. On the mattress is: a white pillow.",
        "a closet. The closet door is closed.",
        "a picture",
        "a table. On the table is: nothing.",
    ],
    "living room": [
        "a couch. On the couch is: a white pillow.",
        "a desk. On the desk is: a drawer.",
        "a picture",
        "a table. On the table is: a book (Moby Dick).",
    ],
    "hallway": ["a picture", "a finger painting"],
    "outside": [
        "an axe",
        "a fire pit (containing nothing)",
        "a fountain (containing a substance called water)",
        "the ground",
        "a baby dove",
        "an adult beaver",
        "a baby wolf",
    ],
}

DOORS: dict[str, list[str]] = {
    "kitchen": ["bathroom", "hallway", "outside"],
    "bathroom": ["kitchen"],
    "workshop": ["hallway"],
    "art studio": ["hallway"],
    "greenhouse": ["hallway", "outside"],
    "foundry": ["outside"],
    "bedroom": ["hallway"],
    "living room": ["hallway"],
    "hallway": ["art studio", "bedroom", "greenhouse", "kitchen", "living room", "workshop"],
    "outside": ["foundry", "greenhouse", "kitchen"],
}


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str  # formatted with {target}
    targets: tuple[str, ...]
    goal_room: str
    goal_actions: tuple[str, ...]  # formatted with {target}


TASK_TYPES: tuple[TaskType, ...] = (
    TaskType(
        "boil",
        "Your task is to boil {target}. For compounds without a boiling point, combining the substance with "
        "something that it can react with may be appropriate. First, focus on the substance. Then, take "
        "actions that will cause it to change its state of matter.",
        ("water", "chocolate", "tin", "lead"),
        "kitchen",
        (
            "pick up metal pot",
            "focus on {target}",
            "move metal pot to stove",
            "activate stove",
            "wait1",
            "use thermometer on {target}",
            "examine {target}",
            "wait1",
            "use thermometer on {target}",
        ),
    ),
    TaskType(
        "freeze",
        "Your task is to freeze {target}. First, focus on the substance. Then, take actions that will cause "
        "it to change its state of matter.",
        ("water", "orange juice", "apple juice"),
        "kitchen",
        (
            "open freezer",
            "pick up glass cup",
            "focus on {target}",
            "move glass cup to freezer",
            "close freezer",
            "wait",
            "open freezer",
            "examine {target}",
        ),
    ),
    TaskType(
        "find-animal",
        "Your task is to find a(n) {target}. First, focus on the thing. Then, move it to the red box in the "
        "kitchen.",
        ("animal", "living thing", "non-living thing"),
        "outside",
        ("focus on baby dove", "pick up baby dove", "open door to kitchen", "move baby dove to red box"),
    ),
    TaskType(
        "grow-plant",
        "Your task is to grow a {target} plant from seed. Seeds can be found in the greenhouse. First, focus on "
        "a seed. Then, make changes to the environment that grow the plant until it reaches the reproducing "
        "life stage.",
        ("apple", "orange", "pea", "avocado"),
        "greenhouse",
        (
            "focus on {target} seed",
            "move {target} seed to flower pot 3",
            "move jug to sink",
            "activate sink",
            "deactivate sink",
            "pour jug into flower pot 3",
            "wait",
            "look at flower pot 3",
            "wait",
            "look at flower pot 3",
        ),
    ),
    TaskType(
        "measure-melting-point",
        "Your task is to measure the melting point of {target}, which is located around the kitchen. First, "
        "focus on the thermometer. Next, focus on the {target}. If the melting point of {target} is above "
        "200.0 degrees celsius, focus on the orange box. If the melting point of {target} is below 200.0 "
        "degrees celsius, focus on the blue box.",
        ("chocolate", "butter", "lead", "ice cream"),
        "kitchen",
        (
            "focus on thermometer",
            "focus on {target}",
            "pick up {target}",
            "move {target} to metal pot",
            "move metal pot to stove",
            "activate stove",
            "use thermometer on {target}",
            "wait1",
            "use thermometer on {target}",
            "focus on blue box",
        ),
    ),
    TaskType(
        "test-conductivity",
        "Your task is to determine if {target} is electrically conductive. The {target} is located around the "
        "workshop. First, focus on the {target}. If it is electrically conductive, place it in the yellow box. "
        "If it is electrically nonconductive, place it in the purple box.",
        ("metal fork", "plastic spoon", "wood block", "copper wire"),
        "workshop",
        (
            "focus on {target}",
            "connect battery anode to orange wire",
            "connect orange wire to {target}",
            "connect {target} to red light bulb",
            "connect red light bulb cathode to battery cathode",
            "wait1",
            "look at red light bulb",
            "move {target} to yellow box",
        ),
    ),
    TaskType(
        "mix-paint",
        "Your task is to use chemistry to create the substance '{target}'. A recipe and some of the ingredients "
        "might be found near the art studio. When you are done, focus on the {target}.",
        ("green paint", "orange paint", "violet paint"),
        "art studio",
        (
            "read recipe",
            "pick up wood cup",
            "pour wood cup into jug",
            "pour wood cup into jug",
            "mix jug",
            "examine jug",
            "focus on {target}",
        ),
    ),
    TaskType(
        "power-component",
        "Your task is to turn on the {target}. First, focus on the {target}. Then, create an electrical circuit "
        "that powers it on.",
        ("red light bulb", "violet light bulb", "buzzer"),
        "workshop",
        (
            "focus on {target}",
            "connect battery anode to {target} anode",
            "connect {target} cathode to black wire",
            "connect black wire to battery cathode",
            "wait1",
            "look at {target}",
        ),
    ),
)

THOUGHTS_MOVE = (
    "I need to get to the {room}; the door from here leads there.",
    "The {room} is the most likely place for what I need, so I will head there.",
    "I have not looked in the {room} yet. Let me go there.",
)
THOUGHTS_GOAL = (
    "Now I should {action} to make progress on the task.",
    "The next step towards the goal is to {action}.",
    "Based on the last observation, I will {action}.",
    "That worked. Next I will {action}.",
)
THOUGHTS_LOOK = (
    "I should look around to see what is in this room.",
    "Let me check my surroundings before acting.",
)
ENGINE_REPLIES = {
    "wait": "You decide to wait for 10 iterations.",
    "wait1": "You decide to wait for 1 iterations.",
    "inventory": "In your inventory, you see:\n\tan orange\n\ta metal pot (containing nothing)",
}


def room_description(room: str, rng: random.Random) -> str:
    objects = ROOM_OBJECTS[room]
    chosen = sorted(
        rng.sample(objects, k=max(1, min(len(objects), rng.randint(len(objects) - 2, len(objects)))))
    )
    doors = "\n\t".join(f"A door to the {other} (that is open)" for other in DOORS[room])
    things = "\n\t".join(["the agent", "a substance called air", *chosen])
    return f"This room is called the {room}. In it, you see: \n\t{things}\nYou also see:\n\t{doors}"


def goal_observation(action: str, rng: random.Random) -> str:
    """What the engine would answer to one of a task's steps."""
    if action in ENGINE_REPLIES:
        return ENGINE_REPLIES[action]
    verb, _, rest = action.partition(" ")
    first, _, second = rest.replace(" into ", " to ").partition(" to ")
    state = rng.choice(["solid", "liquid", "gas"])
    replies = {
        "focus": f"You focus on the {rest.removeprefix('on ')}.",
        "use": f"the thermometer measures a temperature of {rng.randint(10, 180)} degrees celsius",
        "pick": f"You move the {rest.removeprefix('up ')} to the inventory.",
        "move": f"You move the {first} to the {second}.",
        "pour": f"You pour the contents of the {first} into the {second}.",
        "connect": f"{first} is now connected to {second}",
        "activate": f"The {rest} is now activated.",
        "deactivate": f"The {rest} is now deactivated.",
        "open": f"The {rest} is now open.",
        "close": f"The {rest} is now closed.",
        "mix": "Blue and yellow paint mix to produce green paint.",
        "read": "The recipe reads: To make green paint, you need to mix blue paint and yellow paint.",
        "examine": f"a substance called {rest}, which is in the {state} state",
        "look": (
            f"a {rest.removeprefix('at ')}, which is {rng.choice(['on', 'off'])}"
            if "bulb" in rest or "buzzer" in rest
            else f"a {rest.removeprefix('at ')} (containing a {rng.choice(['seedling', 'adult', 'reproducing'])} plant, soil, water)"
        ),
    }
    return replies.get(verb, "No known action matches that input.")


def next_hop(room: str, goal: str) -> str:
    """The first door on a shortest path from ``room`` to ``goal``."""
    frontier, first_hop = [room], {room: room}
    while frontier:
        here = frontier.pop(0)
        if here == goal:
            break
        for there in DOORS[here]:
            if there not in first_hop:
                first_hop[there] = there if here == room else first_hop[here]
                frontier.append(there)
    return first_hop[goal]


def synthetic_episode(task_type: TaskType, target: str, turns: int, seed: int) -> tuple[str, list[Message]]:
    """A system prompt, the opening observation, then ``turns`` (action, observation) pairs.

    The simulated agent mostly heads for the task's room and works through the
    task's steps, with the detours real agents take: looking around, invalid
    actions, inventory checks and wrong turns.
    """
    rng = random.Random(seed)
    room = rng.choice(["kitchen", "hallway", "outside", "bedroom"])
    messages = [Message("system", SYSTEM_PROMPT), Message("user", room_description(room, rng))]
    goals = [step.format(target=target) for step in task_type.goal_actions]
    for _ in range(turns):
        roll = rng.random()
        if roll < 0.1:
            thought, action, observation = (
                rng.choice(THOUGHTS_LOOK),
                "look around",
                room_description(room, rng),
            )
        elif roll < 0.16:
            wrong = rng.choice(
                ["take sodium chloride", "heat water on stove", "go kitchen", "put seed in pot"]
            )
            thought = f"I will try to {wrong}."
            action, observation = wrong, "No known action matches that input."
        elif roll < 0.2:
            thought, action = "Let me check what I am carrying.", "inventory"
            observation = ENGINE_REPLIES["inventory"]
        elif room != task_type.goal_room:
            right_way = next_hop(room, task_type.goal_room)
            nxt = right_way if rng.random() < 0.8 else rng.choice(DOORS[room])
            thought, action = rng.choice(THOUGHTS_MOVE).format(room=nxt), f"go to {nxt}"
            room, observation = nxt, f"You move to the {nxt}."
        else:
            action = goals.pop(0) if goals else rng.choice(task_type.goal_actions).format(target=target)
            thought, observation = (
                rng.choice(THOUGHTS_GOAL).format(action=action),
                goal_observation(action, rng),
            )
        messages.append(Message("assistant", f"Thought: {thought}\nAction: {action}"))
        messages.append(Message("user", observation))
    return task_type.description.format(target=target), messages


def synthetic_episodes(episodes_per_task: int, turns: int, seed: int) -> list[tuple[str, list[Message]]]:
    rng = random.Random(seed)
    episodes = []
    for task_type in TASK_TYPES:
        for index in range(episodes_per_task):
            target = task_type.targets[index % len(task_type.targets)]
            episodes.append(synthetic_episode(task_type, target, turns, rng.randrange(2**31)))
    return episodes


def decision_points(messages: list[Message], turns: int) -> list[list[Message]]:
    """The history a router sees before each of the ``turns`` assistant messages."""
    return [messages[: 2 + 2 * turn] for turn in range(turns)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def time_raw_embedder(embedder: SentenceTransformerEmbedder, short: str, long: str) -> list[tuple[str, ...]]:
    import torch

    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for label, texts, repeats in (
            (f"1 text, {count_word_pieces(short)} wp", [short], 30),
            (f"1 text, {min(256, count_word_pieces(long))} wp", [long], 20),
            ("batch 64 x 256 wp", [long + f" {i}" for i in range(64)], 3),
        ):
            embedder.embed(texts)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                embedder.embed(texts)
                times.append((time.perf_counter() - start) * 1000)
            per_text = statistics.median(times) / len(texts)
            rows.append((str(threads), label, f"{statistics.median(times):.1f}", f"{per_text:.2f}"))
    torch.set_num_threads(embedder.torch_threads)
    return rows


def encode_turn_by_turn(
    mode: str, embedder: SentenceTransformerEmbedder, episodes: list[tuple[str, list[Message]]], turns: int
) -> tuple[np.ndarray, list[float], list[float], str]:
    """Vectors, cold-cache and warm-cache latencies (ms) per decision, and the cold pass's cache counts.

    The warm pass replays the same decisions, as training does on a second epoch or run.
    """
    with tempfile.TemporaryDirectory() as cache_dir:
        cached = CachedEmbedder(embedder, Path(cache_dir))
        encoder = HistoryEncoder(cached, mode=mode)  # type: ignore[arg-type]
        vectors = np.zeros((len(episodes), turns, encoder.dim), dtype=np.float32)
        latencies: dict[str, list[float]] = {"cold": [], "warm": []}
        for cache_state in ("cold", "warm"):
            for e, (task, messages) in enumerate(episodes):
                for t, history in enumerate(decision_points(messages, turns)):
                    start = time.perf_counter()
                    vectors[e, t] = encoder.encode(task, history)
                    latencies[cache_state].append((time.perf_counter() - start) * 1000)
            if cache_state == "cold":
                stats = cached.stats()
        cached.close()
    return vectors, latencies["cold"], latencies["warm"], f"hits {stats.hits} / misses {stats.misses}"


def nearest_neighbours(
    vectors: np.ndarray, episode_of: np.ndarray, k: int, cross_episode: bool
) -> np.ndarray:
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    if cross_episode:
        similarity[episode_of[:, None] == episode_of[None, :]] = -np.inf
    return np.argsort(-similarity, axis=1)[:, :k]


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-per-task", type=int, default=3)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=2, help="threads for the per-decision runs")
    args = parser.parse_args()

    print(f"load average before start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    embedder = SentenceTransformerEmbedder(torch_threads=args.torch_threads)
    start = time.perf_counter()
    embedder.embed(["warm-up"])
    print(f"MiniLM load + first call: {time.perf_counter() - start:.1f} s")

    episodes = synthetic_episodes(args.episodes_per_task, args.turns, args.seed)
    task, messages = episodes[0]
    last_history = decision_points(messages, args.turns)[-1]
    full_text = history_text(task, last_history)
    observation_wp = [count_word_pieces(m.content) for _, ms in episodes for m in ms if m.role == "user"]
    print(
        f"{len(episodes)} episodes x {args.turns} decisions; observation word pieces p50 "
        f"{percentile(observation_wp, 50):.0f} p95 {percentile(observation_wp, 95):.0f}; "
        f"history text {count_word_pieces(full_text)} wp"
    )

    print_table(
        "Raw MiniLM latency (median ms)",
        ("torch threads", "input", "call ms", "ms per text"),
        time_raw_embedder(
            embedder, last_history[-2].content, room_description("kitchen", random.Random(1)) * 2
        ),
    )

    results = {
        mode: encode_turn_by_turn(mode, embedder, episodes, args.turns) for mode in ("full", "incremental")
    }
    full_p50 = percentile(results["full"][1], 50)
    rows = []
    for mode, (_, cold, warm, stats) in results.items():
        p50 = percentile(cold, 50)
        rows.append(
            (
                mode,
                f"{p50:.1f}",
                f"{percentile(cold, 95):.1f}",
                f"{full_p50 / p50:.2f}x",
                stats,
                f"{percentile(warm, 50):.2f}",
                f"{percentile(warm, 95):.2f}",
            )
        )
    print_table(
        "Per-decision encode latency (ms): cold cache, then the same decisions again (warm)",
        ("mode", "cold p50", "cold p95", "speedup vs full", "cold-pass cache", "warm p50", "warm p95"),
        rows,
    )

    full, incremental = results["full"][0], results["incremental"][0]
    cosine = np.einsum("etd,etd->et", full, incremental)
    quality_rows = [("all decisions", f"{cosine.mean():.3f}", f"{cosine.min():.3f}")]
    for turn in (0, 1, 4, 9, 19, args.turns - 1):
        if turn < args.turns:
            column = cosine[:, turn]
            quality_rows.append((f"turn {turn}", f"{column.mean():.3f}", f"{column.min():.3f}"))
    print_table("Cosine(incremental, full) per decision", ("decisions", "mean", "min"), quality_rows)

    flat_full, flat_incremental = full.reshape(-1, full.shape[-1]), incremental.reshape(-1, full.shape[-1])
    episode_of = np.repeat(np.arange(len(episodes)), args.turns)
    nn_rows = []
    for cross in (False, True):
        nn_full = nearest_neighbours(flat_full, episode_of, 10, cross)
        nn_incremental = nearest_neighbours(flat_incremental, episode_of, 10, cross)
        same_top1 = float(np.mean(nn_full[:, 0] == nn_incremental[:, 0]))
        overlap10 = float(
            np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nn_full, nn_incremental, strict=True)])
        )
        nn_rows.append(
            ("other episodes only" if cross else "any other history", f"{same_top1:.3f}", f"{overlap10:.3f}")
        )
    print_table(
        f"Nearest-neighbour agreement over {len(flat_full)} histories",
        ("neighbours from", "same NN@1", "top-10 overlap"),
        nn_rows,
    )


if __name__ == "__main__":
    main()
