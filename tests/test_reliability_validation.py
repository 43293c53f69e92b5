"""Bad definitions, prices and parameters are refused in one line before the first episode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.batch import prepare_check
from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.config import RouterSpec, RunConfig
from harness.errors import ConfigError
from harness.pool import POOLS_DIR, load_pool
from harness.types import ModelCard, PriceCard
from routers.learned.train import TrainOptions, train_router

HARNESS = [sys.executable, "-m", "harness.cli"]


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def pool_with(tmp_path: Path, edit) -> Path:
    """paper6 with one edit applied to its first model (a dict), written as a new pool file."""
    data = yaml.safe_load((POOLS_DIR / "paper6.yaml").read_text())
    edit(data["models"][0])
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- a missing engine prerequisite ------------------------------------------------------------------


def test_a_single_episode_without_java_creates_nothing(tmp_path):
    no_java = tmp_path / "bin"  # a PATH on which there is no java
    no_java.mkdir()
    out = tmp_path / "run"
    result = subprocess.run(
        [*HARNESS, "episode", "--task", "boil", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": str(no_java)},
    )
    assert "Java" in one_error_line(result)
    assert not out.exists()


# -- 8: prices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_an_unchargeable_price_is_refused_when_the_pool_loads(tmp_path, value):
    path = pool_with(tmp_path, lambda m: m["price"].update(input_per_mtok=value))
    with pytest.raises(ConfigError, match=r"model.*'gpt-5'.*input_per_mtok"):
        load_pool(str(path))
    out = tmp_path / "run"
    line = one_error_line(harness("run", "--out", str(out), "--pool", str(path), "--tasks", "boil"))
    assert "input_per_mtok" in line and "gpt-5" in line
    assert not (out / "episodes.jsonl").exists()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A ridge checkpoint trained (real MiniLM encoder) on a small synthetic run over paper6's cards."""
    work = tmp_path_factory.mktemp("ckpt")
    cards = load_pool("paper6").cards
    helper = {"boil": cards[0].name, "grow-plant": cards[1].name}
    data = write_synthetic_run(work / "data", cards, helper, episodes_per_task=6, turns=3)
    train_router(
        "ridge", [data], work / "ridge", TrainOptions(lam=0.0, cache_dir=str(work / "cache")), pool=cards
    )
    return work / "ridge", work / "cache"


def test_a_checkpoint_refuses_a_pool_whose_price_cards_changed_before_any_work(tmp_path, checkpoint):
    ckpt, cache = checkpoint
    params = {"checkpoint": str(ckpt), "cache_dir": str(cache)}
    prepare_check(RunConfig(router=RouterSpec("ridge", params), split="test_id", quick=True))  # same cards
    path = pool_with(tmp_path, lambda m: m["price"].update(output_per_mtok=m["price"]["output_per_mtok"] * 2))
    config = RunConfig(router=RouterSpec("ridge", params), pool=str(path), split="test_id", quick=True)
    with pytest.raises(
        ConfigError,
        match=r"model 'gpt-5' has a different price card in this pool \(\$.*\) than in the ridge checkpoint",
    ):
        prepare_check(config)
    out = tmp_path / "run"
    line = one_error_line(
        harness(
            "run",
            "--out",
            str(out),
            "--pool",
            str(path),
            "--router",
            "ridge",
            "--tasks",
            "boil",
            "-p",
            f"checkpoint={ckpt}",
            "-p",
            f"cache_dir={cache}",
        )  # fmt: skip
    )
    assert "different price card" in line and "gpt-5" in line
    assert not (out / "episodes.jsonl").exists()


# -- 11: router parameters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needles",
    [
        (
            ["--router", "sticky-random", "-p", "switch_prob=abc"],
            ["'sticky-random'", "'switch_prob'", "float"],
        ),
        (["--router", "sticky-random", "-p", "switch_prob=.inf"], ["'switch_prob'", "finite"]),
        (["--router", "ridge", "-p", "checkpoint=x", "-p", "lam=abc"], ["'ridge'", "'lam'", "float"]),
        (["--router", "ridge", "-p", "checkpoint=x", "-p", "lam=nan"], ["'ridge'", "'lam'", "nan"]),
        (["--router", "heuristic", "-p", "late_fraction=[1]"], ["'heuristic'", "'late_fraction'", "float"]),
        (["--router", "ridge"], ["router 'ridge' needs parameter 'checkpoint'", "harness train ridge"]),
    ],
)
def test_router_parameters_are_typed_with_errors_naming_router_parameter_and_type(tmp_path, args, needles):
    out = tmp_path / "run"
    line = one_error_line(harness("run", "--out", str(out), "--tasks", "boil", *args))
    for needle in needles:
        assert needle in line, line
    assert "not supported between" not in line and "__init__" not in line


