"""Peak resident memory of ingesting one large drop, with the configured (default) ingest limits on.

`python bench/ingest_memory.py [--gb 1.5] [--bomb-gb 3] [--work DIR]`

Two drops, each ingested by `ingest_to_files` (what the raw_records asset runs) in a fresh process whose peak
RSS (ru_maxrss) is read at the end, so writing the test files does not count:
- ``valid``: a .jsonl.gz of ``--gb`` GB (decompressed) of distinct valid lines, sized to stay under max_rows;
- ``bomb``: a compression bomb, a few MB of gzip expanding to ``--bomb-gb`` GB of valid lines, refused at
  max_drop_bytes with a quarantine row naming the limit.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = """
import json, resource, sys, time
from pathlib import Path
from ft_assets.data.ingest import IngestLimits, ingest_to_files
src, work = Path(sys.argv[1]), Path(sys.argv[2])
started = time.perf_counter()
summary = ingest_to_files([src], work / "records.parquet", work / "quarantine.jsonl", limits=IngestLimits())
reasons = [json.loads(line)["reason"] for line in (work / "quarantine.jsonl").open()][:3]
print(json.dumps({"rows_kept": summary.records, "rows_quarantined": summary.quarantined,
                  "quarantine_reasons": reasons, "seconds": round(time.perf_counter() - started, 1),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def write_valid(path: Path, gigabytes: float) -> dict:
    """Distinct valid lines of ~750 bytes: ``gigabytes`` GB stays under the default max_rows (2,000,000)."""
    padding = "which customers placed more than the average number of orders in the last quarter " * 8
    target, written, rows = gigabytes * 1e9, 0, 0
    with gzip.open(path, "wb", compresslevel=1) as handle:
        while written < target:
            chunk = "".join(json.dumps({"question": f"{padding}(variant {rows + i})",
                                        "sql": f"SELECT * FROM orders WHERE id = {rows + i};"}) + "\n"
                            for i in range(10_000)).encode()
            handle.write(chunk)
            written, rows = written + len(chunk), rows + 10_000
    return {"rows": rows, "decompressed_bytes": written, "file_bytes": path.stat().st_size}


def write_bomb(path: Path, gigabytes: float) -> dict:
    """One ~1.5 kB valid line repeated: gzip level 9 packs it about 1000:1."""
    line = (json.dumps({"question": "list every customer " * 75, "sql": "SELECT name FROM customers;"}) + "\n")
    block = line.encode() * 10_000
    target, written = gigabytes * 1e9, 0
    with gzip.open(path, "wb", compresslevel=9) as handle:
        while written < target:
            handle.write(block)
            written += len(block)
    return {"rows": written // len(line), "decompressed_bytes": written, "file_bytes": path.stat().st_size}


def ingest(path: Path, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(work)], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.5, help="decompressed size of the valid drop")
    parser.add_argument("--bomb-gb", type=float, default=3.0, help="decompressed size of the compression bomb")
    parser.add_argument("--work", default="", help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work or None) as tmp:
        work = Path(tmp)
        results = {}
        for name, writer, size in (("valid", write_valid, args.gb), ("bomb", write_bomb, args.bomb_gb)):
            src = work / f"{name}.jsonl.gz"
            started = time.perf_counter()
            drop = writer(src, size)
            drop["write_seconds"] = round(time.perf_counter() - started, 1)
            results[name] = {"drop": drop, "ingest": ingest(src, work / name)}
            src.unlink()
            print(name, json.dumps(results[name]), flush=True)
    print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                      "limits": "IngestLimits() defaults", **results}))


if __name__ == "__main__":
    main()
