"""Idempotent logging to an MLflow tracking server, for results logged as they arrive.

A benchmark that logs each run when it finishes, and is resumed after a crash,
logs some results a second time. So every run here has a key, the stable name of
what it records (say ``quick/mtrouter/test/lam=0.5``), stored as a tag holding the
key's digest (a digest needs no quoting in MLflow's filter language). Logging a
key again finds its run instead of creating another, logs only the metrics whose
value changed, and rewrites artifacts under their own names; a param that would
change under the same key is refused, since MLflow params are immutable and a
different value means a different experiment.

The server is the ``tracking_uri`` argument, else ``MLFLOW_TRACKING_URI``. Its
address may carry credentials, so it is never logged and is redacted in errors;
credentials MLflow reads from its own environment variables stay there.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError, InfrastructureError
from harness.tracking import MAX_PARAM_CHARS, PARENT_TAG, SECRET_KEY
from harness.tuning import redact_url

KEY_TAG = "harness.key"
RUN_NAME_TAG = "mlflow.runName"
HEALTH_TIMEOUT_S = 5.0
OUTAGE_WAIT_S = 60.0
_answered: set[str] = set()  # servers that answered in this process


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("tracking server: none given; set MLFLOW_TRACKING_URI or pass a tracking URI")
    return uri


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def check_answers(uri: str) -> None:
    """Fail at once, in one line, when an HTTP server is not there (MLflow's client would retry for minutes).

    A server that answered earlier in this process and stops answering mid-benchmark (restarted, say) is
    waited for up to ``OUTAGE_WAIT_S``; if it stays away that is a failure of the infrastructure (exit 1,
    the results are kept and a rerun logs them), not a wrong address."""
    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + (OUTAGE_WAIT_S if uri in _answered else 0.0)
    while True:
        reason = _health(uri)
        if reason is None:
            _answered.add(uri)
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if uri in _answered:
        raise InfrastructureError(
            f"tracking server {redact_url(uri)!r}: stopped answering for {OUTAGE_WAIT_S:.0f} s: {reason}"
        )
    raise HarnessError(f"tracking server {redact_url(uri)!r}: not answering: {reason}")


def _health(uri: str) -> str | None:
    """Why the server at ``uri`` is not healthy, or None when it is."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


class ServerTracker:
    """Runs of one experiment on a tracking server, each created once per key."""

    def __init__(self, experiment: str, tracking_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        self.uri = resolve_tracking_uri(tracking_uri)
        check_answers(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)

    def find(self, key: str) -> str | None:
        """The id of the run logged under ``key``, if any."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key_digest(key)}'", max_results=2
        )
        if len(runs) > 1:
            raise HarnessError(
                f"tracking server: key {key!r} names {len(runs)} runs; one was logged twice at once"
            )
        return runs[0].info.run_id if runs else None

    def log(
        self,
        key: str,
        name: str,
        *,
        parent: str | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        artifacts: Sequence[Path] = (),
        artifact_dir: str | None = None,
        finished: bool = True,
    ) -> str:
        """Log a run under ``key`` (nested under run id ``parent``), creating it only the first time."""
        from mlflow.entities import Metric, Param, RunTag

        run_id = self.find(key)
        if run_id is None:
            run_tags = {KEY_TAG: key_digest(key), RUN_NAME_TAG: name} | (
                {PARENT_TAG: parent} if parent else {}
            )
            run_id = self.client.create_run(self.experiment_id, tags=run_tags, run_name=name).info.run_id
        data = self.client.get_run(run_id).data
        new_params = []
        for param, value in (params or {}).items():
            if SECRET_KEY.search(param):
                continue
            text = str(value)[:MAX_PARAM_CHARS]
            if param not in data.params:
                new_params.append(Param(param, text))
            elif data.params[param] != text:
                raise HarnessError(
                    f"tracking server: run {key!r} has param {param}={data.params[param]!r}, not {text!r}"
                )
        changed = [
            Metric(metric, float(value), int(time.time() * 1000), 0)
            for metric, value in (metrics or {}).items()
            if data.metrics.get(metric) != float(value)
        ]
        new_tags = [
            RunTag(tag, str(value)) for tag, value in (tags or {}).items() if data.tags.get(tag) != str(value)
        ]
        if new_params or changed or new_tags:
            self.client.log_batch(run_id, metrics=changed, params=new_params, tags=new_tags)
        for path in artifacts:
            self.client.log_artifact(run_id, str(path), artifact_dir)
        if finished:
            self.client.set_terminated(run_id, "FINISHED")
        return run_id
