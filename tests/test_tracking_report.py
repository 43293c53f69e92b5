"""Results tables, plots, the report, MLflow tracking and Optuna tuning on a hand-made benchmark.

The benchmark directory is written with the real RunStore API: three fixed routers,
two single models and a learned toy family swept over three lambdas, on two splits,
with episode records whose means are easy to work out by hand. MLflow runs against
a real SQLite store (and, in one test, a real ``mlflow server`` process).
"""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest

import routers
from harness.config import RouterSpec, RunConfig, to_plain
from harness.frontier import paired_bootstrap_point
from harness.plots import pareto_figure, usage_table
from harness.records import EpisodeRecord, TurnRecord
from harness.report import write_report
from harness.results import episodes, load_points
from harness.seeding import derive_seed
from harness.tracking import load_router_model, log_benchmark, log_router_model, server_command, tracking_uri
from harness.trajectory import RunStore
from harness.tuning import best_points, training_key, training_params, tune
from harness.types import Decision, ModelCard, PriceCard, TurnState
from routers.base import Router

# MLflow's own SQLAlchemy store trips a deprecation warning of SQLAlchemy's; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")

PRICES = {
    "cheap": {"input_per_mtok": 0.1, "output_per_mtok": 0.4, "version": "test"},
    "mid": {"input_per_mtok": 1.0, "output_per_mtok": 4.0, "version": "test"},
    "strong": {"input_per_mtok": 5.0, "output_per_mtok": 20.0, "version": "test"},
}
CARDS = [ModelCard(name=n, price=PriceCard(**p)) for n, p in PRICES.items()]
SECRET = "sk-do-not-log-4242"
TASKS = ["boil", "boil", "melt", "melt"]  # task of episodes 0..3 in every run


class ToyRouter(Router):
    """A learned-router stand-in: quality per model from the checkpoint, minus lambda x price."""

    name = "toy"

    def __init__(self, checkpoint: str, lam: float):
        self.quality = json.loads((Path(checkpoint) / "quality.json").read_text())
        self.lam = lam

    def route(self, state: TurnState, rng: np.random.Generator) -> Decision:
        scores = {
            c.name: self.quality[c.name] - self.lam * (c.price.input_per_mtok + c.price.output_per_mtok)
            for c in state.candidates
        }
        best = max(scores, key=lambda name: scores[name])
        return Decision(model=best, propensity=1.0, scores=scores)


# point -> split -> per-episode (score, cost, turns, switch_rate, {model: dollars}); None = failed episode.
def _episodes(scores, costs, turns, switch_rates, mix):
    return [
        None if s is None else (s, c, t, r, {m: c * share for m, share in mix.items()})
        for s, c, t, r in zip(scores, costs, turns, switch_rates, strict=True)
    ]


