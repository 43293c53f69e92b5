"""Where a benchmark's results live, in one place: every stage, the tracker and the report read it here.

RESULTS/<bench>/benchmark.json           the definition snapshot and what tuning selected
RESULTS/<bench>/data/<collection>/       exploration run directories (training data)
RESULTS/<bench>/models/<family>[-b]/     trained checkpoints
RESULTS/<bench>/runs/<split>/<point>/    one run directory per operating point and split
RESULTS/<bench>/embeddings/              the embedding cache shared by training and routing
RESULTS/<bench>/prefix-cache/            the engine prefix cache shared by its batches (when enabled)
RESULTS/<bench>/optuna.db                the Optuna studies (SQLite)
RESULTS/<bench>/mlflow.db, mlartifacts/  the MLflow store and its artifacts
RESULTS/<bench>/seeds/s<seed>/           a seed replicate: a whole results directory of its own

The MLflow store is the one in the results directory unless a tracking server is
named (``tracking_server``, e.g. ``MLFLOW_TRACKING_URI``); then runs, traces and
artifacts go to that server, and the server keeps the artifacts where it is set to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST_FILE = "benchmark.json"
DATA_DIR = "data"
MODELS_DIR = "models"
RUNS_DIR = "runs"
EMBEDDINGS_DIR = "embeddings"
PREFIX_CACHE_DIR = "prefix-cache"
OPTUNA_DB = "optuna.db"
MLFLOW_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
SEEDS_DIR = "seeds"


@dataclass(frozen=True)
class ResultsLayout:
    """The paths of one benchmark's results directory, and where its MLflow runs go."""

    root: Path
    tracking_server: str | None = None  # an MLflow tracking server's URI; None: the store in ``root``

    @classmethod
    def of(cls, results: Path | str, bench: str, tracking_server: str | None = None) -> ResultsLayout:
        return cls(Path(results) / bench, tracking_server)

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_FILE

    def data(self, collection: str) -> Path:
        return self.root / DATA_DIR / collection

    def model(self, name: str) -> Path:
        return self.root / MODELS_DIR / name

    def runs(self, split: str) -> Path:
        return self.root / RUNS_DIR / split

    def run(self, split: str, point: str) -> Path:
        return self.runs(split) / point

    @property
    def embeddings(self) -> Path:
        return self.root / EMBEDDINGS_DIR

    @property
    def prefix_cache(self) -> Path:
        return self.root / PREFIX_CACHE_DIR

    @property
    def optuna_db(self) -> Path:
        return self.root / OPTUNA_DB

    @property
    def mlflow_db(self) -> Path:
        return self.root / MLFLOW_DB

    @property
    def tracking_uri(self) -> str:
        """The tracking server if one is named (it may carry credentials: redact before showing it)."""
        return self.tracking_server or f"sqlite:///{self.mlflow_db.resolve()}"

    @property
    def artifact_root(self) -> str:
        """Where the results directory's own store keeps artifacts (a tracking server chooses its own)."""
        return str(self.root.resolve() / ARTIFACTS_DIR)
