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

A run directory is one that holds a ``config.json`` (:data:`harness.trajectory.CONFIG_FILE`); the listings
below (:meth:`ResultsLayout.point_runs`, :meth:`~ResultsLayout.data_runs`,
:meth:`~ResultsLayout.replicates`, :func:`matching_runs`, :func:`runs_under`) are the only code that looks for them, so a change of
layout is made here.

The MLflow store is the one in the results directory unless a tracking server is
named (``tracking_server``, e.g. ``MLFLOW_TRACKING_URI``); then runs, traces and
artifacts go to that server, and the server keeps the artifacts where it is set to.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from harness.trajectory import CONFIG_FILE

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
class PointRun:
    """One operating point's run directory on one split: ``runs/<split>/<point>/``."""

    split: str
    point: str
    path: Path


def matching_runs(pattern: str) -> list[Path]:
    """The run directories a glob pattern names (a replay definition's ``data`` entries), by path."""
    return sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / CONFIG_FILE).is_file())


def runs_under(root: Path) -> list[Path]:
    """Every run directory at any depth under ``root`` (batches, benchmarks, seed replicates), by path."""
    return sorted(p.parent for p in Path(root).rglob(CONFIG_FILE) if p.is_file())


def _run_dirs(parent: Path) -> list[Path]:
    """The run directories directly under ``parent``, by name."""
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if (p / CONFIG_FILE).is_file())


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

    def point_runs(self, split: str | None = None) -> list[PointRun]:
        """Every operating point's run directory (of ``split`` only, if given), by split then point name."""
        root = self.root / RUNS_DIR
        if not root.is_dir():
            return []
        splits = [root / split] if split is not None else sorted(p for p in root.iterdir() if p.is_dir())
        return [PointRun(s.name, path.name, path) for s in splits for path in _run_dirs(s)]

    def point_of(self, run_dir: Path) -> PointRun | None:
        """The operating point ``run_dir`` is the run directory of, or None if it is not one of this layout's."""
        run_dir = Path(run_dir).resolve()
        if run_dir.parent.parent != (self.root / RUNS_DIR).resolve():
            return None
        return PointRun(run_dir.parent.name, run_dir.name, run_dir)

    def data_runs(self) -> list[Path]:
        """Every exploration run directory (the training data), by collection name."""
        return _run_dirs(self.root / DATA_DIR)

    def all_runs(self) -> list[Path]:
        """Every run directory of this results directory: the data runs, then the operating points' runs."""
        return [*self.data_runs(), *(run.path for run in self.point_runs())]

    def replicates(self) -> list[ResultsLayout]:
        """The seed replicates' results directories (``seeds/<name>/``), by name; none for an unseeded run."""
        seeds = self.root / SEEDS_DIR
        found = sorted(p for p in seeds.iterdir() if p.is_dir()) if seeds.is_dir() else []
        return [ResultsLayout(path, self.tracking_server) for path in found]

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
