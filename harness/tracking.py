"""MLflow tracking of a benchmark, in a store that lives inside the benchmark's results or on a server.

The store is ``sqlite:///<bench_dir>/mlflow.db`` with artifacts under
``<bench_dir>/mlartifacts``, always given explicitly: MLflow's own defaults
(``./mlflow.db``, ``./mlruns``) depend on the working directory, which would
scatter one benchmark's records over wherever the command happened to run.
Artifact locations are absolute paths (MLflow's); a moved or copied results
directory has them rewritten to its own before anything is logged, so it never
writes into the old place. The store is created whole or not at all
(:func:`harness.storage.create_atomically`), and a full disk while logging is one
line (:func:`harness.storage.guarded`). Given a tracking server's URI
(``tracking_uri``), the same runs, traces and artifacts go to that server instead,
and the server keeps the artifacts; credentials in the URI are handed to MLflow
through its own environment variables, so no MLflow message or log line carries them.

A benchmark is one parent run; under it one run per router family (frontier
numbers, its Optuna trials as a table, the trained router as a pyfunc model) and
under each family one run per operating point, with the same metric names per split
on every point (score, cost, their interval bounds, switch rate, turns). The
experiment keeps a saved view of the runs page, "Score vs cost" (:func:`score_cost_view`):
a scatter of every operating point per split beside the Pareto figure;
``harness ui`` prints its link. Each point's episodes become MLflow traces and
sessions (:mod:`harness.traces`).

Every run is found or created by a stable ``harness.key`` tag, so logging again
(:func:`log_run` after each batch, :func:`log_benchmark` at the end, a resumed
benchmark) updates the same runs and never duplicates a run or a trace. Runs are
created through ``MlflowClient``, which skips MLflow's git and environment
inference; nothing is read from ``os.environ`` into params.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import urllib.parse
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import to_plain
from harness.errors import ConfigError, HarnessError
from harness.layout import ARTIFACTS_DIR, MLFLOW_DB, MODELS_DIR, SEEDS_DIR, ResultsLayout
from harness.plots import pareto_figure, usage_figure
from harness.results import (
    benchmark_definition,
    best_single,
    family_summaries,
    finished_splits,
    frontier_table,
    headline_points,
    load_points,
    point_row,
    provenance,
    reference_point,
    split_sort_key,
)
from harness.storage import create_atomically, guarded
from harness.traces import RunTraceContext, TracedRun, TraceSelection, trace_run
from harness.trajectory import RunStore
from harness.types import ModelCard

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
KEY_TAG = "harness.key"  # the stable identity of a run within its experiment
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI
MODEL_TAG = "router_model"  # on a family run: which checkpoint its logged model is
# MLflow's experiment kind: opens the experiment on its runs, not on the GenAI overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# Router params are logged, except anything that looks like a credential.
SECRET_KEY = re.compile(r"api_?key|secret|password|passwd|token$|credential|auth", re.IGNORECASE)
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
TRIALS_TABLE = "optuna_trials.json"  # a family run's Optuna trials
# MLflow's saved views live in experiment tags under this prefix; the runs page applies one given its key
# in the URL (``viewStateShareKey``), and lists it under "Saved views".
SAVED_VIEW_PREFIX = "mlflow.sharedViewState."
SCORE_COST_VIEW = "score-cost"
# The runs page's address query that opens the saved view as charts (MLflow 3 opens on its GenAI pages
# unless the address asks for the model-training ones).
SCORE_COST_QUERY = f"compareRunsMode=CHART&viewStateShareKey={SCORE_COST_VIEW}&workflowType=machine_learning"
# Quiet, offline MLflow for the duration of a call: no progress bars, no usage telemetry.
QUIET_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
# Where MLflow's HTTP client reads basic-auth credentials; a server URI's user and password go here.
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def tracking_uri(bench_dir: Path) -> str:
    return ResultsLayout(Path(bench_dir)).tracking_uri


def artifact_root(bench_dir: Path) -> str:
    return ResultsLayout(Path(bench_dir)).artifact_root


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """A server URI without its user and password, and those as MLflow's credential variables."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri, {}
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    values = (urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or ""))
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), dict(
        zip(CREDENTIAL_ENV, values, strict=True)
    )


def shown_uri(layout: ResultsLayout) -> str:
    """The layout's tracking URI as it may be printed: without credentials."""
    return split_credentials(layout.tracking_uri)[0]


