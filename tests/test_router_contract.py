"""The router contract's learned side: value models' scikit-learn parameters, training options whose
defaults ``harness train --help`` shows truthfully, and a missing router parameter named before any work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.cli import app
from harness.errors import ConfigError
from harness.pool import load_pool
from routers import make_router, router_class, trainable
from routers.episode_level import EpisodeKNNModel
from routers.learned.classic import RidgeModel
from routers.learned.train import REPORT_FILE, TrainOptions

CARDS = load_pool("paper6").cards
BUILTIN_LEARNED = ("mtrouter", "mtrouter-task", "lgbm", "ridge", "cluster", "episode-knn", "episode-task",
                   "episode-classifier")  # fmt: skip


@pytest.mark.parametrize("kind", BUILTIN_LEARNED)
def test_every_value_model_round_trips_its_constructor_params(kind):
    cls = router_class(kind).model_class
    assert cls is not None and kind in trainable()
    model = cls()
    params = model.get_params()
    assert list(params) == cls.param_names() and "seed" in params
    assert cls(**params).get_params() == params
    changed = model.set_params(seed=7)
    assert changed is model and model.get_params() == {**params, "seed": 7}


def test_set_params_checks_like_the_constructor_and_leaves_the_model_unfitted():
    model = RidgeModel(alpha=2.0, seed=3)
    assert model.get_params() == {"alpha": 2.0, "min_samples": 2, "seed": 3}
    with pytest.raises(ConfigError, match="ridge value model has no parameter 'alpah'"):
        model.set_params(alpah=1.0)
    with pytest.raises(ConfigError, match="episode-knn needs k >= 1"):
        EpisodeKNNModel().set_params(k=0)
    knn = EpisodeKNNModel(k=5)
    knn.vectors = np.ones((2, 3))  # as if fitted
    knn.set_params(k=10)
    assert knn.k == knn.chosen_k == 10 and knn.vectors is None and knn.cards == []


def _help_defaults(command: str) -> dict[str, str]:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"}, terminal_width=250)
    assert result.exit_code == 0, result.output
    found = {}
    for line in result.output.splitlines():
        match = re.search(r"--([a-z][a-z-]*)\s.*\[default: \(?(.*?)\)?\]", line)
        if match:
            found[match.group(1).replace("-", "_")] = match.group(2)
    return found


def test_harness_train_help_shows_the_defaults_training_uses(tmp_path: Path):
    shown = _help_defaults("train")
    defaults = TrainOptions()
    assert set(shown) == {"pool", "lam", "seed", "val_fraction", "ensemble", "init_from"}
    for name, text in shown.items():
        value = getattr(defaults, name)
        assert text == (
            "the pool the runs name" if name == "pool" else "none" if value is None else str(value)
        )

    data = write_synthetic_run(tmp_path / "run", CARDS, {"boil": "gpt-5", "grow-plant": "minimax-m2"}, 6)
    out = tmp_path / "ridge"
    result = CliRunner().invoke(
        app,
        ["train", "ridge", "--data", str(data), "--out", str(out), "--pool", "paper6",
         "-p", f"cache_dir={tmp_path / 'cache'}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / REPORT_FILE).read_text())
    used = report["options"]
    for name in shown:
        if name != "pool":
            assert used[name] == getattr(defaults, name), name
    assert report["lam"] == defaults.lam and used["pool"] == "paper6"
    hyperparams = json.loads((out / "checkpoint.json").read_text())["hyperparams"]
    assert hyperparams == {**RidgeModel().get_params(), "seed": defaults.seed}

    again = CliRunner().invoke(
        app,
        ["train", "ridge", "--data", str(data), "--out", str(tmp_path / "again"), "--pool", "paper6",
         "--lam", "0.25", "-p", "alpha=3", "-p", "min_per_model=1", "-p", f"cache_dir={tmp_path / 'cache'}"],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    report = json.loads((tmp_path / "again" / REPORT_FILE).read_text())
    assert report["lam"] == 0.25 and report["options"]["min_per_model"] == 1
    assert report["options"]["hyperparams"] == {"alpha": 3.0}


def test_a_learned_router_without_its_checkpoint_is_one_line_before_any_work(tmp_path: Path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["run", "--out", str(out), "--router", "ridge", "--split", "train", "--quick"]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        "error: router 'ridge' needs parameter 'checkpoint' (-p checkpoint=...); `harness train ridge` writes one"
    ]
    assert not out.exists()
    with pytest.raises(
        ConfigError, match=r"router 'single' has no parameter 'modle' \(its parameters: model\)"
    ):
        make_router("single", {"modle": "gpt-5"}, [c.name for c in CARDS])
