"""The reference ScienceWorld split: which task variations are train, val, test_id and test_ood.

The split lives in a versioned JSON file (``benchmarks/splits/scienceworld-v1.json``,
read by :mod:`harness.splits`) written once by :func:`build_split` from the real
engine's variation counts, so that every run reads the same instances instead of
recomputing them. :func:`build_reversed_split` writes its mirror image
(``scienceworld-reversed-v1.json``): trained and tested in distribution on v1's OOD task
types, with v1's in-distribution types held out, so that a result which only holds on
one side of the reference split shows as such.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zlib
from pathlib import Path

import numpy as np

from harness.config import BENCHMARKS_DIR
from harness.errors import UnknownNameError

VERSION = "scienceworld-v1"
DEFAULT_SPLIT_PATH = BENCHMARKS_DIR / "splits" / f"{VERSION}.json"

TRAIN_TASK_TYPES: tuple[str, ...] = (
    "boil",
    "melt",
    "chemistry-mix",
    "find-animal",
    "find-plant",
    "grow-plant",
    "identify-life-stages-1",
    "lifespan-longest-lived",
    "inclined-plane-determine-angle",
    "measure-melting-point-known-substance",
    "power-component",
    "test-conductivity",
    "mendelian-genetics-known-plant",
)
OOD_TASK_TYPES: tuple[str, ...] = (
    "freeze",
    "change-the-state-of-matter-of",
    "chemistry-mix-paint-secondary-color",
    "find-non-living-thing",
    "grow-fruit",
    "identify-life-stages-2",
    "lifespan-shortest-lived",
    "inclined-plane-friction-unnamed-surfaces",
    "use-thermometer",
    "power-component-renewable-vs-nonrenewable-energy",
    "test-conductivity-of-unknown-substances",
    "mendelian-genetics-unknown-plant",
)

TOPICS: dict[str, str] = {
    "boil": "thermodynamics",
    "melt": "thermodynamics",
    "freeze": "thermodynamics",
    "change-the-state-of-matter-of": "thermodynamics",
    "use-thermometer": "thermodynamics",
    "measure-melting-point-known-substance": "thermodynamics",
    "chemistry-mix": "chemistry",
    "chemistry-mix-paint-secondary-color": "chemistry",
    "find-animal": "biology",
    "find-plant": "biology",
    "find-non-living-thing": "biology",
    "grow-plant": "biology",
    "grow-fruit": "biology",
    "identify-life-stages-1": "biology",
    "identify-life-stages-2": "biology",
    "lifespan-longest-lived": "biology",
    "lifespan-shortest-lived": "biology",
    "inclined-plane-determine-angle": "physics",
    "inclined-plane-friction-unnamed-surfaces": "physics",
    "power-component": "electricity",
    "power-component-renewable-vs-nonrenewable-energy": "electricity",
    "test-conductivity": "electricity",
    "test-conductivity-of-unknown-substances": "electricity",
    "mendelian-genetics-known-plant": "genetics",
    "mendelian-genetics-unknown-plant": "genetics",
}

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test_id", "test_ood")
SEED = 42
FRACTIONS = {"train": 0.6, "val": 0.2, "test_id": 0.2}
MAX_VARIATIONS = 30
MIN_VARIATIONS = 10
QUICK_PER_SPLIT = {"train": 2, "val": 1, "test_id": 1, "test_ood": 1}

PROCEDURE = (
    "For each task type: use variations 0..min(30, engine max)-1; skip the type if the engine has fewer "
    "than 10. OOD task types: every used variation is test_ood. In-distribution task types: "
    "perm = numpy.random.default_rng([42, zlib.crc32(task_type.encode('utf-8'))]).permutation(used); "
    "n_train = floor(0.6*n + 0.5), n_val = floor(0.2*n + 0.5); train = perm[:n_train], "
    "val = perm[n_train:n_train+n_val], test_id = the rest; each list stored sorted. "
    "Quick subset: the smallest 2 train, 1 val, 1 test_id variations of each in-distribution type "
    "and the smallest 1 test_ood variation of each OOD type."
)


REVERSED_VERSION = "scienceworld-reversed-v1"
REVERSED_SPLIT_PATH = BENCHMARKS_DIR / "splits" / f"{REVERSED_VERSION}.json"
REVERSED_PROCEDURE = (
    "scienceworld-v1 with the roles of its task types swapped: v1's 12 OOD task types are the "
    "in-distribution types here (cut into train, val and test_id) and v1's 13 in-distribution types are "
    "test_ood; the variations used, the permutation and the cut are v1's, as follows. " + PROCEDURE
)


def _shuffled(task_type: str, variations: list[int]) -> list[int]:
    rng = np.random.default_rng([SEED, zlib.crc32(task_type.encode("utf-8"))])
    return [int(v) for v in rng.permutation(variations)]


def _cut(variations: list[int]) -> dict[str, list[int]]:
    n = len(variations)
    n_train = int(FRACTIONS["train"] * n + 0.5)
    n_val = int(FRACTIONS["val"] * n + 0.5)
    return {
        "train": sorted(variations[:n_train]),
        "val": sorted(variations[n_train : n_train + n_val]),
        "test_id": sorted(variations[n_train + n_val :]),
    }


def _engine_max_variations(task_types: list[str]) -> dict[str, int]:
    from harness.benchmarks.scienceworld.engine import ScienceWorldJvm

    jvm = ScienceWorldJvm()
    try:
        known = set(jvm.server.getTaskNames())
        missing = [t for t in task_types if t not in known]
        if missing:
            raise UnknownNameError(f"ScienceWorld has no task type {missing[0]!r}")
        return {task: int(jvm.server.getTaskMaxVariations(task)) for task in task_types}
    finally:
        jvm.close()


def build_split(
    path: Path = DEFAULT_SPLIT_PATH,
    train_task_types: tuple[str, ...] = TRAIN_TASK_TYPES,
    ood_task_types: tuple[str, ...] = OOD_TASK_TYPES,
    max_variations: dict[str, int] | None = None,
    version: str = VERSION,
    procedure: str = PROCEDURE,
) -> dict:
    """Write the split file from the engine's variation counts (queried unless given); returns its content."""
    import scienceworld
    from scienceworld.constants import TASKS

    all_types = list(train_task_types) + list(ood_task_types)
    unknown_topic = [t for t in all_types if t not in TOPICS]
    if unknown_topic:
        raise UnknownNameError(f"task type {unknown_topic[0]!r} has no topic in TOPICS")
    engine_max = max_variations or _engine_max_variations(all_types)
    catalog = {task["task_name"]: task for task in TASKS}

    splits: dict[str, dict[str, list[int]]] = {name: {} for name in SPLIT_NAMES}
    task_types: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for task in all_types:
        if engine_max[task] < MIN_VARIATIONS:
            skipped[task] = f"engine has {engine_max[task]} variations (< {MIN_VARIATIONS})"
            continue
        used = list(range(min(MAX_VARIATIONS, engine_max[task])))
        ood = task in ood_task_types
        if ood:
            splits["test_ood"][task] = used
        else:
            for name, variations in _cut(_shuffled(task, used)).items():
                splits[name][task] = variations
        task_types[task] = {
            "engine_name": task,  # our names are the engine's names (tasks.json "task_name", no "task-N-" prefix)
            "task_id": catalog[task]["task_id"],
            "topic": TOPICS[task],
            "role": "ood" if ood else "in_distribution",
            "engine_max_variations": engine_max[task],
            "variations_used": len(used),
        }
    quick = {
        name: {task: variations[: QUICK_PER_SPLIT[name]] for task, variations in per_task.items()}
        for name, per_task in splits.items()
    }
    content = {
        "version": version,
        "benchmark": "scienceworld",
        "scienceworld_version": scienceworld.__version__,
        "seed": SEED,
        "fractions": FRACTIONS,
        "procedure": procedure,
        "topics": {task: TOPICS[task] for task in all_types},
        "task_types": task_types,
        "skipped": skipped,
        "splits": splits,
        "quick": quick,
    }
    _write_json_atomically(path, content)
    return content