def _open_store(layout: ResultsLayout) -> None:
    """Make the results directory's own store ready to log to: created whole (once), in its own place."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    def create(tmp: Path) -> None:
        # Creating the store ourselves gives its Default experiment a root inside the benchmark.
        uri = f"sqlite:///{tmp.resolve()}"
        try:
            SqlAlchemyStore(uri, layout.artifact_root)
        finally:  # MLflow keeps an engine per URI; this one's file is gone once the store is in place
            engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
            if engine is not None:
                engine.dispose()

    _set_aside_incomplete(layout)
    create_atomically(layout.mlflow_db, create)
    _rebase_artifacts(layout)


def _set_aside_incomplete(layout: ResultsLayout) -> None:
    """Move a store whose creation never finished (an older harness's, on a full disk) to
    ``mlflow.db.incomplete-N``, so that a fresh one is created in its place."""
    if not layout.mlflow_db.exists():
        return
    import sqlalchemy
    from mlflow.store.db.utils import _all_tables_exist

    engine = sqlalchemy.create_engine(layout.tracking_uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        complete = _all_tables_exist(engine)
    finally:
        engine.dispose()
    if not complete:
        n = 1
        while (aside := layout.mlflow_db.with_name(f"{MLFLOW_DB}.incomplete-{n}")).exists():
            n += 1
        os.replace(layout.mlflow_db, aside)
        log.warning(
            "the MLflow store %s was never completed; kept as %s, creating a new one", layout.mlflow_db, aside
        )


def _rebase_artifacts(layout: ResultsLayout) -> None:
    """Point the store's artifact locations into this results directory if it was moved or copied.

    MLflow records artifact locations as absolute paths; a store that names another directory's
    ``mlartifacts`` (where this results directory was before) has every such location rewritten, so
    a moved or copied results directory logs into its own artifacts, never into the old place.
    """
    import sqlite3

    new = layout.artifact_root
    suffix = f"/{ARTIFACTS_DIR}"
    with contextlib.closing(sqlite3.connect(layout.mlflow_db)) as db:
        found = [
            str(row[0]).removeprefix("file://")
            for row in db.execute("SELECT artifact_location FROM experiments")
        ]
        old = {loc[: loc.rindex(suffix) + len(suffix)] for loc in found if suffix in loc} - {new}
        if not old:
            return
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        with db:
            for previous in old:
                for table in tables:
                    columns = [row[1] for row in db.execute(f"PRAGMA table_info('{table}')")]
                    for column in columns:
                        db.execute(
                            f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                            f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                            (previous, new, previous),
                        )
    log.info("the MLflow store %s was moved: its artifact locations now point into %s", layout.mlflow_db, new)


@contextlib.contextmanager
def _scope(layout: ResultsLayout) -> Iterator[Any]:
    """A client on the benchmark's store (or its tracking server), with MLflow's global URI pointed
    there only meanwhile.

    The fluent API (needed to log and load pyfunc models) reads the global
    tracking URI; it is restored afterwards, as are the loggers, warning filters
    and environment variables touched here.
    """
    import mlflow

    from harness.tracking_server import check_answers

    saved_env = {key: os.environ.get(key) for key in (*QUIET_ENV, *CREDENTIAL_ENV)}
    saved_uri = os.environ.get("MLFLOW_TRACKING_URI")
    logger = logging.getLogger("mlflow")
    saved_level = logger.level
    try:
        os.environ.update(QUIET_ENV)
        logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"mlflow\..*")
            if layout.tracking_server is not None:
                uri, credentials = split_credentials(layout.tracking_server)
                os.environ.update(credentials)
                check_answers(uri)
                faults: Any = contextlib.nullcontext()  # the server's disk is the server's business
            else:
                uri = layout.tracking_uri
                faults = guarded(layout.mlflow_db)
            with faults:
                if layout.tracking_server is None:
                    _open_store(layout)
                mlflow.set_tracking_uri(uri)
                yield mlflow.MlflowClient(tracking_uri=uri)
    finally:
        mlflow.set_tracking_uri(saved_uri)
        logger.setLevel(saved_level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def experiment_name(layout: ResultsLayout, definition: dict[str, Any]) -> str:
    """The benchmark's experiment: its name; on a shared server a seed replicate's is ``<bench>/s<k>``."""
    name = str(definition.get("name") or layout.root.name)
    parent = layout.root.resolve().parent
    if layout.tracking_server is not None and parent.name == SEEDS_DIR:
        return f"{parent.parent.name}/{name}"
    return name


def _experiment_id(client: Any, layout: ResultsLayout, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if layout.tracking_server is not None:  # the server chooses where artifacts go
        if experiment is None:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        return experiment.experiment_id
    root = layout.artifact_root
    if experiment is None:
        return client.create_experiment(
            name, artifact_location=root, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    if experiment.artifact_location.removeprefix("file://") != root:
        raise ConfigError(
            f"MLflow experiment {name!r} in {layout.tracking_uri} keeps artifacts in "
            f"{experiment.artifact_location}, not {root}; was the results directory moved?"
        )
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _param_key(key: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", key)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:MAX_PARAM_CHARS]


def _flat(prefix: str, data: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in data.items() if not SECRET_KEY.search(str(key))}


def _log(
    client: Any, run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None
) -> None:
    from mlflow.entities import Metric, Param

    stamp = int(datetime.now(timezone.utc).timestamp() * 1000)
    data = client.get_run(run_id).data if params or metrics else None
    logged = data.params if data is not None else {}
    params_out = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        param = Param(_param_key(key), _param_value(value))
        if param.key not in logged:
            params_out.append(param)
        elif logged[param.key] != param.value:
            # MLflow params are immutable; the artifacts and metrics logged beside them are current.
            log.warning("run %s: param %s changed since it was first logged; keeping the first", run_id, key)
    # A metric is logged again only when its value changed: logging a run again adds no history point.
    latest = data.metrics if data is not None else {}
    metrics_out = [
        Metric(_param_key(k), float(v), stamp, 0)
        for k, v in (metrics or {}).items()
        if v is not None and math.isfinite(float(v)) and latest.get(_param_key(k)) != float(v)
    ]
    if not params_out and not metrics_out:
        return
    # MLflow takes at most 100 params per batch.
    for start in range(0, max(len(params_out), 1), 100):
        client.log_batch(
            run_id, params=params_out[start : start + 100], metrics=metrics_out if start == 0 else []
        )


def _run(client: Any, experiment_id: str, key: str, name: str, tags: dict[str, str]) -> str:
    """The run with this ``harness.key`` in the experiment, created on first use; its tags are kept current."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1)
    if found:
        run = found[0]
        for tag, value in tags.items():
            if run.data.tags.get(tag) != value:
                client.set_tag(run.info.run_id, tag, value)
        return run.info.run_id
    return client.create_run(experiment_id, run_name=name, tags={KEY_TAG: key, **tags}).info.run_id


def _child(
    client: Any, experiment_id: str, parent_id: str, key: str, name: str, kind: str, **tags: str
) -> str:
    return _run(client, experiment_id, key, name, {PARENT_TAG: parent_id, "kind": kind, **tags})


def _point_metrics(rows: pd.DataFrame) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for row in rows.itertuples():
        for name, value in (
            ("episodes", row.n),
            ("failed", row.failed),
            ("score", row.mean_score),
            ("score_ci_low", row.score_lo),
            ("score_ci_high", row.score_hi),
            ("cost", row.mean_cost),
            ("cost_ci_low", row.cost_lo),
            ("cost_ci_high", row.cost_hi),
            ("total_cost", row.total_cost),
            ("turns", row.mean_turns),
            ("switch_rate", row.switch_rate),
        ):
            metrics[f"{row.split}/{name}"] = value
    return metrics


FAMILY_METRICS = (
    "hypervolume",
    "aiq",
    "aiq_shared",
    "cost_at_best_single_score",
    "cost_ratio_vs_best_single",
    "score_at_best_single_cost",
    "score_gain_vs_best_single",
)


def _studies(bench_dir: Path, storage: str | None = None) -> dict[str, list[Any]]:
    """Family -> Optuna studies of the benchmark (family from the study's user attrs): in its SQLite
    file, or in the ``storage`` URL, which may hold other benchmarks' studies too, so there only this
    one's (named ``<bench>-<family>``) are taken."""
    import optuna

    from harness.tuning import open_storage, storage_uri

    if storage is None:
        path = ResultsLayout(Path(bench_dir)).optuna_db
        if not path.exists():
            return {}
        backend: Any = storage_uri(path)
        prefix = ""
    else:
        backend = open_storage(storage)
        prefix = f"{benchmark_definition(Path(bench_dir)).get('name') or Path(bench_dir).name}-"
    found: dict[str, list[Any]] = {}
    for name in optuna.get_all_study_names(backend):
        if not name.startswith(prefix):
            continue
        study = optuna.load_study(study_name=name, storage=backend)
        found.setdefault(study.user_attrs.get("family", name), []).append(study)
    return found


def _log_trials(client: Any, family_run: str, studies: list[Any]) -> None:
    """The family's Optuna trials as one table on its run (``optuna_trials.json``): trials are how a
    lambda was chosen, not operating points, so they are not runs beside the points."""
    rows = []
    for study in studies:
        for trial in study.get_trials(deepcopy=False):
            values = trial.values or [None, None]
            row = {"study": study.study_name, "trial": trial.number, "state": trial.state.name}
            row |= {f"param/{key}": value for key, value in trial.params.items()}
            row |= {"val/score": values[0], "val/cost": values[1]}
            if trial.constraints:
                row["feasible"] = all(v <= 0 for v in trial.constraints.values())
            rows.append(row)
    if rows:
        _log_table(client, family_run, pd.DataFrame(rows), TRIALS_TABLE)


def _pool_cards(run_dir: str) -> tuple[list[ModelCard], dict[str, Any]]:
    """The pool's cards as the run priced them, and the run config; full cards if the pool file is unchanged."""
    from harness.pool import load_pool
    from harness.types import PriceCard

    config = RunStore(Path(run_dir)).config()
    prices = config.get("price_cards", {})
    try:
        pool = load_pool(config["run"]["pool"])
        if pool.sha256 == config.get("pool_sha256"):
            return pool.cards, config
    except HarnessError:
        pass
    return [ModelCard(name=name, price=PriceCard(**price)) for name, price in prices.items()], config


def _parent_params(bench_dir: Path, definition: dict[str, Any], git_commit: str, single: str | None) -> dict:
    """Provenance of the whole benchmark: code, pool, prices, splits, engine, seeds, definition."""
    origin = provenance(bench_dir)
    params: dict[str, Any] = {
        "bench": definition.get("name") or bench_dir.name,
        "git_commit": git_commit,
        "best_single": single,
        "seeds": definition.get("seeds", origin["seed"]),
    }
    params |= {
        key: values[0] if len(values) == 1 else values
        for key, values in origin.items()
        if key != "price_cards"
    }
    for cards in origin["price_cards"][:1]:
        params |= {f"price/{model}": price for model, price in _flat("", cards).items()}
    return params | _flat("definition/", {k: v for k, v in definition.items() if k != "name"})


def _log_frontiers(
    client: Any,
    run_id: str,
    bench_dir: Path,
    points: pd.DataFrame,
    definition: dict[str, Any],
    single: str | None,
) -> dict[str, pd.DataFrame]:
    """Per split, at the top of the parent's artifacts: the Pareto plot, the frontier and family-summary
    tables; then the usage heatmaps under ``figures/``."""
    name = str(definition.get("name") or bench_dir.name)
    summaries: dict[str, pd.DataFrame] = {}
    for split in finished_splits(points):
        ref_score, ref_cost, _ = reference_point(definition, points, split)
        _log_table(client, run_id, frontier_table(points, split), f"frontier_{split}.json")
        summary = family_summaries(points, split, (ref_score, ref_cost), single)
        if not summary.empty:
            _log_table(
                client, run_id, summary.astype({"aiq_shared_range": str}), f"family_summary_{split}.json"
            )
            summaries[split] = summary
        figure = pareto_figure(points, split, title=f"{name}: score vs cost, {split}")
        client.log_figure(run_id, figure, f"pareto_{split}.png")
        _log_chart_image(client, run_id, figure, f"pareto_{split}")
    for row in headline_points(points, definition).itertuples():
        figure = usage_figure(bench_dir, row.point, "test_id")
        client.log_figure(run_id, figure, f"figures/usage_{_param_key(row.point)}.png")
    return summaries


def score_cost_view(splits: list[str]) -> dict[str, Any]:
    """The runs page's state for the score-cost comparison, in the form of MLflow's saved views.

    Per test split a scatter of every operating point (cost on x, score on y; hovering
    names the point) and the parent run's Pareto figure with the frontier drawn. Runs
    are filtered to the parent and the points and grouped by kind, so the points show
    without expanding any row (MLflow charts only the rows it shows, and does not let a
    saved view expand rows), and every run is charted (its default is the first ten).
    """
    section = "score-cost"
    charts: list[dict[str, Any]] = []
    for split in splits:
        common = {
            "runsCountToCompare": 1000,
            "metricSectionId": section,
            "deleted": False,
            "isGenerated": False,
        }
        charts.append(
            {
                "uuid": f"scatter-{split}",
                "type": "SCATTER",
                "displayName": f"{split}: score against cost per episode ($), every operating point",
                "xaxis": {"key": f"{split}/cost", "type": "METRIC"},
                "yaxis": {"key": f"{split}/score", "type": "METRIC"},
                **common,
            }
        )
        charts.append(
            {
                "uuid": f"pareto-{split}",
                "type": "IMAGE",
                "displayName": f"{split}: Pareto frontier with 95% intervals",
                "imageKeys": [f"pareto_{split}"],
                "step": 0,
                "showRunParams": False,
                **common,
            }
        )
    return {
        "searchFilter": "tags.kind != 'family'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        # Grouped by kind, the points are listed (and charted) flat, not under their collapsed family runs.
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "kind"}]},
        "useGroupedValuesInCharts": False,
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": [
            # Two charts to a row, the scatter and the Pareto figure of one split: wide enough to read.
            {"uuid": section, "name": "Score vs cost", "display": True, "isReordered": False, "columns": 2}
        ],
        "isAccordionReordered": False,
        "hideEmptyCharts": True,
    }


