"""Stable seeds derived from names, so results do not depend on Python's hash salt or on
the order in which workers pick up episodes."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
