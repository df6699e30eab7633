"""Data stages at scale: generated drops through the same stage functions and GX gates as the assets.

Usage: nice -n 19 python bench/data_scale.py [--sizes 100000 1000000] [--seed S] [--work DIR]

Each size is run in a fresh process (so peak RSS is that size's own). A drop is JSON Lines, gzipped, of
records with 100-300 words (a prompt of 30-80 words, an answer of the rest) drawn Zipf-like from a few
thousand made-up words, with the noise the demo data has: 3% exact duplicates (re-cased), 2% near
duplicates (a few words edited), 1% malformed lines, 1% too-short prompts, 0.5% e-mail addresses.
Stages, timed one by one: ingest (streamed to Parquet, as raw_records does), clean, exact + near dedup
(``dedup_stage``), split + decontamination (``split_stage``), and the deduped_records GX suite.
Prints one table row per size, then a JSON object: rows/s per stage, peak RSS per size, and the growth
exponent of each stage's time (and of peak RSS) from the smallest size to the largest.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("ingest", "clean", "dedup", "split", "gates")


def _vocabulary(rng: random.Random, n: int = 4000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(n)]


def write_drop(path: Path, rows: int, seed: int = 0) -> int:
    """A realistic noisy drop of ``rows`` lines; returns its size in bytes (compressed)."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    weights = [1 / (i + 1) for i in range(len(vocab))]
    recent: list[dict] = []
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as handle:
        for i in range(rows):
            roll = rng.random()
            if roll < 0.03 and recent:
                obj = dict(rng.choice(recent))
                obj["question"] = obj["question"].upper()
            elif roll < 0.05 and recent:
                obj = dict(rng.choice(recent))
                words = obj["answer"].split()
                for _ in range(max(1, len(words) // 50)):
                    words[rng.randrange(len(words))] = rng.choice(vocab)
                obj["answer"] = " ".join(words)
            elif roll < 0.06:
                handle.write('{"question": "broken line\n')
                continue
            else:
                n_words = rng.randint(100, 300)
                words = rng.choices(vocab, weights, k=n_words)
                cut = rng.randint(30, 80)
                question = " ".join(words[:cut]).capitalize() + "?"
                if roll < 0.07:
                    question = "Why?"
                elif roll < 0.075:
                    question += f" Reply to user{i}@example.com."
                obj = {"question": question, "answer": " ".join(words[cut:]).capitalize() + "."}
                recent = (recent + [obj])[-1000:]
            handle.write(json.dumps(obj) + "\n")
    return path.stat().st_size


def run_one(rows: int, seed: int, work: Path) -> dict:
    from ft_assets.data import artifact_files as files
    from ft_assets.data.dedup import example_keys
    from ft_assets.data.pipeline import clean_stage, dedup_stage, ingest_to_artifact, split_stage
    from ft_assets.data.suites import deduped_records_suite, prepare_records, validate_frame

    work.mkdir(parents=True, exist_ok=True)
    drop = work / f"drop{rows}.jsonl.gz"
    drop_bytes = write_drop(drop, rows, seed)
    seconds: dict[str, float] = {}
    out = work / f"raw{rows}"
    out.mkdir(exist_ok=True)

    t = time.perf_counter()
    ingest = ingest_to_artifact([drop], out)
    seconds["ingest"] = time.perf_counter() - t
    records = files.read_records(out)
    t = time.perf_counter()
    cleaned = clean_stage(records)
    seconds["clean"] = time.perf_counter() - t
    del records
    t = time.perf_counter()
    dedup = dedup_stage(cleaned.records)
    seconds["dedup"] = time.perf_counter() - t
    t = time.perf_counter()
    split = split_stage(dedup.records)
    seconds["split"] = time.perf_counter() - t
    t = time.perf_counter()
    frame = prepare_records(dedup.records)
    frame["dedup_key"] = example_keys(frame)
    suite = validate_frame(frame, "deduped_records", deduped_records_suite(50))
    seconds["gates"] = time.perf_counter() - t
    return {
        "rows": rows, "drop_bytes_gz": drop_bytes, "kept": len(dedup.records), "quarantined": ingest.quarantined
        + len(cleaned.quarantine), "exact_duplicates": dedup.exact, "near_duplicates": dedup.near,
        "train": len(split.train), "eval": len(split.eval), "decontaminated": len(split.decontaminated),
        "gate_passed": suite.success, "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "rows_per_s": {k: round(rows / v) if v else None for k, v in seconds.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size, print its JSON
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="ftops-data-scale-"))
    if args.one:
        print(json.dumps(run_one(args.one, args.seed, work)))
        return
    results = []
    for rows in sorted(args.sizes):
        done = subprocess.run([sys.executable, __file__, "--one", str(rows), "--seed", str(args.seed),
                               "--work", str(work)], capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{rows:>9} rows: " + "  ".join(f"{s} {result['rows_per_s'][s]}/s" for s in STAGES)
              + f"  peak {result['peak_rss_mb']} MB  kept {result['kept']}", flush=True)
    summary: dict = {"bench": "data_scale", "sizes": [r["rows"] for r in results], "runs": results}
    if len(results) > 1:
        small, large = results[0], results[-1]
        ratio = math.log(large["rows"] / small["rows"])
        summary["growth_exponent"] = {s: round(math.log(large["seconds"][s] / small["seconds"][s]) / ratio, 3)
                                      for s in STAGES if small["seconds"][s] and large["seconds"][s]}
        total = [sum(r["seconds"].values()) for r in (small, large)]
        summary["growth_exponent"]["total"] = round(math.log(total[1] / total[0]) / ratio, 3)
        summary["growth_exponent"]["peak_rss"] = round(
            math.log(large["peak_rss_mb"] / small["peak_rss_mb"]) / ratio, 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