def build_reversed_split(
    path: Path = REVERSED_SPLIT_PATH, max_variations: dict[str, int] | None = None
) -> dict:
    """Write scienceworld-reversed-v1: v1's OOD task types in distribution, its in-distribution ones OOD."""
    return build_split(
        path,
        train_task_types=OOD_TASK_TYPES,
        ood_task_types=TRAIN_TASK_TYPES,
        max_variations=max_variations,
        version=REVERSED_VERSION,
        procedure=REVERSED_PROCEDURE,
    )


def _write_json_atomically(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    text = json.dumps(content, indent=1)
    text = re.sub(
        r"\[[\d,\s]*\]", lambda m: "[" + ", ".join(re.findall(r"\d+", m.group(0))) + "]", text
    )  # one line per list
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the split is a shipped data file
    os.replace(tmp, path)


POWERED_VERSION = "scienceworld-powered-v1"
POWERED_SPLIT_PATH = BENCHMARKS_DIR / "splits" / f"{POWERED_VERSION}.json"
POWERED_SPLIT = "test_powered"
POWERED_MULTIPLIER = 12
REVERSED_POWERED_VERSION = "scienceworld-reversed-powered-v1"
REVERSED_POWERED_SPLIT_PATH = BENCHMARKS_DIR / "splits" / f"{REVERSED_POWERED_VERSION}.json"
POWERED_PROCEDURE = (
    "{source}'s splits unchanged, plus test_powered: a stratified in-distribution test split that "
    "estimates test_id's quantity (the mean over test_id's task-type mix of each type's mean score) with "
    "about {k} times its plays. For each in-distribution task type t with c_t test_id variations: "
    "spare = the engine's variations beyond {short}'s first 30, which no {short} split uses; if len(spare) >= {k}*c_t, "
    "test_powered[t] = numpy.random.default_rng([42, zlib.crc32(t.encode('utf-8')), 1]).choice(spare, "
    "{k}*c_t, replace=False), sorted, played once per repeat; otherwise (types with no or few spare "
    "variations) test_powered[t] = test_id[t] plus every spare variation, each played "
    "plays_t = ceil({k}*c_t / len(test_powered[t])) times per repeat. Weights: w_t = c_t / sum(c). Quick "
    "subset: the smallest variation of each type."
)


def build_powered_split(
    path: Path = POWERED_SPLIT_PATH,
    source: Path = DEFAULT_SPLIT_PATH,
    multiplier: int = POWERED_MULTIPLIER,
    version: str = POWERED_VERSION,
) -> dict:
    """Write scienceworld-powered-v1 from v1's file: v1's splits plus the stratified ``test_powered``
    (from the reversed split's file, ``scienceworld-reversed-powered-v1``, its counterpart).

    test_id's 73 variations give a paired interval of about +-9 to +-16 points between two
    routers, too wide to decide a 5-point margin. The engine has thousands more variations of
    the same task types, but unevenly (boil, melt, power-component and identify-life-stages-1
    have none beyond the first 30), so the powered split samples each type in proportion to
    test_id where it can and plays the scarce types' variations more often, and its score
    weighs each type by its share of test_id: the same estimand, with a smaller variance.
    """
    content = json.loads(Path(source).read_text(encoding="utf-8"))
    test_id = content["splits"]["test_id"]
    total = sum(len(v) for v in test_id.values())
    powered: dict[str, list[int]] = {}
    strata: dict[str, dict] = {}
    for task, held_out in sorted(test_id.items()):
        engine_max = content["task_types"][task]["engine_max_variations"]
        spare = list(range(content["task_types"][task]["variations_used"], engine_max))
        wanted = multiplier * len(held_out)
        if len(spare) >= wanted:
            rng = np.random.default_rng([SEED, zlib.crc32(task.encode("utf-8")), 1])
            powered[task] = sorted(int(v) for v in rng.choice(spare, wanted, replace=False))
            plays = 1
        else:
            powered[task] = sorted([*held_out, *spare])
            plays = -(-wanted // len(powered[task]))
        strata[task] = {"weight": len(held_out) / total, "plays": plays}
    name = content["version"]
    short = "v1" if name == "scienceworld-v1" else name
    content.update(
        version=version,
        procedure=f"{POWERED_PROCEDURE.format(k=multiplier, source=name, short=short)} {short}'s procedure: "
        f"{content['procedure']}",
        powered={"source": content["version"], "multiplier": multiplier, "split": POWERED_SPLIT},
    )
    content["splits"][POWERED_SPLIT] = powered
    content["quick"][POWERED_SPLIT] = {task: variations[:1] for task, variations in powered.items()}
    content["strata"] = {POWERED_SPLIT: strata}
    _write_json_atomically(path, content)
    return content
