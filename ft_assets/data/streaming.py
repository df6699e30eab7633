"""Batch plumbing for the data stages: record artifacts read and written a batch at a time, and an ordered
map over a process pool, so a stage's memory is a few batches whatever the dataset's size.

Every stage that streams calls the same per-row function on each batch as its in-memory form, in the same
order, so the rows kept and the reasons given are the same (tests/test_data_streaming.py checks this).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import pandas as pd

from ft_assets.data import artifact_files as files
from ft_assets.data.records import ensure_record_columns

BATCH_ROWS = 20_000

T = TypeVar("T")
R = TypeVar("R")


def data_workers() -> int:
    """Processes for per-row work: ``FTOPS_DATA_WORKERS`` if set, else the machine's cores (at most 4)."""
    value = os.environ.get("FTOPS_DATA_WORKERS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"FTOPS_DATA_WORKERS must be a whole number >= 1, got {value!r}")
        return int(value)
    return max(1, min(os.cpu_count() or 1, 4))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 1) -> Iterator[R]:
    """``fn(item)`` for each item, in input order. With ``workers`` > 1 the calls run in a process pool with
    at most two per worker in flight, so only a few items (batches) are ever held at once."""
    if workers <= 1:
        yield from map(fn, items)
        return
    # forkserver, not fork: a Dagster step process has threads, and a forked child can inherit a held lock.
    pool = multiprocessing.get_context("forkserver").Pool(workers)
    try:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        # Left early too (a stage that stops reading, an error): the workers finish the few calls in flight and
        # exit. Not Pool.terminate(): it ends workers with SIGTERM and waits for them, and a Dagster process
        # started with SIGINT ignored (nohup, `&`) maps SIGTERM to that, so its workers ignore it: a wait forever.
        pool.close()
        pool.join()


def record_rows(directories: Iterable[Path]) -> int:
    """Rows in the record artifacts (from the Parquet footers; nothing is read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(Path(d) / files.RECORDS_FILE).metadata.num_rows for d in directories)


def record_batches(directory: Path, batch_rows: int = BATCH_ROWS,
                   columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """A record artifact's rows, ``batch_rows`` at a time, as ``files.read_records`` gives them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(Path(directory) / files.RECORDS_FILE)
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        frame = pa.Table.from_batches([batch]).to_pandas()
        yield frame if columns else ensure_record_columns(frame)


def record_dicts(directory: Path, batch_rows: int, columns: list[str]) -> Iterator[list[dict]]:
    """``columns`` of a record artifact's rows as dicts, ``batch_rows`` at a time, straight from Arrow (a third of
    the time of ``record_batches(...).to_dict("records")``, same values)."""
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(Path(directory) / files.RECORDS_FILE).iter_batches(batch_size=batch_rows,
                                                                                   columns=columns):
        yield batch.to_pylist()


class RecordsWriter:
    """A record artifact's ``records.parquet`` written a frame at a time (one row group or more each)."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / files.RECORDS_FILE
        self._writer = None
        self._schema = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self._schema = pa.Schema.from_pandas(frame, preserve_index=False)
            self._writer = pq.ParquetWriter(self.path, self._schema)
        self._writer.write_table(pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False))
        self.rows += len(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> RecordsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