def _log_score_cost_view(client: Any, experiment_id: str, splits: list[str]) -> None:
    """Save :func:`score_cost_view` as the experiment's saved view :data:`SCORE_COST_VIEW`."""
    key = f"{SAVED_VIEW_PREFIX}{SCORE_COST_VIEW}"
    state = json.dumps(score_cost_view(splits), sort_keys=True)
    saved = client.get_experiment(experiment_id).tags.get(key)
    if saved is not None and json.loads(saved).get("state") == state:
        return
    stamp = int(datetime.now(timezone.utc).timestamp() * 1000)
    envelope = {"name": "Score vs cost", "createdAt": stamp, "updatedAt": stamp, "state": state}
    client.set_experiment_tag(experiment_id, key, json.dumps(envelope))


def score_cost_url(bench_dir: Path, base_url: str) -> str | None:
    """The runs page on the benchmark's score-cost view, or None before the benchmark is logged."""
    layout = ResultsLayout(Path(bench_dir))
    if not layout.mlflow_db.exists():
        return None
    with _scope(layout) as client:
        experiment = client.get_experiment_by_name(experiment_name(layout, benchmark_definition(layout.root)))
        if experiment is None or f"{SAVED_VIEW_PREFIX}{SCORE_COST_VIEW}" not in experiment.tags:
            return None
        return f"{base_url}/#/experiments/{experiment.experiment_id}/runs?{SCORE_COST_QUERY}"


