"""The MLflow app ``harness ui`` serves (harness.ui_server) on MLflow's own Flask app, without a server:
its page carries the score-cost redirect, everything else MLflow serves is MLflow's. The redirect's
behaviour in a browser is tests/test_ui_browser.py's."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from harness.errors import MissingDependencyError
from harness.tracking import SAVED_VIEW_PREFIX, SCORE_COST_QUERY, SCORE_COST_VIEW
from harness.ui_server import APP_NAME, CHART_REDIRECT, create_app, index_page, require_registered


@pytest.fixture(scope="module")
def mlflow_app():
    from mlflow.server import app

    return app


def test_the_app_is_registered_where_mlflow_server_looks_for_it():
    (entry,) = [e for e in entry_points(group="mlflow.app") if e.name == APP_NAME]
    assert entry.load() is create_app


def test_an_install_older_than_the_app_is_one_line_before_the_server_starts(monkeypatch):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    with pytest.raises(MissingDependencyError, match="'routing-harness' is not registered; reinstall"):
        require_registered()


def test_the_page_is_mlflows_with_the_redirect_and_is_never_served_stale(mlflow_app, monkeypatch):
    monkeypatch.delenv("_MLFLOW_SGI_NAME", raising=False)
    plain = (Path(mlflow_app.static_folder) / "index.html").read_text()
    assert create_app(mlflow_app) is mlflow_app
    client = mlflow_app.test_client()
    page = client.get("/", headers={"If-None-Match": "*"})  # a cached copy of MLflow's plain page
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.text == plain.replace("</head>", f"<script>{CHART_REDIRECT}</script></head>")
    assert "ETag" not in page.headers and page.headers["Cache-Control"] == "no-cache"
    assert f'"{SAVED_VIEW_PREFIX}{SCORE_COST_VIEW}"' in CHART_REDIRECT
    assert f'"{SCORE_COST_QUERY}"' in CHART_REDIRECT
    # The rest is MLflow's own: its API, its scripts.
    assert client.get("/health").text == "OK"
    script = next(Path(mlflow_app.static_folder, "static", "js").glob("main.*.js"))
    served = client.get(f"/static-files/static/js/{script.name}")
    assert served.data == script.read_bytes()
    served.close()


def test_under_uvicorn_the_app_is_mlflows_fastapi_wrapper(mlflow_app, monkeypatch):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    monkeypatch.setenv("_MLFLOW_SGI_NAME", "uvicorn")
    app = create_app()
    assert isinstance(app, FastAPI)
    client = TestClient(app, base_url="http://localhost")  # MLflow serves loopback hosts only
    assert f"<script>{CHART_REDIRECT}</script>" in client.get("/").text
    assert client.get("/health").text == "OK"


def test_without_mlflows_built_page_there_is_nothing_to_change(tmp_path):
    assert index_page(tmp_path) is None
