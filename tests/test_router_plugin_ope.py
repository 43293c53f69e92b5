"""A stochastic router the harness has never seen, installed through a test-only distribution's entry
point, evaluated off-policy with its own exact probabilities.

The router (tests/plugins/frugal_router.py) keeps the previous model with probability ``stay`` and
otherwise draws in inverse proportion to price. The logs are a uniform random router's over the
six-model pool, so each turn's importance ratio is the router's probability of the logged model
times 6; the test works them out by hand from the price cards and compares the estimators'
weights, the trajectory-IS estimate and the command's output with them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_replay_evaluate import CARDS, FAST, NAMES, logged, run_dir
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RouterSpec
from harness.replay.evaluate import evaluate_router, load_logs
from harness.replay.ope import log_arrays
from harness.replay.policies import policy_table
from routers import available, make_router

PLUGINS = Path(__file__).parent / "plugins"
ENTRY_POINTS = "[routing_harness.routers]\nfrugal-sticky = frugal_router:FrugalStickyRouter\n"
STAY = 0.25


@pytest.fixture
def frugal_distribution(tmp_path: Path) -> Iterator[None]:
    """Install a distribution that registers ``frugal-sticky``, which no module of the harness names."""
    assert "frugal-sticky" not in available() and "frugal_router" not in sys.modules
    site = tmp_path / "site"
    info = site / "frugal_router_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: frugal-router-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    added = [str(site), str(PLUGINS)]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            sys.path.remove(entry)
        sys.modules.pop("frugal_router", None)


def by_hand(models: list[str]) -> list[float]:
    """The frugal router's probability of each logged model, given the logged model before it."""
    inverse = {c.name: 1.0 / (c.price.input_per_mtok + c.price.output_per_mtok) for c in CARDS}
    total = sum(inverse.values())
    out = []
    for t, model in enumerate(models):
        keep = STAY if t > 0 else 0.0
        out.append((1 - keep) * inverse[model] / total + (keep if t > 0 and models[t - 1] == model else 0.0))
    return out


def test_a_plugin_stochastic_router_is_evaluated_off_policy_with_its_exact_probabilities(
    frugal_distribution, tmp_path
):
    assert available()["frugal-sticky"] == "frugal_router:FrugalStickyRouter"
    n = len(NAMES)
    logs = {
        "boil": (60.0, ["gpt-5", "gpt-5", "minimax-m2"]),
        "melt": (20.0, ["minimax-m2", "minimax-m2"]),
        "freeze": (90.0, ["kimi-k2-0905", "gpt-5", "gpt-5", "gpt-5"]),
    }
    episodes = [logged(task, score, models, 1 / n) for task, (score, models) in logs.items()]
    data = load_logs([run_dir(tmp_path / "random", {"name": "random", "params": {}}, episodes)])
    weights = {task: np.cumprod(np.array(by_hand(models)) * n) for task, (_, models) in logs.items()}

    router = make_router("frugal-sticky", {"stay": STAY}, NAMES)
    table = policy_table(router, data.episodes, CARDS, data.limits)
    assert table.kind == "stochastic"
    for episode in data.episodes:
        assert table.logged_probability(episode) == pytest.approx(by_hand(logs[episode.task][1]), abs=1e-15)
    arrays = log_arrays(data.episodes, NAMES, table.target())
    for row, episode in enumerate(data.episodes):
        turns = len(episode.turns)
        assert arrays.weights[row, :turns] == pytest.approx(weights[episode.task], rel=1e-12)

    result = evaluate_router(RouterSpec("frugal-sticky", {"stay": STAY}), data, CARDS, ["tis", "pdis"], FAST)
    tis = np.mean([weights[task][-1] * score for task, (score, _) in logs.items()])
    assert result.estimates["tis"].score.value == pytest.approx(tis, rel=1e-12)
    pdis_cost = np.mean(
        [sum(w * 0.01 * (t + 1) for t, w in enumerate(weights[task])) for task in logs]
    )  # turn t of a logged episode cost 0.01 * (t + 1)
    assert result.estimates["pdis"].cost.value == pytest.approx(pdis_cost, rel=1e-12)

    output = CliRunner().invoke(
        app,
        ["replay", "--router", "frugal-sticky", "-p", f"stay={STAY}", "--data", str(tmp_path / "random"),
         "--estimators", "tis", "--bootstrap", "50"],
    )  # fmt: skip
    assert output.exit_code == 0, output.output
    assert "router frugal-sticky (stochastic probabilities)" in output.output
    assert re.search(rf"^tis\s+{tis:.2f} \[", output.output, re.MULTILINE), output.output
