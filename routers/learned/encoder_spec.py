"""Which history encoder a checkpoint was trained with, and how to rebuild it for routing.

A value model is only meaningful in the vector space it was trained in, so the
checkpoint records the embedder's name (its vector space), how to construct it
again, and the encoder's mode, token budget and pooling.

The bundled MiniLM comes in four named forms (:data:`EMBEDDERS`), selected
by name in training and router parameters; the derived ones (ONNX export,
int8 quantisation, static distillation) carry their artefact's sha256 in
the name, so a checkpoint refuses an encoder built from different bytes.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import ConfigError
from routers.learned.embedding import (
    MINILM_NAME,
    CachedEmbedder,
    Embedder,
    OpenAIEmbeddingsEmbedder,
    SentenceTransformerEmbedder,
)
from routers.learned.history_encoder import EncoderMode, HistoryEncoder
from routers.learned.onnx_embedder import OnnxMiniLMEmbedder
from routers.learned.static_embedder import StaticMiniLMEmbedder

# name -> what it is; "minilm" is the reference every other form is measured against
EMBEDDERS = {
    "minilm": "all-MiniLM-L6-v2 in PyTorch via sentence-transformers (the reference)",
    "minilm-onnx": "the same weights exported to ONNX, run with ONNX Runtime (fp32)",
    "minilm-onnx-int8": "the ONNX export with int8 dynamic quantisation (per-channel weights)",
    "minilm-static": "a static embedding table distilled from it with model2vec (256 dims)",
}
REFERENCE_EMBEDDER = "minilm"
# The default by measurement (benchmarks/perf_router_latency.py, perf_encoder_routing.py --live): the only form
# inside the latency goal, and its routers' live test_id score was not below the reference's seed spread.
DEFAULT_EMBEDDER = "minilm-static"


@dataclass(frozen=True)
class EncoderConfig:
    embedder: str  # the embedder's name: identifies the vector space
    mode: str
    budget_tokens: int
    # The encoder's other constructor arguments (e.g. task_weight).
    options: dict = field(default_factory=dict)
    # How to build the embedder again; kind "custom" if it cannot be.
    source: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EncoderConfig:
        return cls(**data)


def encoder_options(encoder: HistoryEncoder) -> dict:
    """Every other constructor argument, read back from the attribute of the same name."""
    names = inspect.signature(HistoryEncoder.__init__).parameters
    return {
        name: getattr(encoder, name)
        for name in names
        if name not in ("self", "embedder", "mode", "budget_tokens")
    }


def make_embedder(name: str, threads: int = 1, artefact_root: Path | None = None) -> Embedder:
    """One of :data:`EMBEDDERS`; ``threads`` are torch's or ONNX Runtime's (the static model needs none)."""
    if name == "minilm":
        return SentenceTransformerEmbedder(torch_threads=threads)
    if name in ("minilm-onnx", "minilm-onnx-int8"):
        return OnnxMiniLMEmbedder(
            quantized=name == "minilm-onnx-int8", threads=threads, artefact_root=artefact_root
        )
    if name == "minilm-static":
        return StaticMiniLMEmbedder(artefact_root=artefact_root)
    raise ConfigError(f"unknown embedder {name!r} (available: {', '.join(EMBEDDERS)})")


def named_encoder(
    embedder: str = DEFAULT_EMBEDDER,
    mode: EncoderMode = "incremental",
    cache_dir: str | Path | None = None,
    threads: int = 1,
) -> HistoryEncoder:
    """A history encoder over a named embedder and the shared disk cache, as training and routing build it."""
    cached = CachedEmbedder(
        make_embedder(embedder, threads), Path(cache_dir) if cache_dir else default_cache_dir()
    )
    return HistoryEncoder(cached, mode=mode)


def embedder_source(embedder: object) -> dict:
    inner = getattr(embedder, "inner", embedder)
    if isinstance(inner, OnnxMiniLMEmbedder):
        kind = "minilm-onnx-int8" if inner.quantized else "minilm-onnx"
        return {"kind": kind, "sha256": inner.artefact.sha256}
    if isinstance(inner, StaticMiniLMEmbedder):
        return {"kind": "minilm-static", "sha256": inner.artefact.sha256}
    if isinstance(inner, SentenceTransformerEmbedder):
        if inner.name == MINILM_NAME:
            return {"kind": "minilm"}
        return {"kind": "sentence-transformers", "path": str(inner.model_path)}
    if isinstance(inner, OpenAIEmbeddingsEmbedder):
        return {
            "kind": "openai",
            "model": inner.model_id,
            "api_base": inner.url.removesuffix("/embeddings"),
            "api_key_env": inner.api_key_env,
        }
    return {"kind": "custom"}


def encoder_config(encoder: HistoryEncoder) -> EncoderConfig:
    return EncoderConfig(
        embedder=encoder.embedder.name,
        mode=encoder.mode,
        budget_tokens=encoder.budget_tokens,
        options=encoder_options(encoder),
        source=embedder_source(encoder.embedder),
    )


def default_cache_dir() -> Path:
    """Shared by training and routing so that live routing starts with the training texts cached."""
    override = os.environ.get("ROUTING_HARNESS_CACHE")
    if override:
        return Path(override) / "embeddings"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "routing-harness" / "embeddings"


def build_encoder(
    config: EncoderConfig,
    cache_dir: str | Path | None = None,
    torch_threads: int = 1,
    embedder: str | None = None,
) -> HistoryEncoder:
    """The encoder a checkpoint needs, with the shared disk cache; the embedding model loads on first use.

    ``embedder`` is the name a router's parameters ask for, if any; ``torch_threads``
    also sets ONNX Runtime's threads.
    """
    source = config.source
    kind = source.get("kind")
    if embedder is not None and embedder != kind:
        raise ConfigError(
            f"embedder {embedder!r} was asked for, but the checkpoint was trained with {kind or config.embedder!r}"
        )
    if kind in EMBEDDERS:
        inner = make_embedder(kind, torch_threads)
        built = embedder_source(inner).get("sha256")
        if built != source.get("sha256"):
            raise ConfigError(
                f"embedder {kind!r} built here from artefact sha256 {str(built)[:12]}, but the checkpoint was "
                f"trained with artefact {str(source.get('sha256'))[:12]} (other tool versions?)"
            )
    elif kind == "sentence-transformers":
        inner = SentenceTransformerEmbedder(model_path=source["path"], torch_threads=torch_threads)
    elif kind == "openai":
        inner = OpenAIEmbeddingsEmbedder(source["model"], source["api_base"], source.get("api_key_env"))
    else:
        raise ConfigError(
            f"the checkpoint's embedder {config.embedder!r} cannot be rebuilt from its config; pass an encoder"
        )
    cached = CachedEmbedder(inner, Path(cache_dir) if cache_dir else default_cache_dir())
    return HistoryEncoder(cached, mode=config.mode, budget_tokens=config.budget_tokens, **config.options)


def check_encoder(expected: EncoderConfig, encoder: HistoryEncoder) -> None:
    """An encoder whose vectors differ from the training ones would make every prediction meaningless."""
    actual = encoder_config(encoder)
    for name in ("embedder", "mode", "budget_tokens", "options"):
        if getattr(actual, name) != getattr(expected, name):
            raise ConfigError(
                f"history encoder {name} is {getattr(actual, name)!r} but the checkpoint was trained with "
                f"{getattr(expected, name)!r}"
            )
