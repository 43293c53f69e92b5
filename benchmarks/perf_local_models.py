"""Measure the local pool's models on this machine: CPU seconds (and wall seconds) per 1k prompt and
completion tokens, RSS, and the price card those give at a stated price per core-hour (what
benchmarks/pools/local-cpu.yaml's ``price_basis`` cites).

    python benchmarks/perf_local_models.py [--pool local-cpu] [--core-hourly 0.05] [--repeats 3]

Each model's server is started by the harness (as a run would). Prompt: a ~1k-token prompt that starts
with a fresh nonce (so the server's prefix reuse cannot help) and one generated token. Completion: a short
prompt and up to 128 generated tokens, less the prompt's share. The price uses the server process's CPU
time (user + system, all threads), which other jobs on a shared machine do not inflate as they do wall
time; wall time is printed beside it. Medians are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    pid = servers.server_pid(local.port)
    call(base, name, "Hello.", 4)  # warm-up
    rates: dict[str, list[float]] = {
        "prompt_cpu": [],
        "prompt_wall": [],
        "completion_cpu": [],
        "completion_wall": [],
    }
    for _ in range(repeats):
        cpu = cpu_seconds(pid)
        wall, usage = call(base, name, f"{uuid.uuid4()} " + FILLER * 60 + "\nSummarise in one word.", 1)
        cpu = cpu_seconds(pid) - cpu
        rates["prompt_cpu"].append(cpu / usage["prompt_tokens"])
        rates["prompt_wall"].append(wall / usage["prompt_tokens"])
        cpu = cpu_seconds(pid)
        wall, usage = call(base, name, f"{uuid.uuid4()} Write a long story about a fox.", 128)
        cpu = cpu_seconds(pid) - cpu
        generated = max(1, usage["completion_tokens"])
        rates["completion_cpu"].append((cpu - usage["prompt_tokens"] * rates["prompt_cpu"][-1]) / generated)
        rates["completion_wall"].append(
            (wall - usage["prompt_tokens"] * rates["prompt_wall"][-1]) / generated
        )
    per_1k = {key: round(1000 * statistics.median(values), 3) for key, values in rates.items()}
    return {
        "prompt_cpu_s_per_1k": per_1k["prompt_cpu"],
        "completion_cpu_s_per_1k": per_1k["completion_cpu"],
        "prompt_wall_s_per_1k": per_1k["prompt_wall"],
        "completion_wall_s_per_1k": per_1k["completion_wall"],
        "completion_tokens_per_wall_s": round(1000 / per_1k["completion_wall"], 1),
        "rss_mb": round(rss_mb(pid), 0),
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="local-cpu")
    parser.add_argument(
        "--core-hourly", type=float, default=0.05, help="stated price of one core, $ per hour"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {}
    try:
        for model in load_pool(args.pool).spec.models:
            if model.local is None:
                continue
            measured = measure(model.name, model.local, args.repeats)
            per_second = args.core_hourly / 3600
            measured["input_per_mtok"] = round(measured["prompt_cpu_s_per_1k"] * 1000 * per_second, 4)
            measured["output_per_mtok"] = round(measured["completion_cpu_s_per_1k"] * 1000 * per_second, 4)
            results[model.name] = measured
            print(json.dumps({model.name: measured}), flush=True)
    finally:
        servers.stop_all()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
