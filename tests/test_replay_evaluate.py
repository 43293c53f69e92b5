"""Routers evaluated offline on logged run directories: their probabilities, the loggers' mixture, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from test_learned_routers import CARDS as SYNTHETIC_CARDS
from test_learned_routers import HELPER, hashing_encoder
from typer.testing import CliRunner

from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.cli import app
from harness.config import RouterSpec
from harness.errors import ConfigError
from harness.pool import load_pool
from harness.replay.decisions import turn_state
from harness.replay.evaluate import evaluate_router, load_logs, logging_episodes
from harness.replay.importers import write_run
from harness.replay.logged import LoggedEpisode, LoggedTurn, link_histories
from harness.replay.ope import INTERVAL_CONDITIONAL, FQEConfig, OPEConfig
from harness.replay.policies import episode_key, policy_table
from harness.trajectory import read_lines
from harness.types import Decision, Message
from routers import make_router
from routers.base import Router
from routers.learned.train import TrainOptions, train_router

CARDS = load_pool("paper6").cards
NAMES = [c.name for c in CARDS]
FAST = OPEConfig(n_bootstrap=100, min_ess=0.0)


def logged(key: str, score: float, models: list[str], propensity: float, valid=None) -> LoggedEpisode:
    initial = (Message("system", "agent"), Message("user", f"Task: {key}\n\nObservation: room"))
    valid = valid or [True] * len(models)
    drafts = [
        LoggedTurn(
            t,
            m,
            propensity,
            10,
            2,
            0.01 * (t + 1),
            (Message("assistant", f"Action: {t}"), Message("user", f"Observation: {t}")),
            valid=ok,
            extra={"score": float(t)},
        )
        for t, (m, ok) in enumerate(zip(models, valid, strict=True))
    ]
    return LoggedEpisode(
        f"scienceworld/{key}/0",
        "scienceworld",
        key,
        0,
        "test",
        score,
        "done",
        link_histories(initial, drafts),
        initial,
    )


def run_dir(path: Path, router: dict, episodes: list[LoggedEpisode]) -> Path:
    write_run(episodes, path, {"run": {"router": router, "pool": "paper6"}})
    return path


def test_exploration_routers_say_their_exact_probabilities():
    episode = logged(
        "boil", 1.0, ["gpt-5", "gpt-5", "minimax-m2", "kimi-k2-0905"], 0.5, [True, False, True, True]
    )
    sticky = policy_table(make_router("sticky-random", {"switch_prob": 0.3}, NAMES), [episode], CARDS)
    rows = sticky.probabilities[episode_key(episode)]
    n = len(NAMES)
    assert rows[0] == pytest.approx(np.full(n, 1 / n))
    # Conditioned on the logged previous model, not on a draw of its own.
    assert rows[2][NAMES.index("gpt-5")] == pytest.approx(0.7 + 0.3 / n)
    assert rows[3][NAMES.index("minimax-m2")] == pytest.approx(0.7 + 0.3 / n)
    assert rows[3][NAMES.index("gpt-5")] == pytest.approx(0.3 / n)
    assert sticky.logged_probability(episode) == pytest.approx([1 / n, 0.7 + 0.3 / n, 0.3 / n, 0.3 / n])
    uniform = policy_table(make_router("random", {}, NAMES), [episode], CARDS)
    assert uniform.probabilities[episode_key(episode)] == pytest.approx(np.full((4, n), 1 / n))
    heuristic = make_router("heuristic", {}, NAMES)
    strong, _, cheap = heuristic.roles(CARDS)
    rows = policy_table(heuristic, [episode], CARDS).probabilities[episode_key(episode)]
    assert (
        rows[0][NAMES.index(strong)] == 1.0 and rows[2][NAMES.index(strong)] == 1.0
    )  # after an invalid turn
    assert rows[1][[NAMES.index(c) for c in cheap]] == pytest.approx(np.full(len(cheap), 1 / len(cheap)))
    assert rows.sum(axis=1) == pytest.approx(np.ones(4))


def test_a_stochastic_router_without_known_probabilities_is_refused():
    class Coin(Router):
        name = "coin"

        def route(self, state, rng):
            return Decision(model=state.candidates[int(rng.integers(2))].name, propensity=0.5)

    with pytest.raises(ConfigError, match="'coin' draws random numbers .* does not state its probabilities"):
        policy_table(Coin(), [logged("boil", 1.0, ["gpt-5"], 0.5)], CARDS)


def test_mixture_of_loggers_by_hand(tmp_path):
    """single:gpt-5 and random each logged one episode; their mixture's propensities, then TIS of single:gpt-5."""
    n = len(NAMES)
    first = logged("boil", 60.0, ["gpt-5", "gpt-5"], 1.0)
    second = logged("melt", 20.0, ["gpt-5", "kimi-k2-0905"], 1 / n)
    data = load_logs(
        [
            run_dir(tmp_path / "single", {"name": "single", "params": {"model": "gpt-5"}}, [first]),
            run_dir(tmp_path / "random", {"name": "random", "params": {}}, [second]),
        ]
    )
    episodes, described = logging_episodes(data, CARDS)
    assert described.startswith("mixture of 2 logging routers")
    m0 = 0.5 * 1 + 0.5 / n
    m1_first, m1_second = 0.5 * 1 + 0.5 / n**2, 0.5 * 0 + 0.5 / n**2
    by_task = {e.task: [t.propensity for t in e.turns] for e in episodes}
    assert by_task["boil"] == pytest.approx([m0, m1_first / m0], abs=1e-12)
    assert by_task["melt"] == pytest.approx([m0, m1_second / m0], abs=1e-12)
    result = evaluate_router(RouterSpec("single", {"model": "gpt-5"}), data, CARDS, ["tis", "pdis"], FAST)
    assert result.estimates["tis"].score.value == pytest.approx((60.0 / m1_first + 0.0) / 2, abs=1e-9)
    cost = (0.01 / m0 + 0.02 / m1_first + 0.01 / m0 + 0.0) / 2  # the second episode's turn 1 has weight 0
    assert result.estimates["pdis"].cost.value == pytest.approx(cost, abs=1e-9)
    assert result.agreement.logged_probability == pytest.approx(3 / 4)
    # As logged, a single-model logger has no support elsewhere: forcing it is allowed and said.
    _, as_logged = logging_episodes(data, CARDS, "as-logged")
    assert as_logged == "logged propensities (random, single:gpt-5)"


