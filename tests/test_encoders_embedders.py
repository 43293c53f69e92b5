"""The named MiniLM embedders: offline builds, reuse of cached artefacts, determinism, checkpoint binding.

The derived artefacts (ONNX export ~3 s, static distillation 20-45 s) are built
once into pytest's cache directory and reused by later sessions; the tests
that must see a fresh build use their own temporary root.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from harness.benchmarks.scienceworld.synthetic import write_synthetic_run
from harness.errors import ConfigError, HarnessError
from harness.types import ModelCard, PriceCard
from routers.learned import onnx_embedder, static_embedder
from routers.learned.artefacts import MANIFEST, directory_sha256, ensure_artefact, read_manifest, verify
from routers.learned.classic import RidgeRouter
from routers.learned.embedding import Embedder
from routers.learned.encoder_spec import (
    EMBEDDERS,
    build_encoder,
    embedder_source,
    make_embedder,
    named_encoder,
)
from routers.learned.train import train_router
from routers.learned.value_model import load_value_model

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["You move to the kitchen.", "You go to the kitchen.", "The stock market fell today."]
DERIVED = ("minilm-onnx", "minilm-onnx-int8", "minilm-static")
CARDS = [ModelCard("cheap", PriceCard(0.1, 0.4, "test")), ModelCard("strong", PriceCard(5.0, 20.0, "test"))]


@contextmanager
def no_network() -> Iterator[None]:
    real_connect = socket.socket.connect

    def refuse(self, address):
        raise AssertionError(f"network access: {address}")

    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = real_connect


@pytest.fixture(scope="session")
def harness_cache(request: pytest.FixtureRequest) -> Path:
    """Kept across sessions (pytest's cache dir), so only a fresh checkout pays for the builds."""
    return Path(request.config.cache.mkdir("routing-harness-cache"))


@pytest.fixture(scope="session")
def artefact_root(harness_cache: Path) -> Path:
    return harness_cache / "models"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, harness_cache: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("ROUTING_HARNESS_CACHE", str(harness_cache))  # default artefact root of build_encoder


@pytest.fixture(scope="session")
def embedders(artefact_root: Path) -> dict[str, Embedder]:
    """Every named embedder, built (if not cached) and loaded with all outbound connections refused."""
    built = {}
    with no_network():
        for name in EMBEDDERS:
            built[name] = make_embedder(name, artefact_root=artefact_root)
            built[name].embed(["load the model"])
    return built


@pytest.mark.parametrize("name", list(EMBEDDERS))
def test_each_embedder_gives_unit_float32_vectors_that_keep_meaning(embedders, name):
    embedder = embedders[name]
    assert isinstance(embedder, Embedder)
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    assert embedder.dim == (256 if name == "minilm-static" else 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


@pytest.mark.parametrize("name", DERIVED)
def test_derived_embedder_names_carry_their_artefact_digest(embedders, name):
    embedder = embedders[name]
    assert embedder.name.endswith("@" + embedder.artefact.sha256[:12])
    assert embedder_source(embedder) == {"kind": name, "sha256": embedder.artefact.sha256}
    assert len({embedders[n].name for n in EMBEDDERS}) == len(EMBEDDERS)


@pytest.mark.parametrize("name", DERIVED)
def test_a_text_gets_the_same_vector_alone_and_in_any_batch(embedders, name):
    embedder = embedders[name]
    batch = embedder.embed(TEXTS + ["a much longer text " * 30])
    assert np.array_equal(embedder.embed([TEXTS[1]])[0], batch[1])
    assert np.array_equal(embedder.embed(TEXTS), batch[:3])


def test_the_reference_is_stable_across_batches(embedders):
    minilm = embedders["minilm"]
    assert np.array_equal(minilm.embed(TEXTS), minilm.embed(TEXTS))
    assert np.allclose(minilm.embed([TEXTS[1]])[0], minilm.embed(TEXTS)[1], atol=1e-6)


def test_onnx_reproduces_the_reference_and_int8_stays_close(embedders):
    reference = embedders["minilm"].embed(TEXTS)
    fp32 = embedders["minilm-onnx"].embed(TEXTS)
    int8 = embedders["minilm-onnx-int8"].embed(TEXTS)
    assert np.min(np.sum(fp32 * reference, axis=1)) > 0.99999
    assert np.min(np.sum(int8 * reference, axis=1)) > 0.97


def test_vectors_are_identical_in_another_process(embedders, artefact_root, tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["HF_HUB_OFFLINE"] = "1"
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        import numpy as np
        from routers.learned.encoder_spec import EMBEDDERS, make_embedder
        for name in EMBEDDERS:
            vectors = make_embedder(name, artefact_root=Path({str(artefact_root)!r})).embed({TEXTS!r})
            np.save(Path({str(tmp_path)!r}) / f"{{name}}.npy", vectors)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in EMBEDDERS:
        assert np.array_equal(np.load(tmp_path / f"{name}.npy"), embedders[name].embed(TEXTS)), name


def test_cached_artefacts_are_reused_without_building(embedders, artefact_root, monkeypatch):
    def no_build(out_dir: Path) -> None:
        raise AssertionError("rebuilt an artefact that is cached")

    monkeypatch.setattr(onnx_embedder, "export_minilm", no_build)
    monkeypatch.setattr(onnx_embedder, "quantize_from", lambda fp32: no_build)
    monkeypatch.setattr(static_embedder, "distill_minilm", no_build)
    for name in DERIVED:
        manifest = embedders[name].artefact.path / MANIFEST
        written = manifest.stat().st_mtime_ns
        again = make_embedder(name, artefact_root=artefact_root)
        assert again.name == embedders[name].name
        assert np.array_equal(again.embed(TEXTS), embedders[name].embed(TEXTS))
        assert manifest.stat().st_mtime_ns == written


def test_onnx_export_runs_offline_and_is_reproducible(embedders, tmp_path):
    with no_network():
        fresh = {
            name: make_embedder(name, artefact_root=tmp_path) for name in ("minilm-onnx", "minilm-onnx-int8")
        }
    for name, embedder in fresh.items():
        assert embedder.artefact.sha256 == embedders[name].artefact.sha256, name
        assert directory_sha256(embedder.artefact.path) == embedder.artefact.sha256


@pytest.mark.slow
def test_static_distillation_runs_offline_and_is_reproducible(embedders, tmp_path):
    with no_network():
        fresh = make_embedder("minilm-static", artefact_root=tmp_path)
    assert fresh.artefact.sha256 == embedders["minilm-static"].artefact.sha256


def test_unknown_embedder_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown embedder 'minilm-gpu'.*minilm-onnx-int8"):
        make_embedder("minilm-gpu")


# ---------------------------------------------------------------- artefact store


def test_concurrent_builders_build_once_and_readers_never_see_half_a_model(tmp_path):
    log = tmp_path / "builds.log"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from routers.learned.artefacts import ensure_artefact

        def build(out):
            with open({str(log)!r}, "a") as handle:
                handle.write("built\\n")
            (out / "weights.bin").write_bytes(b"half")
            time.sleep(1.0)
            (out / "weights.bin").write_bytes(b"whole model")

        artefact = ensure_artefact(Path({str(tmp_path / "root")!r}), "toy", build)
        print(artefact.sha256, (artefact.path / "weights.bin").read_bytes().decode())
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    assert log.read_text() == "built\n"
    assert len(set(outputs)) == 1 and outputs[0].endswith(" whole model")
    assert [p.name for p in (tmp_path / "root").iterdir() if not p.name.startswith(".")] == ["toy"]


def test_a_failed_build_leaves_nothing_to_serve(tmp_path):
    def broken(out: Path) -> None:
        (out / "weights.bin").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ensure_artefact(tmp_path, "toy", broken)
    assert read_manifest(tmp_path / "toy") is None
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []


def test_a_changed_artefact_file_is_refused_at_load(tmp_path):
    artefact = ensure_artefact(tmp_path, "toy", lambda out: (out / "weights.bin").write_bytes(b"model"))
    verify(artefact)
    (artefact.path / "weights.bin").write_bytes(b"other")
    with pytest.raises(HarnessError, match="manifest says " + artefact.sha256[:12]):
        verify(artefact)


# ---------------------------------------------------------------- checkpoints bind their encoder


@pytest.fixture(scope="module")
def static_checkpoint(tmp_path_factory: pytest.TempPathFactory, embedders) -> tuple[Path, Path]:
    """A ridge router trained on the static embedder; returns (checkpoint, embedding cache)."""
    work = tmp_path_factory.mktemp("static-ckpt")
    run = write_synthetic_run(
        work / "run", CARDS, {"boil": "cheap", "grow-plant": "strong"}, episodes_per_task=6
    )
    encoder = named_encoder("minilm-static", cache_dir=work / "cache")
    train_router("ridge", [run], work / "ridge", pool=CARDS, encoder=encoder, seed=0)
    return work / "ridge", work / "cache"


def test_checkpoint_records_the_named_embedder_and_rebuilds_it(static_checkpoint, embedders):
    checkpoint, cache = static_checkpoint
    config = load_value_model(checkpoint).encoder
    assert config.embedder == embedders["minilm-static"].name
    assert config.source == {"kind": "minilm-static", "sha256": embedders["minilm-static"].artefact.sha256}
    router = RidgeRouter(str(checkpoint), cache_dir=str(cache))
    assert router.encoder.embedder.name == embedders["minilm-static"].name


def test_checkpoint_refuses_another_embedder_in_one_line(static_checkpoint, embedders):
    checkpoint, cache = static_checkpoint
    other = named_encoder("minilm-onnx-int8", cache_dir=cache)
    with pytest.raises(ConfigError) as info:
        RidgeRouter(str(checkpoint), encoder=other)
    message = str(info.value)
    assert "\n" not in message
    assert embedders["minilm-onnx-int8"].name in message and embedders["minilm-static"].name in message
    with pytest.raises(ConfigError, match="embedder 'minilm' was asked for.*trained with 'minilm-static'"):
        build_encoder(load_value_model(checkpoint).encoder, cache, embedder="minilm")


def test_checkpoint_refuses_an_artefact_built_from_other_bytes(static_checkpoint):
    checkpoint, cache = static_checkpoint
    config = load_value_model(checkpoint).encoder
    forged = type(config)(**{**config.to_dict(), "source": {"kind": "minilm-static", "sha256": "0" * 64}})
    with pytest.raises(ConfigError, match="trained with artefact 000000000000"):
        build_encoder(forged, cache)


def test_reference_checkpoint_refuses_the_onnx_twin(tmp_path, embedders):
    """Even numerically identical vectors are another vector space once the weights went another way."""
    run = write_synthetic_run(tmp_path / "run", CARDS, {"boil": "cheap"}, episodes_per_task=3, turns=2)
    encoder = named_encoder("minilm", cache_dir=tmp_path / "cache")
    train_router("ridge", [run], tmp_path / "ridge", pool=CARDS, encoder=encoder, seed=0)
    with pytest.raises(ConfigError, match="onnx@.*trained with 'sentence-transformers/all-MiniLM-L6-v2'"):
        RidgeRouter(
            str(tmp_path / "ridge"), encoder=named_encoder("minilm-onnx", cache_dir=tmp_path / "cache")
        )