def _log_chart_image(client: Any, run_id: str, figure: Any, key: str) -> None:
    """A figure as an MLflow image (step 0) that the runs page's charts can show; logged once per key,
    replaced when the figure changes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:16]
    tag = f"image_sha256/{key}"
    if client.get_run(run_id).data.tags.get(tag) == digest:
        return
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    images = {a.path for a in client.list_artifacts(run_id, "images")}
    if any(path.startswith(f"images/{key}+") for path in images):
        repo = get_artifact_repository(client.get_run(run_id).info.artifact_uri)
        for path in images:
            if path.startswith(f"images/{key}+"):
                repo.delete_artifacts(path)
    buffer.seek(0)
    client.log_image(run_id, Image.open(buffer).convert("RGB"), key=key, step=0)
    client.set_tag(run_id, tag, digest)


def lam_source(definition: dict[str, Any], family: str, lam: float, splits: list[str]) -> str:
    """How an operating point's lambda was chosen, in words for its run description."""
    if math.isnan(lam):
        return "fixed router, no lambda"
    selected = (definition.get("selected") or {}).get(family) or {}
    if selected.get("lam") is not None and math.isclose(float(selected["lam"]), lam):
        return "lambda selected by Optuna on val"
    swept = next(
        (
            r.get("lambdas") or []
            for r in (definition.get("definition") or {}).get("learned") or []
            if r.get("name") == family
        ),
        [],
    )
    if any(math.isclose(float(x), lam) for x in swept):
        return "lambda from the definition's sweep"
    if splits == ["val"]:
        return "lambda proposed by an Optuna trial on val"
    return "lambda given in the router params"