def test_fqe_is_the_value_model_of_a_router_without_one(tmp_path):
    episodes = [logged(f"t{i}", 10.0 * i, ["gpt-5"] * 3, 1 / 6) for i in range(4)]
    data = load_logs([run_dir(tmp_path / "r", {"name": "random", "params": {}}, episodes)])
    spec = RouterSpec("single", {"model": "gpt-5"})
    result = evaluate_router(spec, data, CARDS, ["dm", "dr"], FAST, fqe=FQEConfig(ridge=1e-9))
    assert result.value_model.startswith("FQE") and "previous model (one-hot)" in result.value_model
    assert "refit on each of 200 bootstrap resamples" in result.value_model
    assert result.estimates["dm"].score.interval.endswith("refit on each of 200 resamples")
    assert "intervals of dm, dr: episode bootstrap, value model refit" in result.render()
    # Every episode has the same states, so (nearly unpenalised) FQE's start value is the mean score.
    assert result.estimates["dm"].score.value == pytest.approx(15.0, abs=1e-4)
    assert result.estimates["dm"].cost.value == pytest.approx(0.06, abs=1e-6)
    with pytest.raises(ConfigError, match="no value model of its own"):
        evaluate_router(RouterSpec("random"), data, CARDS, ["dm"], FAST, value_model="router")


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    work = tmp_path_factory.mktemp("learned-replay")
    data = write_synthetic_run(work / "stage-a", SYNTHETIC_CARDS, HELPER, episodes_per_task=12, seed=0)
    encoder = hashing_encoder(work / "cache")
    train_router(
        "ridge", [data], work / "ridge", TrainOptions(lam=0.0, seed=0), pool=SYNTHETIC_CARDS, encoder=encoder
    )
    return data, work / "ridge", encoder


def test_learned_router_batch_table_matches_routing_state_by_state(learned):
    data_dir, checkpoint, encoder = learned
    router = make_router(
        "ridge",
        {"checkpoint": str(checkpoint), "lam": 0.3, "encoder": encoder},
        [c.name for c in SYNTHETIC_CARDS],
    )
    episodes = load_logs([data_dir]).episodes[:10]
    table = policy_table(router, episodes, SYNTHETIC_CARDS)
    assert table.kind == "deterministic"
    stats = router.model.stats
    span = stats.score_high - stats.score_low
    rng = np.random.default_rng(0)
    for episode in episodes:
        for t in range(len(episode.turns)):
            state = turn_state(episode, t, SYNTHETIC_CARDS)
            pick = router.route(state, rng).model
            assert (
                table.probabilities[episode_key(episode)][t][[c.name for c in SYNTHETIC_CARDS].index(pick)]
                == 1.0
            )
            gain, cost = router.values(state)
            before = 0.0 if t == 0 else float(episode.turns[t - 1].extra["score"])
            values = table.values[episode_key(episode)]
            assert values.score[t] == pytest.approx(before + gain * span, abs=1e-9)
            assert values.cost[t] == pytest.approx(cost * stats.mean_episode_cost, abs=1e-12)


