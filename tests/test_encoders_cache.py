"""Batched embedding and the shared sqlite cache under concurrent processes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from harness.types import Message
from routers.learned.embedding import CachedEmbedder
from routers.learned.history_encoder import HistoryEncoder

sys.path.insert(0, str(Path(__file__).parent))
from test_history_encoder import CountingEmbedder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASK = "Your task is to boil water."

WORKER = textwrap.dedent(
    f"""
    import json, sys, time
    sys.path[:0] = [{str(REPO)!r}, {str(Path(__file__).parent)!r}]
    from pathlib import Path
    import numpy as np
    from test_history_encoder import CountingEmbedder
    from routers.learned.embedding import CachedEmbedder

    cache_dir, role, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    expected = CountingEmbedder()
    wrong = 0
    for i in range(rounds):
        # a fresh instance per round: no memory layer, every found vector comes from the file
        cached = CachedEmbedder(CountingEmbedder(), cache_dir, memory_items=0)
        if role == "writer":
            texts = [f"{{sys.argv[4]}}-{{i}}-{{j}}" for j in range(6)] + [f"shared-{{i}}"]
        else:  # a reader asks for what the writers are writing right now, and earlier texts
            texts = [f"shared-{{i}}", f"shared-{{i // 2}}", f"w1-{{i}}-0", f"w2-{{i // 3}}-5"]
        got = cached.embed(texts)
        wrong += int(not np.array_equal(got, expected.embed(texts)))
        stats = cached.stats()
        cached.close()
        print(json.dumps({{"disk_hits": stats.disk_hits, "misses": stats.misses, "wrong": wrong}}), flush=True)
    """
)


def test_concurrent_writer_and_reader_processes_share_one_cache(tmp_path):
    roles = [("writer", "w1"), ("writer", "w2"), ("reader", "r1"), ("reader", "r2")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), role, "120", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, name in roles
    ]
    totals = {}
    for (_, name), proc in zip(roles, procs, strict=True):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"{name}: {err}"
        lines = [json.loads(line) for line in out.splitlines()]
        assert len(lines) == 120 and lines[-1]["wrong"] == 0, name
        totals[name] = {key: sum(line[key] for line in lines) for key in ("disk_hits", "misses")}
    # readers really read while the writers wrote: most of their texts came from the file
    assert totals["r1"]["disk_hits"] > 120 and totals["r2"]["disk_hits"] > 120

    db = sqlite3.connect(tmp_path / CachedEmbedder.FILE_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    writer_texts = [f"{name}-{i}-{j}" for name in ("w1", "w2") for i in range(120) for j in range(6)]
    writer_texts += [f"shared-{i}" for i in range(120)]
    assert stored == len(writer_texts)  # readers asked only for texts some writer also writes
    reader = CachedEmbedder(CountingEmbedder(), tmp_path)
    assert np.array_equal(reader.embed(writer_texts), CountingEmbedder().embed(writer_texts))
    assert reader.stats().misses == 0


def test_a_batch_of_histories_sends_all_new_texts_to_the_embedder_in_one_call(tmp_path):
    inner = CountingEmbedder()
    encoder = HistoryEncoder(CachedEmbedder(inner, tmp_path), mode="incremental")
    histories = [
        (TASK, [Message("user", f"You are in room {e}."), Message("assistant", f"Action: look {e}")])
        for e in range(5)
    ]
    vectors = encoder.encode_batch(histories)
    assert len(inner.calls) == 1
    assert len(inner.calls[0]) == 1 + 2 * 5  # the shared task once, two messages per history
    assert np.allclose(vectors[3], encoder.encode(*histories[3]))
    assert len(inner.calls) == 1  # the single history was answered from the cache