def _point_identity(
    definition: dict[str, Any], family: str, label: str, lam: float, splits: list[str]
) -> tuple[str, dict[str, str]]:
    """A point run's description and the tags that say what it is."""
    source = lam_source(definition, family, lam, splits)
    what = family if math.isnan(lam) else f"{family} at lambda={lam:g}"
    note = f"{what} ({source}); router {label}; evaluated on {', '.join(splits)}."
    tags = {NOTE_TAG: note, "family": family, "lam_source": source, "splits": ",".join(splits)}
    if not math.isnan(lam):
        tags["lam"] = f"{lam:g}"
    return note, tags


def _log_point(
    client: Any, experiment_id: str, family_run: str, definition: dict[str, Any], rows: pd.DataFrame
) -> str:
    """One operating point's run: params, the metrics of every split it ran on, what it is."""
    first = rows.iloc[0]
    splits = sorted(rows["split"], key=split_sort_key)
    _, tags = _point_identity(definition, first.family, first.label, first.lam, splits)
    run_id = _child(client, experiment_id, family_run, f"point:{first.point}", first.point, "point", **tags)
    params = {"label": first.label, "family": first.family, **_flat("router.", first.params)}
    if not math.isnan(first.lam):
        params["lam"] = first.lam
    _log(client, run_id, params=params, metrics=_point_metrics(rows))
    return run_id


def _family_run(client: Any, experiment_id: str, parent: str, family: str) -> str:
    run_id = _child(
        client, experiment_id, parent, f"family:{family}", f"family {family}", "family", family=family
    )
    _log(client, run_id, params={"family": family})
    return run_id


def _log_family(
    client: Any,
    experiment_id: str,
    parent: str,
    family: str,
    points: pd.DataFrame,
    summaries: dict[str, pd.DataFrame],
    studies: list[Any],
    definition: dict[str, Any],
) -> tuple[str, dict[str, str]]:
    """A family run with its frontier metrics and Optuna trials table, one nested run per operating point.

    Returns the family run's id and the point runs' ids by point.
    """
    family_run = _family_run(client, experiment_id, parent, family)
    metrics = {}
    for split, summary in summaries.items():
        for record in summary[summary["family"] == family].to_dict("records"):
            metrics |= {f"{split}/{key}": record[key] for key in FAMILY_METRICS}
    _log(client, family_run, metrics=metrics)
    point_runs = {}
    for point, rows in points[points["family"] == family].groupby("point", sort=True):
        point_runs[str(point)] = run_id = _log_point(client, experiment_id, family_run, definition, rows)
        client.set_terminated(run_id)
    _log_trials(client, family_run, studies)
    return family_run, point_runs


def _parent_run(client: Any, experiment_id: str, name: str, git_commit: str) -> str:
    tags = {
        "kind": "benchmark",
        "bench": name,
        "mlflow.source.git.commit": git_commit,
        NOTE_TAG: f"Benchmark {name}: Pareto plots and frontier tables in the artifacts; one nested run "
        "per router family, under each one run per operating point, whose episodes are the "
        "experiment's traces and sessions. Saved view 'Score vs cost': every point in one chart.",
    }
    return _run(client, experiment_id, "benchmark", name, tags)


def trace_selection(definition: dict[str, Any], override: str | float | None = None) -> TraceSelection:
    """``override``, else the definition's ``trace_episodes``, else every episode."""
    chosen = override if override is not None else (definition.get("definition") or {}).get("trace_episodes")
    return TraceSelection.parse(chosen)


