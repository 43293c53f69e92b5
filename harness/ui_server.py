"""The MLflow server ``harness ui`` runs: MLflow's own app, opening a benchmark on its score-cost chart.

A benchmark's experiment carries a saved view of the runs page (:func:`harness.tracking.score_cost_view`:
a scatter of every operating point per test split, and the Pareto figure with the frontier). MLflow's
runs page applies a saved view, and shows charts rather than the runs table, only when the URL asks
(``viewStateShareKey``, ``compareRunsMode``); MLflow has no per-experiment default view, so a user who
clicks the experiment would land on the table. Logged figures and tables, and an experiment's
description, show only on pages one clicks to (a run's artifacts, the description panel).

So ``harness ui`` starts ``mlflow server --app-name`` :data:`APP_NAME`, MLflow's extension point for
the server (the ``mlflow.app`` entry point group, as MLflow's basic-auth app): :func:`create_app` takes
MLflow's Flask app unchanged but for the page it serves at the root, which gains
:data:`CHART_REDIRECT`. When an experiment's page opens without an explicit choice of view, and that
experiment carries the saved score-cost view, the script replaces the address with the view's, so
clicking the experiment shows the chart; choosing the table (which MLflow puts in the address) still
shows the table, and every other experiment and page is left alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import MissingDependencyError
from harness.tracking import SAVED_VIEW_PREFIX, SCORE_COST_QUERY, SCORE_COST_VIEW

APP_NAME = "routing-harness"  # the entry point's name in pyproject.toml

# MLflow's single-page app routes by the address's fragment and changes it with history.pushState (a
# click) and replaceState (its own redirects, e.g. from an experiment to its default tab), which fire no
# event, so those are watched as well as the back and forward buttons. An experiment's tags come from
# MLflow's REST API, once per experiment; the answer redirects only if no navigation came in between.
_REDIRECT = r"""((tag, query) => {
  const tagged = new Map();
  let navigations = 0;
  const route = () => location.hash.match(/^#\/experiments\/([^/?]+)(\/[^?]*)?(?:\?(.*))?$/);
  const check = (replaced) => {
    if (!replaced) navigations += 1;
    const at = navigations, opened = route();
    if (!opened || !/^(\/runs)?\/?$/.test(opened[2] || "")) return;
    const id = opened[1], chosen = () => new URLSearchParams(route()[3] || "").has("compareRunsMode");
    if (chosen()) return;
    if (!tagged.has(id)) {
      const url = "ajax-api/2.0/mlflow/experiments/get?experiment_id=" + encodeURIComponent(id);
      tagged.set(id, fetch(url).then((r) => (r.ok ? r.json() : {}))
        .then((body) => ((body.experiment || {}).tags || []).some((t) => t.key === tag))
        .catch(() => tagged.delete(id) && false));
    }
    tagged.get(id).then((has) => {
      if (has && navigations === at && (route() || [])[1] === id && !chosen()) {
        location.replace("#/experiments/" + id + "/runs?" + query);
      }
    });
  };
  for (const name of ["pushState", "replaceState"]) {
    const original = history[name];
    history[name] = function (...args) {
      const result = original.apply(this, args);
      check(name === "replaceState");
      return result;
    };
  }
  addEventListener("popstate", () => check(false));
  check(false);
})"""
CHART_REDIRECT = (
    f"{_REDIRECT}({json.dumps(SAVED_VIEW_PREFIX + SCORE_COST_VIEW)}, {json.dumps(SCORE_COST_QUERY)});"
)


def require_registered() -> None:
    """One line, before the server starts, where the installed package's metadata lacks :data:`APP_NAME`
    (an install older than the entry point): ``mlflow server`` would otherwise reject the name."""
    from importlib.metadata import entry_points

    if not any(e.name == APP_NAME for e in entry_points(group="mlflow.app")):
        raise MissingDependencyError(
            f"MLflow app {APP_NAME!r} is not registered; reinstall the harness (make install, or pip install -e .)"
        )


def index_page(static_folder: str | Path) -> str | None:
    """MLflow's index.html with :data:`CHART_REDIRECT` in its head, or None where MLflow has no built UI."""
    index = Path(static_folder) / "index.html"
    if not index.exists():
        return None
    html = index.read_text(encoding="utf-8")
    if "</head>" not in html:
        raise RuntimeError(f"{index} has no </head>; this MLflow's page cannot take the chart redirect")
    return html.replace("</head>", f"<script>{CHART_REDIRECT}</script></head>", 1)


def create_app(app: Any = None) -> Any:
    """MLflow's server app with the root page serving :func:`index_page`: the FastAPI app wrapping it
    under uvicorn (MLflow's default server), else the Flask app itself (gunicorn, waitress)."""
    from flask import Response
    from mlflow.environment_variables import _MLFLOW_SGI_NAME

    if app is None:
        from mlflow.server import app
    page = index_page(app.static_folder)
    if page is not None:
        if "serve" not in app.view_functions:
            raise RuntimeError("this MLflow's server has no 'serve' view for its UI page")
        # No ETag: a browser that cached MLflow's plain page must not be told it is still current.
        app.view_functions["serve"] = lambda: Response(
            page, mimetype="text/html", headers={"Cache-Control": "no-cache"}
        )
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(app)
    return app