def test_a_pool_profile_of_the_wrong_type_names_the_field(tmp_path):
    path = pool_with(tmp_path, lambda m: m["simulated"].update(skill={"default": "high"}))
    with pytest.raises(ConfigError, match=r"skill\['default'\].*float.*'high'"):
        load_pool(str(path))


# -- 7: the whole benchmark definition before the first episode ------------------------------------


def write_definition(tmp_path: Path, **fields) -> Path:
    definition = {
        "name": "tiny",
        "quick": True,
        "workers": 1,
        "collect": {"router": {"name": "random"}, "split": "train", "quick": True, "seeds": [0]},
        "fixed_routers": [{"name": "random"}],
        **fields,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


@pytest.mark.parametrize("problem", ["negative price", "ill-typed fixed router", "unknown model"])
def test_benchmark_refuses_a_bad_definition_before_collecting(tmp_path, problem):
    if problem == "negative price":
        path = write_definition(
            tmp_path, pool=str(pool_with(tmp_path, lambda m: m["price"].update(output_per_mtok=-2.0)))
        )
        needle = "output_per_mtok"
    elif problem == "ill-typed fixed router":
        path = write_definition(
            tmp_path, fixed_routers=[{"name": "sticky-random", "params": {"switch_prob": "x"}}]
        )
        needle = "'switch_prob'"
    else:
        path = write_definition(
            tmp_path, fixed_routers=[{"name": "heuristic", "params": {"cheap": ["gpt-9"]}}]
        )
        needle = "'gpt-9'"
    results = tmp_path / "results"
    line = one_error_line(harness("benchmark", str(path), "--results", str(results), "--no-track"))
    assert needle in line, line
    assert not (results / "tiny" / "data").exists() or not any((results / "tiny" / "data").iterdir())


def test_training_hyperparameters_are_checked_by_name_and_type():
    from routers.learned.train import TrainOptions

    options = TrainOptions.from_params("ridge", {"alpha": 1, "val_fraction": 0.1})
    assert options.val_fraction == 0.1 and options.hyperparams == {"alpha": 1.0}
    with pytest.raises(ConfigError, match=r"'ridge'.*'bogus'"):
        TrainOptions.from_params("ridge", {"bogus": 1})
    with pytest.raises(ConfigError, match=r"'ridge'.*'alpha'.*float"):
        TrainOptions.from_params("ridge", {"alpha": "big"})
    with pytest.raises(ConfigError, match="not a trainable"):
        TrainOptions.from_params("random", {})


def test_cards_compare_in_full(checkpoint):
    """The card check is the checkpoint's own: a changed price version alone is refused too."""
    from routers.learned.value_model import load_value_model

    model = load_value_model(checkpoint[0])
    cards = [
        ModelCard(c.name, PriceCard(c.price.input_per_mtok, c.price.output_per_mtok, "2099-01"))
        for c in model.cards
    ]
    with pytest.raises(ConfigError, match="different price card"):
        model.check_pool(cards)


def test_a_simulated_pool_calibrated_on_another_benchmark_is_refused_naming_one_that_fits(tmp_path):
    """paper6's profiles play HLE through their default skills (gpt-5 about 0.9 accurate): a score that
    means nothing, so the run is refused and nothing is written."""
    out = tmp_path / "run"
    line = one_error_line(
        harness("run", "--benchmark", "hle", "--split", "val", "--quick", "--out", str(out))
    )
    assert line == (
        "error: pool 'paper6' simulates scienceworld, not hle: name a pool calibrated on hle (--pool, e.g. paper6-hle)"
    )
    assert not out.exists()
    prepare_check(RunConfig(benchmark="hle", pool="paper6-hle", split="val", quick=True))


def test_a_variation_without_a_gold_path_is_refused_before_any_episode(tmp_path):
    """Simulated models step along gold paths, which the shipped cache holds for the shipped splits only: a
    split file naming another variation is refused in one line, instead of episodes failing one by one."""
    import json

    from harness.benchmarks import get_benchmark
    from harness.benchmarks.scienceworld import gold_paths

    plugin = get_benchmark("scienceworld")
    split = json.loads(plugin.split_file.read_text())
    cached = {v for task, v in gold_paths() if task == "find-animal"}
    spare = next(v for v in range(269, 0, -1) if v not in cached)  # find-animal has 270 variations
    split["splits"]["test_id"] = {"find-animal": [0, spare]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    out = tmp_path / "run"
    line = one_error_line(harness("run", "--split-file", str(path), "--split", "test_id", "--out", str(out)))
    assert line.startswith("error: simulated models need a gold path per variation; 1 variation(s)")
    assert f"(first: find-animal/{spare})" in line and not out.exists()