def _trace_point(
    client: Any,
    layout: ResultsLayout,
    experiment_id: str,
    run_id: str,
    rows: pd.DataFrame,
    selection: TraceSelection,
) -> TracedRun:
    """The traces of every run directory (one per split) of one operating point."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # Spans go to the store in batches, a call the client does not offer: the server's REST store, or
    # the local database opened with the benchmark's own artifact root.
    if layout.tracking_server is not None:
        store = client._tracking_client.store
    else:
        store = SqlAlchemyStore(layout.tracking_uri, layout.artifact_root)
    total = TracedRun(0, 0, 0)
    for row in rows.itertuples():
        lam = None if math.isnan(row.lam) else float(row.lam)
        context = RunTraceContext(experiment_id, run_id, row.split, row.point, row.label, lam)
        done = trace_run(store, context, Path(row.run_dir), selection)
        total = TracedRun(
            total.traces + done.traces, total.skipped + done.skipped, total.episodes + done.episodes
        )
    return total


def log_benchmark(
    bench_dir: Path,
    git_commit: str,
    *,
    points: pd.DataFrame | None = None,
    log_models: bool = True,
    n_boot: int = 2000,
    trace_episodes: str | float | None = None,
    tracking_uri: str | None = None,
    tuning_storage: str | None = None,
) -> str:
    """Log a benchmark as a parent run with nested family and point runs and the points' traces.

    Returns the parent's id. Finds the runs and traces an earlier call (or
    :func:`log_run`) made and brings them up to date. ``points`` defaults to
    :func:`harness.results.load_points` of ``bench_dir``. With ``log_models`` each
    learned family's checkpoint (the one its headline point ran with) is logged as
    a pyfunc model under the family run, once per checkpoint. ``trace_episodes``
    (``all``, ``none`` or a fraction) overrides the definition's. ``tracking_uri`` names
    a tracking server to log to instead of the store in ``bench_dir``, ``tuning_storage``
    the Optuna storage URL the benchmark tuned in (default: its SQLite file).
    """
    bench_dir = Path(bench_dir).resolve()
    layout = ResultsLayout(bench_dir, tracking_uri)
    definition = benchmark_definition(bench_dir)
    selection = trace_selection(definition, trace_episodes)
    name = str(definition.get("name") or bench_dir.name)
    points = load_points(bench_dir, n_boot=n_boot) if points is None else points
    single = best_single(points)
    studies = _studies(bench_dir, tuning_storage)
    with _scope(layout) as client:
        experiment_id = _experiment_id(client, layout, experiment_name(layout, definition))
        parent = _parent_run(client, experiment_id, name, git_commit)
        _log(client, parent, params=_parent_params(bench_dir, definition, git_commit, single))
        client.log_dict(parent, definition, "benchmark.json")
        summaries = _log_frontiers(client, parent, bench_dir, points, definition, single)
        _log_score_cost_view(
            client, experiment_id, [s for s in finished_splits(points) if s.startswith("test")]
        )
        for family in sorted(set(points["family"]) | set(studies)):
            family_points = points[points["family"] == family]
            family_run, point_runs = _log_family(
                client, experiment_id, parent, family, points, summaries, studies.get(family, []), definition
            )
            for point, rows in family_points.groupby("point", sort=True):
                _trace_point(client, layout, experiment_id, point_runs[str(point)], rows, selection)
            if log_models:
                _log_family_model(client, layout, family, family_points, definition, family_run)
            client.set_terminated(family_run)
        client.set_terminated(parent)
    return parent


def log_run(
    bench_dir: Path,
    run_dir: Path,
    git_commit: str = "unknown",
    *,
    trace_episodes: str | float | None = None,
    tracking_uri: str | None = None,
) -> str | None:
    """Log one operating point's run directory as it stands: its run (created under the benchmark's parent
    and family runs if need be), its metrics on that split and its episodes' traces. Returns the run's id.

    Meant to be called after each batch finishes, so the UI fills in while a
    benchmark runs; it is idempotent, so calling it again after a resume (or
    :func:`log_benchmark` at the end) adds only what is new. A directory that is not
    an operating point (``runs/<split>/<point>/``, e.g. exploration data) is skipped
    and gives ``None``. ``tracking_uri`` as for :func:`log_benchmark`.
    """
    bench_dir, run_dir = Path(bench_dir).resolve(), Path(run_dir).resolve()
    layout = ResultsLayout(bench_dir, tracking_uri)
    found = layout.point_of(run_dir)
    if found is None:
        return None
    split, point = found.split, found.point
    definition = benchmark_definition(bench_dir)
    selection = trace_selection(definition, trace_episodes)
    name = str(definition.get("name") or bench_dir.name)
    rows = pd.DataFrame([point_row(split, point, run_dir)])
    family = str(rows.iloc[0].family)
    with _scope(layout) as client:
        experiment_id = _experiment_id(client, layout, experiment_name(layout, definition))
        parent = _parent_run(client, experiment_id, name, git_commit)
        family_run = _family_run(client, experiment_id, parent, family)
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`{KEY_TAG}` = 'point:{point}'", max_results=1
        )
        if found:
            # Keep the point's other splits in its description, not just this one.
            logged = [s for s in found[0].data.tags.get("splits", "").split(",") if s]
            splits = sorted(set(logged) | {split}, key=split_sort_key)
        else:
            splits = [split]
        run_id = _log_point(client, experiment_id, family_run, definition, rows)
        _, tags = _point_identity(
            definition, family, str(rows.iloc[0].label), float(rows.iloc[0].lam), splits
        )
        client.set_tag(run_id, NOTE_TAG, tags[NOTE_TAG])
        client.set_tag(run_id, "splits", tags["splits"])
        _trace_point(client, layout, experiment_id, run_id, rows, selection)
    return run_id


def _log_table(client: Any, run_id: str, table: pd.DataFrame, path: str) -> None:
    """A table artifact with NaN as null, so the file is strict JSON the MLflow UI can read.

    MLflow appends to a table already logged under the same name; logging again
    replaces it instead, so the table always matches the run directories.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if path in {artifact.path for artifact in client.list_artifacts(run_id)}:
        get_artifact_repository(client.get_run(run_id).info.artifact_uri).delete_artifacts(path)
    client.log_table(run_id, table.astype(object).where(table.notna(), None), path)


def _checkpoint_identity(checkpoint: Path, lam: float, root: Path | None = None) -> str:
    """Changes when the checkpoint is retrained (its training stamp) or the headline lambda changes; not
    when the results directory ``root`` it is named relative to moves (None: named by its absolute path,
    as before results directories could move)."""
    stamp = checkpoint / "trained-from.json"
    trained = stamp.read_text() if stamp.exists() else str(stamp.parent.stat().st_mtime_ns)
    where = checkpoint.resolve() if root is None else os.path.relpath(checkpoint.resolve(), root.resolve())
    return hashlib.sha256(f"{where}|{trained}|{lam}".encode()).hexdigest()[:16]


