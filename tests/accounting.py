"""Every dollar of a run directory accounted, read from its files as plain JSON (no harness code).

Each turn line's charges, in the episode's current turn file and in every ``*.interrupted-N`` file of
its earlier attempts, plus the charges no line holds (an episode record's ``unrecorded_charges``),
must add up to the episode's recorded ``cost`` plus ``abandoned_cost``; ``attempts`` must count the
files. Judging is left out: ScienceWorld episodes have no judge.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def charged(path: Path) -> float:
    """The charges on a turn file's complete lines (a torn last line is dropped, as readers do)."""
    total = 0.0
    for line in path.read_text().split("\n"):
        try:
            total += sum(c["dollars"] for c in json.loads(line)["charges"])
        except json.JSONDecodeError:
            continue
    return total


def assert_every_dollar_accounted(out: Path) -> dict[str, int]:
    """Check each episode of ``out``; returns how many attempts each one's record says it took."""
    attempts = {}
    for text in (out / "episodes.jsonl").read_text().splitlines():
        record = json.loads(text)
        stem = record["episode"].replace("/", "__")
        current = out / "turns" / f"{stem}.jsonl"
        earlier = sorted((out / "turns").glob(f"{stem}.interrupted-*.jsonl"))
        on_lines = (charged(current) if current.exists() else 0.0) + sum(map(charged, earlier))
        not_on_lines = sum(c["dollars"] for c in record.get("unrecorded_charges") or [])
        recorded = record["cost"] + record.get("abandoned_cost", 0.0)
        assert math.isclose(on_lines + not_on_lines, recorded, rel_tol=1e-9, abs_tol=1e-12), (
            f"{record['episode']}: its turn files charge ${on_lines + not_on_lines:.6f} but its record "
            f"says cost ${record['cost']:.6f} + abandoned ${record.get('abandoned_cost', 0.0):.6f} "
            f"over {record.get('attempts')} attempt(s) ({len(earlier)} earlier attempt file(s))"
        )
        assert record.get("attempts") == len(earlier) + 1, (
            record["episode"],
            record.get("attempts"),
            earlier,
        )
        attempts[record["episode"]] = record["attempts"]
    return attempts
