"""Which history encoder a checkpoint was trained with, and how to rebuild it for routing.

A value model is only meaningful in the vector space it was trained in, so the
checkpoint records the embedder's name (its vector space), how to construct it
again, and the encoder's mode, token budget and pooling.
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
    OpenAIEmbeddingsEmbedder,
    SentenceTransformerEmbedder,
)
from routers.learned.history_encoder import HistoryEncoder


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


def embedder_source(embedder: object) -> dict:
    inner = getattr(embedder, "inner", embedder)
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
    config: EncoderConfig, cache_dir: str | Path | None = None, torch_threads: int = 1
) -> HistoryEncoder:
    """The encoder a checkpoint needs, with the shared disk cache; the embedding model loads on first use."""
    source = config.source
    kind = source.get("kind")
    if kind == "minilm":
        inner = SentenceTransformerEmbedder(torch_threads=torch_threads)
    elif kind == "sentence-transformers":
        inner = SentenceTransformerEmbedder(model_path=source["path"], torch_threads=torch_threads)
    elif kind == "openai":
        inner = OpenAIEmbeddingsEmbedder(source["model"], source["api_base"], source.get("api_key_env"))
    else:
        raise ConfigError(
            f"the checkpoint's embedder {config.embedder!r} cannot be rebuilt from its config; pass an encoder"
        )
    embedder = CachedEmbedder(inner, Path(cache_dir) if cache_dir else default_cache_dir())
    return HistoryEncoder(embedder, mode=config.mode, budget_tokens=config.budget_tokens, **config.options)


def check_encoder(expected: EncoderConfig, encoder: HistoryEncoder) -> None:
    """An encoder whose vectors differ from the training ones would make every prediction meaningless."""
    actual = encoder_config(encoder)
    for name in ("embedder", "mode", "budget_tokens", "options"):
        if getattr(actual, name) != getattr(expected, name):
            raise ConfigError(
                f"history encoder {name} is {getattr(actual, name)!r} but the checkpoint was trained with "
                f"{getattr(expected, name)!r}"
            )