POINTS: dict[str, tuple[str, dict[str, Any], dict[str, list]]] = {
    "single:cheap": (
        "single",
        {"model": "cheap"},
        {
            "test_id": _episodes(
                [10, 20, 30, 40], [0.01, 0.02, 0.03, 0.04], [10, 12, 14, 16], [0, 0, 0, 0], {"cheap": 1}
            ),
            "test_ood": _episodes(
                [0, 10, 20, 30], [0.02, 0.02, 0.02, 0.02], [20, 20, 20, 20], [0, 0, 0, 0], {"cheap": 1}
            ),
        },
    ),
    "single:strong": (
        "single",
        {"model": "strong"},
        {
            "test_id": _episodes(
                [60, 70, 80, 90], [1.0, 1.2, 1.4, 1.6], [8, 8, 8, 8], [0, 0, 0, 0], {"strong": 1}
            ),
            "test_ood": _episodes(
                [50, 60, 70, None], [1.0, 1.0, 1.0, None], [9, 9, 9, None], [0, 0, 0, None], {"strong": 1}
            ),
        },
    ),
    "random": (
        "random",
        {},
        {
            "test_id": _episodes(
                [20, 30, 40, 50],
                [0.4, 0.4, 0.4, 0.4],
                [10, 10, 10, 10],
                [0.6, 0.7, 0.8, 0.9],
                {"cheap": 0.1, "mid": 0.3, "strong": 0.6},
            ),
            "test_ood": _episodes(
                [10, 20, 30, 40],
                [0.5, 0.5, 0.5, 0.5],
                [12, 12, 12, 12],
                [0.7, 0.7, 0.7, 0.7],
                {"cheap": 0.1, "mid": 0.3, "strong": 0.6},
            ),
        },
    ),
    "toy@lam=0": (
        "toy",
        {"lam": 0.0},
        {
            "test_id": _episodes(
                [70, 80, 90, 100],
                [1.0, 1.0, 1.0, 1.0],
                [7, 7, 7, 7],
                [0.1, 0.1, 0.1, 0.1],
                {"strong": 0.9, "cheap": 0.1},
            ),
            "test_ood": _episodes(
                [60, 70, 80, 90],
                [1.1, 1.1, 1.1, 1.1],
                [8, 8, 8, 8],
                [0.1, 0.1, 0.1, 0.1],
                {"strong": 0.9, "cheap": 0.1},
            ),
        },
    ),
    "toy@lam=1": (
        "toy",
        {"lam": 1.0},
        {
            "test_id": _episodes(
                [60, 70, 80, 90],
                [0.3, 0.3, 0.3, 0.3],
                [9, 9, 9, 9],
                [0.3, 0.3, 0.3, 0.3],
                {"strong": 0.5, "mid": 0.3, "cheap": 0.2},
            ),
            "test_ood": _episodes(
                [50, 60, 70, 80],
                [0.4, 0.4, 0.4, 0.4],
                [10, 10, 10, 10],
                [0.3, 0.3, 0.3, 0.3],
                {"strong": 0.5, "mid": 0.3, "cheap": 0.2},
            ),
        },
    ),
    "toy@lam=5": (
        "toy",
        {"lam": 5.0},
        {
            "test_id": _episodes(
                [30, 40, 50, 60],
                [0.05, 0.05, 0.05, 0.05],
                [11, 11, 11, 11],
                [0.2, 0.2, 0.2, 0.2],
                {"cheap": 0.8, "mid": 0.2},
            ),
            "test_ood": _episodes(
                [20, 30, 40, 50],
                [0.06, 0.06, 0.06, 0.06],
                [12, 12, 12, 12],
                [0.2, 0.2, 0.2, 0.2],
                {"cheap": 0.8, "mid": 0.2},
            ),
        },
    ),
}


def build_bench(root: Path, selected: dict | None = None) -> Path:
    """A results directory as the orchestrator writes it, through the real RunStore."""
    bench = root / "toybench"
    checkpoint = bench / "models" / "toy"
    checkpoint.mkdir(parents=True)
    (checkpoint / "quality.json").write_text(json.dumps({"cheap": 0.2, "mid": 0.6, "strong": 1.0}))
    definition = {
        "name": "toybench",
        "reference": {"score": 0.0, "cost": 2.0},
        "seeds": [0],
        "pool": "toy-pool",
    }
    if selected:
        definition["selected"] = selected
    (bench / "benchmark.json").write_text(json.dumps(definition))
    for point, (family, params, splits) in POINTS.items():
        params = dict(params, label=point)
        if family == "toy":
            params["checkpoint"] = str(checkpoint)
        for split, eps in splits.items():
            store = RunStore(bench / "runs" / split / point)
            # The fixed routers' runs as if played by real models: only those report wall seconds per turn.
            backend = "litellm" if family in ("single", "random") else "simulated"
            config = RunConfig(
                router=RouterSpec(name=family, params=params), pool="toy-pool", split=split, backend=backend
            )
            store.open(
                {
                    "run": to_plain(config),
                    "pool_sha256": "f" * 64,
                    "price_cards": PRICES,
                    "split_version": "splits-v1",
                    "engine": "fake-engine 1.0",
                }
            )
            for i, episode in enumerate(eps):
                key = f"scienceworld/{TASKS[i]}/{i}"
                base = EpisodeRecord(key, "scienceworld", TASKS[i], i, split, derive_seed(0, key), point)
                if episode is None:
                    store.record_episode(
                        replace(base, status="failed", failure="episode", error="EnvironmentCrashed: boom")
                    )
                    continue
                score, cost, turns, switch_rate, by_model = episode
                store.record_episode(
                    replace(
                        base,
                        score=score,
                        cost=cost,
                        model_cost=cost,
                        cost_by_model=by_model,
                        turns=turns,
                        switches=round(switch_rate * (turns - 1)),
                        switch_rate=switch_rate,
                        duration_s=turns * (0.5 if point == "random" else 0.25),
                    )
                )
                if point == "toy@lam=1" and split == "test_id":
                    path = store.begin_episode(key)
                    for turn in range(turns):  # turns 0..2 to strong, the rest to cheap
                        model = "strong" if turn < 3 else "cheap"
                        store.record_turn(path, TurnRecord(key, turn, model, 0.0, []))
    return bench


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    return build_bench(tmp_path)