def _log_family_model(
    client: Any,
    layout: ResultsLayout,
    family: str,
    family_points: pd.DataFrame,
    definition: dict[str, Any],
    run_id: str,
) -> None:
    """Log the checkpoint the family's headline point ran with, if it has one on disk and it is not
    logged already (the family run's ``router_model`` tag names the one that is)."""
    headline = headline_points(family_points, definition)
    if headline.empty:
        return
    row = headline.iloc[0]
    checkpoint = row.params.get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_dir():
        log.warning("router family %s: checkpoint %s not found; its model is not logged", family, checkpoint)
        return
    identity = _checkpoint_identity(Path(checkpoint), float(row.lam), layout.root)
    logged = client.get_run(run_id).data.tags.get(MODEL_TAG)
    if logged in (identity, _checkpoint_identity(Path(checkpoint), float(row.lam))):
        return
    cards, config = _pool_cards(row.run_dir)
    # A logged model runs anywhere: it keeps no cache directory of this machine (a cache never changes
    # what a router does).
    dropped = ("checkpoint", "lam", "label", "cache_dir")
    extra = {k: v for k, v in row.params.items() if k not in dropped}
    log_router_model(
        Path(checkpoint),
        family,
        cards=cards,
        lam=float(row.lam),
        params=extra,
        benchmark=config["run"]["benchmark"],
        limits=config["run"].get("limits") or {},
        bench_dir=layout.root,
        run_id=run_id,
        tracking_uri=layout.tracking_server,
    )
    client.set_tag(run_id, MODEL_TAG, identity)


def _requirements() -> list[str]:
    """Stated explicitly, so MLflow does not infer them by importing the model in a subprocess (slow)."""
    import mlflow

    try:
        harness = f"routing-harness=={version('routing-harness')}"
    except PackageNotFoundError:
        harness = "routing-harness"
    return [f"mlflow=={mlflow.__version__}", harness]


