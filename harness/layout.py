"""Where a benchmark's results live, in one place: every stage, the tracker and the report read it here.

RESULTS/<bench>/benchmark.json           the definition snapshot and what tuning selected
RESULTS/<bench>/data/<collection>/       exploration run directories (training data)
RESULTS/<bench>/models/<family>[-b]/     trained checkpoints
RESULTS/<bench>/runs/<split>/<point>/    one run directory per operating point and split
RESULTS/<bench>/embeddings/              the embedding cache shared by training and routing
RESULTS/<bench>/prefix-cache/            the engine prefix cache shared by its batches (when enabled)
RESULTS/<bench>/optuna.db                the Optuna studies (SQLite)
RESULTS/<bench>/mlflow.db, mlartifacts/  the MLflow store and its artifacts
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


@dataclass(frozen=True)
class ResultsLayout:
    """The paths of one benchmark's results directory."""

    root: Path

    @classmethod
    def of(cls, results: Path | str, bench: str) -> ResultsLayout:
        return cls(Path(results) / bench)

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
        return f"sqlite:///{self.mlflow_db.resolve()}"

    @property
    def artifact_root(self) -> str:
        return str(self.root.resolve() / ARTIFACTS_DIR)