# --- results -----------------------------------------------------------------


def test_load_points_matches_hand_computation(bench: Path):
    points = load_points(bench, n_boot=500)
    assert len(points) == 12
    assert set(points["split"]) == {"test_id", "test_ood"}
    row = points[(points["split"] == "test_id") & (points["point"] == "single:cheap")].iloc[0]
    assert (row.family, row.label, row.n, row.failed) == ("single", "single:cheap", 4, 0)
    assert math.isnan(row.lam)
    assert row.mean_score == pytest.approx(25.0)  # (10+20+30+40)/4
    assert row.mean_cost == pytest.approx(0.025)  # (0.01+...+0.04)/4
    assert row.total_cost == pytest.approx(0.10)
    assert row.mean_turns == pytest.approx(13.0)  # (10+12+14+16)/4
    expected = paired_bootstrap_point(
        [10, 20, 30, 40],
        [0.01, 0.02, 0.03, 0.04],
        n_boot=500,
        seed=derive_seed(0, "test_id", "single:cheap") % 2**32,
    )
    assert (row.score_lo, row.score_hi) == expected.score_ci
    assert (row.cost_lo, row.cost_hi) == expected.cost_ci
    assert row.score_lo < 25.0 < row.score_hi

    failed = points[(points["split"] == "test_ood") & (points["point"] == "single:strong")].iloc[0]
    assert (failed.n, failed.failed) == (3, 1)
    assert failed.mean_score == pytest.approx(60.0)  # the failed episode is not averaged
    assert failed.total_cost == pytest.approx(3.0)

    rnd = points[(points["split"] == "test_id") & (points["point"] == "random")].iloc[0]
    assert rnd.switch_rate == pytest.approx(0.75)  # (0.6+0.7+0.8+0.9)/4
    toy = points[(points["split"] == "test_id") & (points["family"] == "toy")].sort_values("lam")
    assert list(toy["lam"]) == [0.0, 1.0, 5.0]
    assert list(toy["mean_score"]) == pytest.approx([85.0, 75.0, 45.0])

    again = load_points(bench, n_boot=500)
    pd.testing.assert_frame_equal(points.drop(columns="params"), again.drop(columns="params"))


def test_episodes_frame_carries_split_and_point(bench: Path):
    frame = episodes(bench)
    assert len(frame) == 48
    toy = frame[(frame["point"] == "toy@lam=5") & (frame["split"] == "test_ood")]
    assert list(toy["score"]) == [20, 30, 40, 50]
    assert set(toy["family"]) == {"toy"} and set(toy["lam"]) == {5.0}


def test_usage_table_by_dollars_and_by_turns(bench: Path):
    dollars = usage_table(bench, "random", "test_id")
    assert list(dollars.columns) == ["cheap", "mid", "strong"]  # cheapest first by price card
    assert list(dollars.index) == ["boil", "melt"]
    assert dollars.loc["boil"].tolist() == pytest.approx([0.1, 0.3, 0.6])
    turns = usage_table(episodes(bench), "toy@lam=1", "test_id", measure="turns")
    # 9 turns per episode: 3 to strong, 6 to cheap.
    assert turns.loc["melt"].tolist() == pytest.approx([6 / 9, 0.0, 3 / 9])


# --- report ------------------------------------------------------------------


