"""Bench ``ftops serve``: N = 1, 4, 16 concurrent clients on loopback, dynamic batching on vs off.

Builds a scratch model, registers it as ``production`` in a temporary registry, starts one server with
batching (``--max-batch 16``) and one without (``--max-batch 1``), each a real ``ftops serve`` subprocess,
and drives each with a bounded load: every client sends chat requests (greedy, distinct prompts, cache off)
until the level's request count is done. Reports requests/s, generated tokens/s (from the responses'
usage) and p50/p95 latency; the last line is a JSON object. Target: at 16 clients, batching >= 3x the
generated tokens/s of one-at-a-time serving.

    .venv/bin/python bench/serve.py [--max-tokens 32] [--requests-per-client 4] [--hidden 256 --layers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ft_assets.lineage.registry import ModelVersion, Registry  # noqa: E402
from ft_assets.models.base import ScratchSpec, from_scratch  # noqa: E402
from ft_assets.serving.keys import KeyStore  # noqa: E402
from tests.test_serving import free_port  # noqa: E402

LEVELS = (1, 4, 16)


def start_server(tmp: Path, max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (tmp / f"server-b{max_batch}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ft_assets.cli", "serve", "--registry", str(tmp / "registry.sqlite"), "--keys",
         str(tmp / "keys.json"), "--port", str(port), "--max-batch", str(max_batch), "--batch-wait-ms", "10",
         "--cache-size", "0", "--rate-limit", "1000000", "--torch-threads", str(threads)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "FTOPS_HOME": str(tmp)})
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError((tmp / f"server-b{max_batch}.log").read_text()[-3000:])
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


async def load(base: str, key: str, clients: int, requests: int, max_tokens: int) -> dict:
    latencies: list[float] = []
    tokens = failures = 0
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens, failures
        for i in counter:
            started = time.perf_counter()
            r = await http.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": f"question number {i}: how many rows?"}],
                "max_tokens": max_tokens, "temperature": 0})
            latencies.append(time.perf_counter() - started)
            if r.status_code != 200:
                failures += 1
                continue
            tokens += r.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=600,
                                 limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"clients": clients, "requests": requests, "failures": failures, "seconds": round(wall, 3),
            "requests_per_s": round(requests / wall, 2), "generated_tokens_per_s": round(tokens / wall, 1),
            "generated_tokens": tokens, "p50_s": round(statistics.median(latencies), 4),
            "p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests-per-client", type=int, default=4, help="requests per client at each level "
                                                                           "(at least 16 per level)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in the server")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ftops-bench-serve-"))
    corpus = [f"question number {i}: how many rows are in table t{i % 7}?" for i in range(300)]
    spec = ScratchSpec(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=4,
                       intermediate_size=4 * args.hidden, vocab_size=1000, corpus=corpus)
    info = from_scratch(spec, tmp / "model")
    with Registry(tmp / "registry.sqlite") as registry:
        registry.register(ModelVersion(id="merged_model@bench0001", asset="merged_model", variant="merged",
                                       version="bench0001", path=str(tmp / "model"),
                                       gates=[{"name": "merged_serving_consistent", "passed": True}]))
        registry.promote("merged_model@bench0001", actor="bench")
    key = KeyStore(tmp / "keys.json").add("bench")
    results: dict[str, list[dict]] = {}
    for mode, max_batch in (("batching", 16), ("one_at_a_time", 1)):
        proc, base = start_server(tmp, max_batch, args.threads)
        try:
            asyncio.run(load(base, key, 1, 2, args.max_tokens))  # warm-up: first-call allocations
            results[mode] = [asyncio.run(load(base, key, n, max(16, n * args.requests_per_client),
                                              args.max_tokens)) for n in LEVELS]
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"{'mode':15} {'clients':>7} {'req/s':>8} {'gen tok/s':>10} {'p50 s':>8} {'p95 s':>8} {'failed':>6}")
    for mode, rows in results.items():
        for r in rows:
            print(f"{mode:15} {r['clients']:>7} {r['requests_per_s']:>8} {r['generated_tokens_per_s']:>10} "
                  f"{r['p50_s']:>8} {r['p95_s']:>8} {r['failures']:>6}")
    on, off = results["batching"][-1], results["one_at_a_time"][-1]
    speedup = round(on["generated_tokens_per_s"] / max(off["generated_tokens_per_s"], 1e-9), 2)
    print(json.dumps({"bench": "serve", "model": info["model_id"], "parameters": info["parameters"],
                      "max_tokens": args.max_tokens, "torch_threads": args.threads,
                      "machine": f"{platform.machine()} {os.cpu_count()} cores", "results": results,
                      "speedup_tokens_per_s_at_16": speedup, "target_met": speedup >= 3.0,
                      "failures": sum(r["failures"] for rows in results.values() for r in rows)}))


if __name__ == "__main__":
    main()