def test_learned_router_on_its_uniform_log_uses_its_own_value_model(learned):
    data_dir, checkpoint, encoder = learned
    spec = RouterSpec("ridge", {"checkpoint": str(checkpoint), "lam": 0.0, "encoder": encoder})
    result = evaluate_router(spec, load_logs([data_dir]), SYNTHETIC_CARDS, config=OPEConfig(n_bootstrap=100))
    assert result.value_model.startswith("the router's own") and "conditional on it" in result.value_model
    assert (
        result.estimates["dm"].score.interval == result.estimates["dr"].cost.interval == INTERVAL_CONDITIONAL
    )
    assert result.estimates["tis"].score.interval == "episode bootstrap"
    assert set(result.estimates) == {"dm", "tis", "wtis", "pdis", "wpdis", "dr"}
    # Uniform logging over 6 turns and 3 models: a greedy target keeps about 3^-6 of the episodes.
    assert result.estimates["tis"].score.ess < 30 and not result.estimates["tis"].score.trusted
    assert result.estimates["dm"].score.trusted
    assert 0 < result.agreement.logged_probability < 1
    assert result.agreement.mean_advantage is not None and result.agreement.mean_advantage >= 0


def test_replay_and_import_commands(tmp_path):
    episodes = [logged(f"t{i}", 10.0 * i, ["gpt-5", "minimax-m2"], 1 / 6) for i in range(3)]
    run = run_dir(tmp_path / "r", {"name": "random", "params": {}}, episodes)
    runner = CliRunner()
    result = runner.invoke(app, ["import", "run", str(run), str(tmp_path / "copy")])
    assert result.exit_code == 0, result.output
    assert "3 episode" in result.output
    result = runner.invoke(
        app,
        ["replay", "--router", "single", "-p", "model=gpt-5", "--data", str(tmp_path / "copy"),
         "--estimators", "tis,dm", "--clip", "50", "--bootstrap", "50"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "logging: logged propensities (random)" in result.output
    assert "weight clip: 50.0" in result.output
    assert re.search(r"^tis\s+[-\d.]+ \[", result.output, re.MULTILINE)
    assert "probability of the logged model 0.500" in result.output
    bad = runner.invoke(app, ["replay", "--router", "random", "--data", str(run), "--estimators", "xx"])
    assert bad.exit_code == 2 and "unknown estimator 'xx'" in bad.output
    bad = runner.invoke(app, ["import", "nope", str(run), str(tmp_path / "x")])
    assert bad.exit_code == 2 and "import kind 'nope'" in bad.output


def _relabel(run: Path, router: dict, pool: str = "paper6") -> Path:
    path = run / "config.json"
    config = json.loads(path.read_text())
    config["run"] |= {"router": router, "pool": pool}
    path.write_text(json.dumps(config))
    return run


def test_replay_agreement_table_for_a_small_benchmark_directory(tmp_path, monkeypatch):
    """A results directory with exploration data, two fixed routers and one learned point on one split."""
    helper = {"boil": "gpt-5", "grow-plant": "minimax-m2"}
    bench = tmp_path / "results" / "tiny"
    data = write_synthetic_run(bench / "data" / "explore", CARDS, helper, episodes_per_task=6, seed=0)
    _relabel(data, {"name": "random", "params": {}})
    split = bench / "runs" / "test"
    fixed = write_synthetic_run(split / "random", CARDS, helper, episodes_per_task=3, seed=1)
    _relabel(fixed, {"name": "random", "params": {}})
    encoder = hashing_encoder(tmp_path / "cache")
    monkeypatch.setattr("routers.learned.value_router.build_encoder", lambda config, cache_dir, **_: encoder)
    train_router(
        "ridge",
        [data],
        bench / "models" / "ridge",
        TrainOptions(lam=0.0, seed=0),
        pool=CARDS,
        encoder=encoder,
    )
    point = write_synthetic_run(split / "ridge@lam=0", CARDS, helper, episodes_per_task=3, seed=2)
    spec = {"name": "ridge", "params": {"checkpoint": str(bench / "models" / "ridge"), "lam": 0.0}}
    _relabel(point, spec)
    result = CliRunner().invoke(
        app, ["replay-agreement", str(bench), "--reports", str(tmp_path / "reports"), "--bootstrap", "50"]
    )
    assert result.exit_code == 0, result.output
    report = (tmp_path / "reports" / "tiny-replay.md").read_text()
    assert "## Source: fixed" in report and "## Source: data" in report
    rows = [line for line in report.splitlines() if line.startswith("| test | ridge@lam=0 |")]
    assert len(rows) == 6  # two sources, three estimators
    live = read_lines(point / "episodes.jsonl")
    assert f"| {np.mean([e['score'] for e in live]):.1f} |" in rows[0]
    # The fixed-source dr row is the estimate evaluate_router gives on the random run.
    expected = evaluate_router(
        RouterSpec(spec["name"], spec["params"]), load_logs([fixed]), CARDS, ["dr"], OPEConfig(n_bootstrap=50)
    ).estimates["dr"]
    dr_row = next(r for r in rows if "| dr |" in r)
    assert f"{expected.score.value:.1f} [{expected.score.low:.1f}, {expected.score.high:.1f}]" in dr_row
    assert "| dm | 1/1 |" in report or "| dm | 0/1 |" in report


def test_replay_benchmark_definition_and_report(tmp_path):
    n = len(NAMES)
    single = [logged(f"a{i}", 40.0 + i, ["gpt-5", "gpt-5"], 1.0) for i in range(3)]
    uniform = [logged(f"b{i}", 10.0 * i, ["gpt-5", "minimax-m2"], 1 / n) for i in range(3)]
    run_dir(tmp_path / "logs" / "single", {"name": "single", "params": {"model": "gpt-5"}}, single)
    run_dir(tmp_path / "logs" / "random", {"name": "random", "params": {}}, uniform)
    (tmp_path / "def.yaml").write_text(
        "name: tiny-offline\n"
        "data: [logs/*]\n"
        "routers:\n"
        "  - {name: single, params: {model: gpt-5}}\n"
        "  - {name: single, params: {model: minimax-m2}}\n"
        "estimators: [tis, wpdis]\n"
        "bootstrap: 50\n"
        "min_ess: 2\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "replay-benchmark",
            str(tmp_path / "def.yaml"),
            "--reports",
            str(tmp_path),
            "--results",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = (tmp_path / "tiny-offline-offline.md").read_text()
    assert "**Every number in this report is an offline estimate**" in report
    assert "mixture of 2 logging routers" in report
    rows = [line for line in report.splitlines() if line.startswith("| single:")]
    assert [r.split(" | ")[1] for r in rows] == ["tis", "wpdis", "tis", "wpdis"]
    # Only the single-model episodes have weight for single:gpt-5 at the last turn, all the same one.
    assert "| single:gpt-5 | wpdis | 41.00 [" in report
    assert "## Offline frontier (wpdis estimates)" in report and "Hypervolume" in report
    # Logged to the results store's MLflow like a live benchmark, every run marked as an offline estimate.
    uri = f"sqlite:///{tmp_path / 'tiny-offline' / 'mlflow.db'}"
    assert f"mlflow_uri: {uri}" in result.output
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny-offline")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags["offline_estimate"] for r in runs} == {"true"}
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "replay-benchmark"]
    assert (
        parent.data.tags["estimator"] == "wpdis"
        and "nothing was run" in parent.data.tags["mlflow.note.content"]
    )
    points = {
        (r.data.tags["mlflow.parentRunId"], r.info.run_name, r.data.tags["estimator"])
        for r in runs
        if r != parent
    }
    assert points == {
        (parent.info.run_id, f"{router} [{estimator}]", estimator)
        for router in ("single:gpt-5", "single:minimax-m2")
        for estimator in ("tis", "wpdis")
    }
    gpt5 = next(r for r in runs if r.info.run_name == "single:gpt-5 [wpdis]")
    assert gpt5.data.metrics["offline/score"] == pytest.approx(41.0)
    assert "offline/score_ci_low" in gpt5.data.metrics and "offline/cost_ess" in gpt5.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "frontier_tis.json",
        "frontier_wpdis.json",
        "pareto_wpdis.png",
        "tiny-offline-offline.md",
    } <= artifacts
    frontier = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "frontier_wpdis.json")).read_text()
    )
    assert "single:gpt-5" in str(frontier)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: [nowhere/*]\nrouters: [{name: random}]\n")
    result = CliRunner().invoke(app, ["replay-benchmark", str(bad)])
    assert result.exit_code == 2 and "matches no run directory" in result.output