def _table_rows(markdown: str, header_start: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_report_without_selection_lists_every_lambda(bench: Path, tmp_path: Path):
    stale = tmp_path / "reports" / "toybench" / "usage_toy_lam_0.123.png"  # from an earlier selection
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old figure")
    path = write_report(bench, tmp_path / "reports", n_boot=300)
    assert not stale.exists()
    assert path == tmp_path / "reports" / "toybench.md"
    text = path.read_text()
    rows = _table_rows(text, "| router | test_id score")
    assert [r[0] for r in rows] == [
        "single:cheap",
        "**single:strong** (best single)",
        "random",
        "toy@lam=0",
        "toy@lam=1",
        "toy@lam=5",
    ]
    strong = rows[1]
    assert strong[1].startswith("75.0 [") and strong[2].startswith("1.30 [")
    assert strong[3].startswith("60.0 [")  # OOD mean over the three finished episodes
    toy1 = rows[4]
    assert toy1[5] == "+0.0"  # 75 - 75
    assert toy1[6] == "-76.9%"  # (0.3 - 1.3) / 1.3
    figures = tmp_path / "reports" / "toybench"
    for name in ("pareto_test_id.png", "pareto_test_ood.png", "usage_toy_lam_1.png"):
        assert (figures / name).stat().st_size > 5000
        assert f"](toybench/{name})" in text
    assert "No tuned λ recorded" in text
    frontier = _table_rows(text, "| family | points | hypervolume")
    toy = next(r for r in frontier if r[0] == "toy")
    # Hypervolume of toy on test_id w.r.t. (score 0, $2): front (0.05,45),(0.3,75),(1.0,85):
    # 0.25*45 + 0.7*75 + 1.0*85 = 11.25 + 52.5 + 85 = 148.75
    assert toy[2] == "148.8"
    switching = _table_rows(text, "| router | test_id switch rate")
    assert next(r for r in switching if r[0] == "random")[1:5] == ["0.75", "10.0", "0.50", "4 (0)"]
    strong = next(r for r in switching if r[0] == "single:strong")
    assert strong[3] == "0.25" and strong[8] == "3 (1)"  # OOD: three finished, one failed
    assert next(r for r in switching if r[0] == "toy@lam=1")[3] == "—"  # simulated: the simulator's time
    assert "s/turn: wall seconds per turn" in text


def test_report_opens_by_saying_who_won_and_has_no_empty_column(bench: Path, tmp_path: Path):
    text = write_report(bench, tmp_path / "reports", n_boot=300).read_text()
    assert "nan" not in text.lower()  # an undefined number is a dash, never a spelled-out NaN
    first = text.split("\n\n")[1]
    # No λ of toy was chosen on val, so none of its test points may headline; random scores 40 less on
    # every paired episode at $0.40 against strong's $1.30.
    ci = r"\[\d+\.\d, \d+\.\d\]"  # a bootstrap interval over the four episodes
    assert re.fullmatch(
        rf"On test_id the best single model is `single:strong`: score 75\.0 {ci} at \$1\.30 per episode\."
        r" No router is shown better than it \(no 95% paired interval above zero\); the closest is `random`:"
        r" Δscore -40\.0 \[-40\.0, -40\.0\] at 31% of its cost, also the best at half its cost or less\."
        r" Left out: `toy`, with no λ chosen on val \(choosing one on test_id would flatter it\)\.",
        first,
    ), first
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if line.startswith("|") and not lines[start - 1].startswith("|"):
            table = [[c.strip() for c in row.strip("|").split("|")] for row in lines[start:]
                     if row.startswith("|")][2:]  # fmt: skip
            table = table[: next((i for i, r in enumerate(table) if not r), len(table))]
            for column in range(len(table[0])):
                assert any(row[column] != "—" for row in table), (line, column)


@pytest.mark.parametrize(
    ("lam", "expected"),
    [
        # toy@lam=0 scores 10 more than strong on every paired episode at $1.00: better.
        (0.0, r" `toy@lam=0` at its val-selected λ: Δscore \+10\.0 \[\+10\.0, \+10\.0\] at 77% of its cost beats it"
         r" \(95% paired interval above zero\)\. At half its cost or less the best is `random`"),
        # toy@lam=1 ties strong on every episode at $0.30: the cheapest match, and at under half the cost.
        (1.0, r" No router is shown better than it \(no 95% paired interval above zero\)\. The cheapest that"
         r" matches it \(non-inferior at margin 5\) is `toy@lam=1` at its val-selected λ: Δscore \+0\.0"
         r" \[\+0\.0, \+0\.0\] at 23% of its cost, also the best at half its cost or less\.$"),
    ],
)  # fmt: skip
def test_report_opening_compares_only_the_val_selected_lambda(tmp_path: Path, lam: float, expected: str):
    """toy@lam=0 beats strong on test; it may headline only when val chose it."""
    bench = build_bench(tmp_path, selected={"toy": {"lam": lam}})
    first = write_report(bench, tmp_path / "reports", n_boot=300).read_text().split("\n\n")[1]
    assert re.search(expected, first), first
    assert f"toy@lam={1 - lam:g}" not in first and "Left out" not in first


def test_frontier_columns_say_what_one_point_families_cannot_reach(tmp_path: Path):
    """As in a benchmark played at each family's selected λ only: one point per family but the singles."""
    import shutil

    bench = build_bench(tmp_path, selected={"toy": {"lam": 1.0}})
    for point in ("toy@lam=0", "toy@lam=5"):
        shutil.rmtree(bench / "runs" / "test_id" / point)
    text = write_report(bench, tmp_path / "reports", n_boot=300).read_text()
    section = text.split("### test_id")[1].split("### test_ood")[0]
    header = next(line for line in section.splitlines() if line.startswith("| family"))
    assert "AIQ (shared range)" not in header and "Shared AIQ range" not in section  # only singles sweep
    rows = {r[0]: r for r in _table_rows(section, "| family")}
    column = header.strip("|").split("|").index(" $ to match best single's score ")
    # toy@lam=1 scores strong's 75 at $0.30; random never scores 75.
    assert rows["toy"][column] == "0.300" and rows["random"][column] == "not reached"


def test_pareto_labels_never_overlap_even_for_points_on_top_of_each_other(bench: Path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    points = load_points(bench, n_boot=100)
    strong = points[(points["point"] == "single:strong") & (points["split"] == "test_id")].iloc[0]
    crowd = (points["split"] == "test_id") & points["point"].isin(["random", "toy@lam=0", "single:cheap"])
    for column in ("mean_cost", "cost_lo", "cost_hi", "mean_score", "score_lo", "score_hi"):
        points.loc[crowd, column] = strong[column]  # four points in one place
    figure = pareto_figure(points, "test_id")
    renderer = FigureCanvasAgg(figure).get_renderer()
    ax = figure.axes[0]
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    assert {"single:strong", "random", "λ=0", "single:cheap", "λ=1"} <= set(boxes)
    names = sorted(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not boxes[a].overlaps(boxes[b]), (a, b)


def test_report_with_selected_lambda_shows_one_toy_row(tmp_path: Path):
    bench = build_bench(tmp_path, selected={"toy": {"lam": 5.0}})
    text = write_report(bench, tmp_path / "reports", n_boot=300).read_text()
    rows = [r[0] for r in _table_rows(text, "| router | test_id score")]
    assert [r for r in rows if r.startswith("toy")] == ["toy@lam=5"]
    assert "toy λ=5.0" in text
    assert (tmp_path / "reports" / "toybench" / "usage_toy_lam_5.png").exists()


# --- MLflow ------------------------------------------------------------------


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One benchmark logged once (creating the SQLite store costs seconds), with a tuning study."""
    root = tmp_path_factory.mktemp("mlflow")
    bench = build_bench(root, selected={"toy": {"lam": 1.0}})
    tune(
        "toy",
        lambda p: (100 - 10 * p["lam"], 1.0 / (1.0 + p["lam"])),
        bench / "optuna.db",
        "toy-val",
        n_trials=3,
        seed=1,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAKE_PROVIDER_API_KEY", SECRET)
        parent = log_benchmark(bench, "c0ffee", n_boot=300)
    import mlflow

    return {"bench": bench, "parent": parent, "client": mlflow.MlflowClient(tracking_uri(bench))}


def _children(client, run_id: str) -> list:
    return client.search_runs(
        [client.get_run(run_id).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )


def test_mlflow_run_structure(logged):
    client, parent = logged["client"], logged["parent"]
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith(str(logged["bench"].resolve() / "mlartifacts"))
    params = run.data.params
    assert params["git_commit"] == "c0ffee"
    assert params["pool_sha256"] == "f" * 64
    assert params["split_version"] == "splits-v1" and params["engine"] == "fake-engine 1.0"
    assert json.loads(params["price/strong"])["output_per_mtok"] == 20.0
    assert params["best_single"] == "single:strong"
    assert all(SECRET not in value for value in params.values())

    families = {r.data.tags["family"]: r for r in _children(client, parent)}
    assert set(families) == {"single", "random", "toy"}
    assert {r.info.run_name for r in families.values()} == {"family single", "family random", "family toy"}
    toy_children = _children(client, families["toy"].info.run_id)
    # Only operating points under a family; its Optuna trials are a table on the family run.
    assert {r.data.tags["kind"] for r in toy_children} == {"point"}
    points = {r.info.run_name: r for r in toy_children}
    assert set(points) == {"toy@lam=0", "toy@lam=1", "toy@lam=5"}
    trials = json.loads(
        Path(client.download_artifacts(families["toy"].info.run_id, "optuna_trials.json")).read_text()
    )
    rows = [dict(zip(trials["columns"], row, strict=True)) for row in trials["data"]]
    assert len(rows) == 3 and {r["param/lam"] for r in rows} >= {0.0, 5.0}
    assert all(r["state"] == "COMPLETE" and r["val/score"] is not None and r["val/cost"] > 0 for r in rows)
    lam1 = points["toy@lam=1"].data
    assert lam1.params["lam"] == "1.0"
    assert lam1.metrics["test_id/score"] == pytest.approx(75.0)
    assert lam1.metrics["test_ood/cost"] == pytest.approx(0.4)
    assert lam1.metrics["test_id/turns"] == pytest.approx(9.0)
    assert lam1.metrics["test_id/switch_rate"] == pytest.approx(0.3)
    assert lam1.metrics["test_id/score_ci_low"] <= 75.0 <= lam1.metrics["test_id/score_ci_high"]
    toy_metrics = families["toy"].data.metrics
    assert toy_metrics["test_id/hypervolume"] == pytest.approx(148.75)
    assert "test_id/aiq" in toy_metrics and "test_ood/score_at_best_single_cost" in toy_metrics
    singles = {r.info.run_name for r in _children(client, families["single"].info.run_id)}
    assert singles == {"single:cheap", "single:strong"}

    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {
        "benchmark.json",
        "figures",
        "frontier_test_id.json",
        "frontier_test_ood.json",
        "family_summary_test_id.json",
        "pareto_test_id.png",
        "pareto_test_ood.png",
    } <= artifacts
    text = Path(client.download_artifacts(parent, "frontier_test_id.json")).read_text()
    table = json.loads(
        text, parse_constant=lambda c: pytest.fail(f"{c} in a table artifact is not strict JSON")
    )
    on_front = dict(zip((row[0] for row in table["data"]), (row[-1] for row in table["data"]), strict=True))
    assert on_front["toy@lam=0"] and on_front["single:cheap"] and not on_front["random"]
    figures = {a.path for a in client.list_artifacts(parent, "figures")}
    assert "figures/usage_toy_lam_1.png" in figures


def test_the_score_cost_view_charts_every_point(logged):
    """The saved view: per split a scatter of score against cost and the Pareto image, over the runs its
    filter finds, which are every operating point (and the parent, which holds the image)."""
    client, parent = logged["client"], logged["parent"]
    experiment = client.get_experiment(client.get_run(parent).info.experiment_id)
    envelope = json.loads(experiment.tags["mlflow.sharedViewState.score-cost"])
    assert envelope["name"] == "Score vs cost" and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    charts = {c["uuid"]: c for c in state["compareRunCharts"]}
    assert set(charts) == {"scatter-test_id", "pareto-test_id", "scatter-test_ood", "pareto-test_ood"}
    scatter = charts["scatter-test_id"]
    assert (scatter["type"], scatter["xaxis"]["key"], scatter["yaxis"]["key"]) == (
        "SCATTER", "test_id/cost", "test_id/score"
    )  # fmt: skip
    assert state["runsHiddenMode"] == "SHOW_ALL" and state["groupBy"]["groupByKeys"] == [
        {"mode": "tag", "groupByData": "kind"}
    ]
    shown = client.search_runs([experiment.experiment_id], filter_string=state["searchFilter"])
    points = {r.info.run_name for r in shown if "test_id/score" in r.data.metrics}
    expected = {
        r.info.run_name for r in client.search_runs([experiment.experiment_id], "tags.kind = 'point'")
    }
    assert points == expected and len(points) >= 5
    assert parent in {r.info.run_id for r in shown}
    images = [a.path for a in client.list_artifacts(parent, "images")]
    assert any(path.startswith("images/pareto_test_id+step+") for path in images)
    # Logging again neither duplicates the image nor touches the view.
    log_benchmark(logged["bench"], "c0ffee", n_boot=300, log_models=False)
    assert sorted(a.path for a in client.list_artifacts(parent, "images")) == sorted(images)
    again = client.get_experiment(experiment.experiment_id).tags["mlflow.sharedViewState.score-cost"]
    assert json.loads(again)["createdAt"] == envelope["createdAt"]


def test_benchmark_model_loads_by_uri_and_routes(logged):
    client = logged["client"]
    toy_run = next(r for r in _children(client, logged["parent"]) if r.data.tags["family"] == "toy")
    models = client.search_logged_models([toy_run.info.experiment_id])
    uri = next(f"models:/{m.model_id}" for m in models if m.source_run_id == toy_run.info.run_id)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(routers.BUILTIN, "toy", f"{__name__}:ToyRouter")
        model = load_router_model(logged["bench"], uri)
        turn = {
            "task_description": "Boil water.",
            "history": [{"role": "user", "content": "You are in the kitchen."}],
            "turn": 0,
        }
        # Selected lambda 1: strong 1.0-25 < mid 0.6-5 < cheap 0.2-0.5, so cheap wins.
        out = model.predict(pd.DataFrame([turn]))
        assert out["model"].tolist() == ["cheap"]
        assert set(out["scores"][0]) == {"cheap", "mid", "strong"}
        # MLflow's schema check wants an optional list column on every row once it is present.
        offered = [turn | {"candidates": ["cheap", "mid"]}, turn | {"candidates": ["mid", "strong"]}]
        free = model.predict(pd.DataFrame(offered), params={"lam": 0.0})
        assert free["model"].tolist() == ["mid", "strong"]


def test_log_router_model_standalone(logged, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bench = logged["bench"]  # reuses the store: creating one costs seconds
    monkeypatch.chdir(tmp_path)
    uri = log_router_model(
        bench / "models" / "toy",
        "toy",
        cards=CARDS,
        benchmark="scienceworld",
        limits={"max_turns": 50, "budget_dollars": 2.0},
        lam=0.0,
    )
    assert uri.startswith("models:/")
    assert list(tmp_path.iterdir()) == []  # nothing lands in the working directory
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(routers.BUILTIN, "toy", f"{__name__}:ToyRouter")
        import mlflow

        mlflow.set_tracking_uri(tracking_uri(bench))
        try:
            model = mlflow.pyfunc.load_model(uri)
        finally:
            mlflow.set_tracking_uri(None)
        out = model.predict(
            pd.DataFrame(
                [{"task_description": "Melt ice.", "history": [], "turn": 3, "candidates": ["cheap", "mid"]}]
            )
        )
    assert out["model"].tolist() == ["mid"]  # lambda 0: the best quality among the candidates offered


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_mlflow_server_serves_the_store(logged):
    bench, parent = logged["bench"], logged["parent"]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    argv, env = server_command(bench, port)
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "mlflow server did not come up within 60 s"
                time.sleep(0.3)
        experiment_id = logged["client"].get_run(parent).info.experiment_id
        found = _post(
            f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id], "max_results": 1000}
        )
        runs = {r["info"]["run_id"]: r for r in found["runs"]}
        assert parent in runs

        def parent_of(run: dict) -> str | None:
            return next(
                (t["value"] for t in run["data"].get("tags", []) if t["key"] == "mlflow.parentRunId"), None
            )

        families = [r for r in runs.values() if parent_of(r) == parent]
        assert len(families) == 3
        family_ids = {r["info"]["run_id"] for r in families}
        assert sum(parent_of(r) in family_ids for r in runs.values()) >= 6  # six points plus trials
        query = urllib.parse.urlencode({"run_id": parent})
        listed = _get(f"{base}/api/2.0/mlflow/artifacts/list?{query}")
        assert {"frontier_test_id.json", "pareto_test_id.png"} <= {f["path"] for f in listed["files"]}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- Optuna ------------------------------------------------------------------


def analytic(calls: list):
    """Score falls and cost falls with lambda: every trial is Pareto-optimal."""

    def evaluate(params: dict) -> tuple[float, float]:
        calls.append(params)
        return 100.0 - 10.0 * params["lam"], 1.0 / (1.0 + params["lam"])

    return evaluate


def test_tuning_resumes_and_counts_complete_trials(tmp_path: Path):
    calls: list = []
    storage = tmp_path / "optuna.db"
    tune("toy", analytic(calls), storage, "toy-val", n_trials=3, seed=7)
    assert len(calls) == 3
    assert [c["lam"] for c in calls[:2]] == [0.0, 5.0]  # the range's ends go first
    study = tune("toy", analytic(calls), storage, "toy-val", n_trials=5, seed=7)
    assert len(calls) == 5
    assert len(study.trials) == 5
    assert len({c["lam"] for c in calls}) == 5  # the resumed sampler does not replay earlier draws
    tune("toy", analytic(calls), storage, "toy-val", n_trials=5, seed=7)
    assert len(calls) == 5
    assert study.user_attrs["family"] == "toy"
    front = best_points(study)
    assert len(front) == 5 and front[0]["lam"] == 5.0  # cheapest first


def test_tuning_reruns_crashed_and_failed_trials(tmp_path: Path):
    storage = tmp_path / "optuna.db"
    calls: list = []
    evaluate = analytic(calls)

    def flaky(params: dict) -> tuple[float, float]:
        if params["lam"] == 5.0:
            raise RuntimeError("engine died")
        return evaluate(params)

    with pytest.raises(RuntimeError, match="engine died"):
        tune("toy", flaky, storage, "toy-val", n_trials=3, seed=0)
    # A crash mid-trial leaves it RUNNING: simulate one with a trial that never reports back.
    study = optuna.load_study(study_name="toy-val", storage=f"sqlite:///{storage}")
    orphan = study.ask()
    orphan.suggest_float("lam", 0.0, 5.0)
    orphan_lam = orphan.params["lam"]
    study = tune("toy", evaluate, storage, "toy-val", n_trials=4, seed=0)
    lams = [c["lam"] for c in calls]
    assert lams[0] == 0.0 and 5.0 in lams and orphan_lam in lams
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert (
        states.count(optuna.trial.TrialState.FAIL) == 2
    )  # the crashed and the orphaned one, kept for the record


def test_budget_constraint_marks_over_budget_trials_infeasible(tmp_path: Path):
    calls: list = []
    study = tune(
        "toy", analytic(calls), tmp_path / "optuna.db", "toy-val", n_trials=6, budget_per_episode=0.5, seed=3
    )
    by_lam = {t.params["lam"]: t for t in study.trials}
    assert by_lam[0.0].constraints == {"budget": pytest.approx(0.5)}  # cost 1.0 - budget 0.5 > 0: infeasible
    assert by_lam[5.0].constraints["budget"] < 0
    feasible = [p["lam"] for p in best_points(study)]
    assert 0.0 not in feasible and 5.0 in feasible
    assert all(1.0 / (1.0 + lam) <= 0.5 for lam in feasible)  # only lambda >= 1 fits the budget


def test_tuning_rejects_a_bad_space(tmp_path: Path):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="'lr'"):
        tune(
            "toy",
            analytic([]),
            tmp_path / "o.db",
            "s",
            2,
            extra_space={"lr": {"type": "float", "low": 1.0, "high": 0.1}},
        )
    with pytest.raises(ConfigError, match="lam_range"):
        tune("toy", analytic([]), tmp_path / "o.db", "s", 2, lam_range=(0.0, 1.0), lam_log=True)


def test_training_key_ignores_lambda_and_order():
    a = training_key("mtrouter", training_params({"lam": 0.3, "lr": 1e-3, "layers": 2}, {"lr", "layers"}))
    assert a == training_key(
        "mtrouter", training_params({"lam": 4.0, "lr": 1e-3, "layers": 2}, {"lr", "layers"})
    )
    assert a == training_key("mtrouter", {"layers": 2, "lr": 1e-3})
    assert a != training_key("mtrouter", {"lr": 1e-3, "layers": 3})
    assert a != training_key("lgbm", {"lr": 1e-3, "layers": 2})


def test_tuning_stops_when_no_trial_can_complete(tmp_path: Path):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="non-finite"):
        tune("toy", lambda params: (math.nan, 1.0), tmp_path / "optuna.db", "toy-val", n_trials=2)


def test_report_skips_a_split_without_finished_episodes(bench: Path, tmp_path: Path):
    store = RunStore(bench / "runs" / "val" / "random")
    store.open(
        {"run": to_plain(RunConfig(router=RouterSpec(name="random"), split="val")), "price_cards": PRICES}
    )
    store.record_episode(
        EpisodeRecord("scienceworld/boil/9", "scienceworld", "boil", 9, "val", status="failed")
    )
    points = load_points(bench, n_boot=100)
    val = points[points["split"] == "val"].iloc[0]
    assert (val.n, val.failed) == (0, 1) and math.isnan(val.mean_score)
    text = write_report(bench, tmp_path / "reports", n_boot=100).read_text()
    assert "### test_ood" in text and "### val" not in text
