"""Measure the local pool's models on this machine: seconds per 1k prompt and completion tokens, RSS, and the
price card those give at a stated hourly price (what benchmarks/pools/local-cpu.yaml's ``price_basis`` cites).

    python benchmarks/perf_local_models.py [--pool local-cpu] [--hourly 0.10] [--repeats 3]

Each model's server is started by the harness (as a run would). Prompt speed: a ~1k-token prompt that
starts with a fresh nonce (so the server's prefix reuse cannot help) and one generated token. Completion
speed: a short prompt and 128 generated tokens (``ignore_eos``-free: the reply may stop early; the rate is
tokens over time), less the measured prompt time. The medians are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path

import httpx

from harness.local import servers
from harness.pool import load_pool

FILLER = "The quick brown fox jumps over the lazy dog while the scientist measures the temperature. "


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def call(base: str, model: str, prompt: str, max_tokens: int) -> tuple[float, dict]:
    started = time.perf_counter()
    response = httpx.post(
        f"{base}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
              "temperature": 0.7},
        timeout=600,
    )  # fmt: skip
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["usage"]


def measure(name: str, local, repeats: int) -> dict:
    base = servers.ensure_server(name, local)
    prompt_rates, completion_rates = [], []
    for _ in range(repeats):
        seconds, usage = call(base, name, f"{uuid.uuid4()} " + FILLER * 60 + "\nSummarise in one word.", 1)
        per_prompt_token = seconds / usage["prompt_tokens"]
        prompt_rates.append(per_prompt_token)
        seconds, usage = call(base, name, f"{uuid.uuid4()} Write a long story about a fox.", 128)
        generating = seconds - usage["prompt_tokens"] * per_prompt_token
        completion_rates.append(generating / max(1, usage["completion_tokens"]))
    pid = servers.server_pid(local.port)
    return {
        "prompt_s_per_1k": round(1000 * statistics.median(prompt_rates), 3),
        "completion_s_per_1k": round(1000 * statistics.median(completion_rates), 3),
        "completion_tokens_per_s": round(1 / statistics.median(completion_rates), 1),
        "rss_mb": round(rss_mb(pid), 0) if pid else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="local-cpu")
    parser.add_argument("--hourly", type=float, default=0.10, help="stated price of this machine, $ per hour")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {}
    try:
        for model in load_pool(args.pool).spec.models:
            if model.local is None:
                continue
            measured = measure(model.name, model.local, args.repeats)
            per_second = args.hourly / 3600
            measured["input_per_mtok"] = round(measured["prompt_s_per_1k"] * 1000 * per_second, 4)
            measured["output_per_mtok"] = round(measured["completion_s_per_1k"] * 1000 * per_second, 4)
            results[model.name] = measured
            print(json.dumps({model.name: measured}), flush=True)
    finally:
        servers.stop_all()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
