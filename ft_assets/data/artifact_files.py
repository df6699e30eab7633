"""One reader and one writer per data artifact kind: the only place that knows their file names.

Record artifacts (raw_records, clean_records, deduped_records) hold ``records.parquet`` plus, per
stage, ``quarantine.jsonl`` or ``duplicates.parquet``; example artifacts (sft_dataset,
preference_dataset) hold one JSON Lines file per split.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ft_assets.data.records import QUARANTINE_COLUMNS, ensure_record_columns, quarantine_frame

RECORDS_FILE = "records.parquet"
QUARANTINE_FILE = "quarantine.jsonl"
DUPLICATES_FILE = "duplicates.parquet"
DROPS_FILE = "drops.json"
SPLITS = ("train", "eval")


def write_records(directory: Path, records: pd.DataFrame, quarantine: pd.DataFrame | None = None,
                  duplicates: pd.DataFrame | None = None, chunk_rows: int = 100_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # A slice at a time: the Arrow copy of a million-row frame would be GBs beside the frame itself.
    schema = pa.Schema.from_pandas(records.iloc[0:0], preserve_index=False)
    with pq.ParquetWriter(Path(directory) / RECORDS_FILE, schema) as writer:
        for lo in range(0, max(len(records), 1), chunk_rows):
            writer.write_table(pa.Table.from_pandas(records.iloc[lo: lo + chunk_rows], schema=schema,
                                                    preserve_index=False))
    if quarantine is not None:
        write_quarantine(directory, quarantine)
    if duplicates is not None:
        duplicates.to_parquet(directory / DUPLICATES_FILE, index=False)


def write_quarantine(directory: Path, quarantine: pd.DataFrame) -> None:
    quarantine.to_json(directory / QUARANTINE_FILE, orient="records", lines=True, force_ascii=False)


def read_records(directory: Path) -> pd.DataFrame:
    """Canonical records, every column present (artifacts written before a column existed lack it)."""
    return ensure_record_columns(pd.read_parquet(Path(directory) / RECORDS_FILE))


def read_quarantine(directory: Path) -> pd.DataFrame:
    path = Path(directory) / QUARANTINE_FILE
    if not path.exists() or not path.stat().st_size:
        return quarantine_frame([])
    frame = pd.read_json(path, orient="records", lines=True, dtype=False)
    return quarantine_frame(frame.reindex(columns=QUARANTINE_COLUMNS).to_dict("records"))


def read_duplicates(directory: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(directory) / DUPLICATES_FILE)


def write_drops(directory: Path, drops: dict) -> None:
    (directory / DROPS_FILE).write_text(json.dumps(drops, indent=2))


def examples_path(directory: Path, split: str) -> Path:
    """The JSON Lines file of one split of an example artifact ("train", "eval", "decontaminated", ...)."""
    return Path(directory) / f"{split}.jsonl"


def write_examples(directory: Path, split: str, rows: Iterable[dict]) -> None:
    with examples_path(directory, split).open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def read_examples(directory: Path, split: str) -> list[dict]:
    path = examples_path(directory, split)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