def log_router_model(
    checkpoint_dir: Path,
    family: str,
    *,
    cards: list[ModelCard],
    benchmark: str,
    limits: dict[str, Any],
    lam: float = 0.0,
    params: dict[str, Any] | None = None,
    bench_dir: Path | None = None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Log a trained router as a pyfunc model and return its model URI.

    ``bench_dir`` defaults to the results layout's ``<bench>/models/<family>/...``
    ancestor of ``checkpoint_dir``. Without ``run_id`` a run named after the family
    is created for the model. ``tracking_uri`` as for :func:`log_benchmark`.
    """
    import mlflow

    from harness.router_model import CHECKPOINT_ARTIFACT, SPEC_ARTIFACT, RouterModel, signature

    checkpoint_dir = Path(checkpoint_dir).resolve()
    if not checkpoint_dir.is_dir():
        raise ConfigError(f"router checkpoint {checkpoint_dir} is not a directory")
    if bench_dir is None:
        parents = [p for p in checkpoint_dir.parents if p.name == MODELS_DIR]
        if not parents:
            raise ConfigError(f"cannot tell the benchmark directory of {checkpoint_dir}; pass bench_dir")
        bench_dir = parents[0].parent
    spec = {
        "family": family,
        "lam": lam,
        "params": {k: v for k, v in (params or {}).items() if not SECRET_KEY.search(k)},
        "benchmark": benchmark,
        "limits": limits,
        "cards": [to_plain(card) for card in cards],
    }
    layout = ResultsLayout(Path(bench_dir), tracking_uri)
    name = experiment_name(layout, benchmark_definition(Path(bench_dir)))
    with _scope(layout) as client, tempfile.TemporaryDirectory() as tmp:
        experiment_id = _experiment_id(client, layout, name)
        if run_id is None:
            run_id = client.create_run(
                experiment_id, run_name=f"model {family}", tags={"kind": "model", "family": family}
            ).info.run_id
        spec_path = Path(tmp) / "router.json"
        spec_path.write_text(json.dumps(spec, indent=2, sort_keys=True))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=f"router-{_param_key(family).replace(' ', '_').replace('/', '_')}",
                python_model=RouterModel(),
                artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_dir), SPEC_ARTIFACT: str(spec_path)},
                signature=signature(lam),
                pip_requirements=_requirements(),
                tags={"family": family},
            )
    return info.model_uri


def server_command(bench_dir: Path, port: int, host: str = "127.0.0.1") -> tuple[list[str], dict[str, str]]:
    """argv and environment for ``mlflow server`` on the benchmark's store (the MLflow UI and REST API),
    as the harness's MLflow app (:mod:`harness.ui_server`: an experiment opens on its score-cost chart).

    The environment halves start-up offline: no background job executor, and no
    attempt by litellm (imported by MLflow's gateway) to download its price map.
    """
    import sys

    from harness.ui_server import APP_NAME, require_registered

    require_registered()
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", tracking_uri(bench_dir),
        "--default-artifact-root", artifact_root(bench_dir),
        "--host", host, "--port", str(port), "--workers", "1", "--app-name", APP_NAME,
    ]  # fmt: skip
    env = {
        **os.environ,
        **QUIET_ENV,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    return argv, env


def load_router_model(bench_dir: Path, model_uri: str) -> Any:
    """Load a logged router (a ``models:/`` or ``runs:/`` URI) from the benchmark's store."""
    import mlflow

    with _scope(ResultsLayout(Path(bench_dir))):
        return mlflow.pyfunc.load_model(model_uri)


# -- offline (replay) benchmarks ------------------------------------------------------------------

OFFLINE_TAG = "offline_estimate"  # "true" on every run of a replay benchmark
ESTIMATOR_TAG = "estimator"


def offline_points(result: Any, estimator: str) -> pd.DataFrame:
    """A replay benchmark's estimates by one estimator as operating points (the live points' columns),
    so the frontier tables and plots are drawn by the same code; the split column says what they are."""
    from harness.replay.benchmark import offline_split

    specs = [spec for router in result.definition.routers for spec in router.specs()]
    rows = []
    for spec, evaluation in zip(specs, result.evaluations, strict=True):
        s, c = evaluation.estimates[estimator].score, evaluation.estimates[estimator].cost
        rows.append(
            {
                "split": offline_split(estimator),
                "point": evaluation.router,
                "family": spec.name,
                "label": evaluation.router,
                "lam": float(spec.params.get("lam", math.nan)),
                "n": evaluation.episodes,
                "failed": 0,
                "mean_score": s.value,
                "score_lo": s.low,
                "score_hi": s.high,
                "mean_cost": c.value,
                "cost_lo": c.low,
                "cost_hi": c.high,
                "total_cost": math.nan,
                "mean_turns": math.nan,
                "switch_rate": math.nan,
                "params": spec.params,
                "run_dir": "",
            }
        )
    return pd.DataFrame(rows)


def log_replay_benchmark(bench_dir: Path, result: Any, git_commit: str, report: str | None = None) -> str:
    """Log a replay benchmark (:mod:`harness.replay.benchmark`) as a parent run with one nested run per
    operating point and estimator; returns the parent's id.

    Every run is tagged ``offline_estimate: true`` and with its estimator (the parent with the
    frontier's), and its description says that nothing was run. Point metrics use the live
    points' names under ``offline/``. The parent holds, per estimator, the frontier table and
    the Pareto plot, the hypervolume, and the Markdown report. Idempotent, like :func:`log_benchmark`.
    """
    from harness.plots import pareto_figure
    from harness.results import frontier_table

    d = result.definition
    layout = ResultsLayout(Path(bench_dir).resolve())
    first = result.evaluations[0]
    offline = {OFFLINE_TAG: "true"}
    with _scope(layout) as client:
        experiment_id = _experiment_id(client, layout, d.name)
        parent = _run(
            client,
            experiment_id,
            "benchmark",
            d.name,
            {
                "kind": "replay-benchmark",
                "bench": d.name,
                "mlflow.source.git.commit": git_commit,
                ESTIMATOR_TAG: d.frontier,
                NOTE_TAG: f"Replay benchmark {d.name}: offline estimates from logged trajectories, nothing was "
                f"run. Frontier by {d.frontier}; one nested run per operating point and estimator.",
                **offline,
            },
        )
        params = {
            "data": [str(r) for r in result.runs],
            "episodes": first.episodes,
            "turns": first.turns,
            "logging": first.logging,
            "git_commit": git_commit,
            **_flat("definition/", {k: v for k, v in to_plain(d).items() if k not in ("name", "data")}),
        }
        _log(client, parent, params=params, metrics={f"{d.frontier}/hypervolume": result.hypervolume})
        for estimator in d.estimators:
            points = offline_points(result, estimator)
            split = str(points.iloc[0].split)
            # An undefined estimate (no weight anywhere) has no place in the plane; its run says so.
            defined = points[np.isfinite(points["mean_score"]) & np.isfinite(points["mean_cost"])]
            if not defined.empty:
                _log_table(client, parent, frontier_table(defined, split), f"frontier_{estimator}.json")
                client.log_figure(
                    parent,
                    pareto_figure(defined, split, title=f"{d.name}: offline {estimator} estimates"),
                    f"pareto_{estimator}.png",
                )
            for row, evaluation in zip(points.itertuples(), result.evaluations, strict=True):
                estimate = evaluation.estimates[estimator]
                note = (
                    f"Offline {estimator} estimate of {row.label} from {evaluation.episodes} logged episodes "
                    f"(not a live run); intervals: {estimate.score.interval}."
                )
                run_id = _child(
                    client,
                    experiment_id,
                    parent,
                    f"offline:{row.point}:{estimator}",
                    f"{row.point} [{estimator}]",
                    "point",
                    family=str(row.family),
                    **{ESTIMATOR_TAG: estimator, NOTE_TAG: note, "splits": split, **offline},
                    **({"lam": f"{row.lam:g}"} if not math.isnan(row.lam) else {}),
                )
                metrics = {
                    "score": estimate.score.value,
                    "score_ci_low": estimate.score.low,
                    "score_ci_high": estimate.score.high,
                    "score_ess": estimate.score.ess,
                    "score_trusted": float(estimate.score.trusted),
                    "cost": estimate.cost.value,
                    "cost_ci_low": estimate.cost.low,
                    "cost_ci_high": estimate.cost.high,
                    "cost_ess": estimate.cost.ess,
                    "cost_trusted": float(estimate.cost.trusted),
                    "logged_probability": evaluation.agreement.logged_probability,
                }
                _log(
                    client,
                    run_id,
                    params={"label": row.label, "family": row.family, "estimator": estimator,
                            "value_model": evaluation.value_model, **_flat("router.", row.params)},
                    metrics={f"offline/{k}": v for k, v in metrics.items()},
                )  # fmt: skip
                client.set_terminated(run_id)
        if report is not None:
            client.log_text(parent, report, f"{d.name}-offline.md")
        client.set_terminated(parent)
    return parent
