"""The dedup stage streamed from artifact to artifact: what ``pipeline.dedup_stage`` and the asset's write give,
with a few batches in memory instead of the dataset.

Pass 1 reads only the columns the keys and texts need, a batch at a time (over a process pool), and keeps per
row a 16-byte digest of its exact key and its MinHash signature; the texts go with their batch. Exact
duplicates (the first occurrence in drop / line order stays, as in ``exact_dedup``) and the LSH candidates
among the survivors come from those arrays; verification re-reads the candidates' texts only. Pass 2 streams
the records again and writes the kept rows and the duplicates.

It relies on what every stage writes: rows already in drop / line order (``_in_drop_order`` then changes
nothing) and unique record ids. An artifact that is not so takes the in-memory form, which sorts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ft_assets.data import artifact_files as files
from ft_assets.data.dedup import _in_drop_order, example_keys, example_texts, merged_duplicates
from ft_assets.data.near_dup import ShingleSets, check_parameters, cluster_near_duplicates, signatures
from ft_assets.data.pipeline import _accounted, dedup_stage
from ft_assets.data.records import ensure_record_columns
from ft_assets.data.streaming import BATCH_ROWS, RecordsWriter, data_workers, ordered_map, record_batches, record_rows

# What the keys and texts are made of (example_keys, example_texts); pass 1 adds the order and the ids.
_TEXT_COLUMNS = ["kind", "prompt", "completion", "history", "chosen", "rejected"]
_SCAN_COLUMNS = ["record_id", "drop_id", "line_no", *_TEXT_COLUMNS]
SAMPLE = 5  # duplicates per method whose kept row's prompt the summary carries: the asset shows five


@dataclass
class DedupSummary:
    rows_in: int
    records: int
    exact: int
    near: int
    duplicates: pd.DataFrame  # as written: exact then near duplicates, ``duplicate_of``, ``method``, ``similarity``
    kept_sample: pd.DataFrame  # record_id and prompt of the kept rows the first SAMPLE duplicates of each method name


@dataclass
class _Scan:
    digests: np.ndarray  # (rows, 2) uint64: the first 16 bytes of each row's dedup_key
    ids: np.ndarray  # a 64-bit hash of each record_id: all distinct proves the ids are
    ordered: bool  # the batch is in drop / line order
    first: tuple[str, int]  # (drop_id, line_no) of its first and last rows: the order across batches
    last: tuple[str, int]
    sig: np.ndarray | None  # (num_perm, rows) MinHash signatures, when near duplicates are looked for


def _read(source: Path, batch_rows: int, wanted: list[str]) -> Iterator[pd.DataFrame]:
    """The batches of ``wanted`` columns, as ``ensure_record_columns`` completes them (older artifacts lack some)."""
    import pyarrow.parquet as pq

    present = set(pq.ParquetFile(Path(source) / files.RECORDS_FILE).schema_arrow.names)
    for batch in record_batches(source, batch_rows, [c for c in wanted if c in present]):
        yield ensure_record_columns(batch)


def _scan(batch: pd.DataFrame, near: bool, num_perm: int, shingle_size: int) -> _Scan:
    digests = b"".join(bytes.fromhex(k[:32]) for k in example_keys(batch))
    ends = batch[["drop_id", "line_no"]]
    sig = signatures(example_texts(batch), num_perm, shingle_size) if near else None
    return _Scan(np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2),
                 pd.util.hash_array(batch["record_id"].to_numpy(dtype=object), categorize=False),
                 _in_drop_order(ends) is ends, (str(ends.iat[0, 0]), int(ends.iat[0, 1])),
                 (str(ends.iat[-1, 0]), int(ends.iat[-1, 1])), sig)


def _follows(last: tuple[str, int], first: tuple[str, int]) -> bool:
    """Whether a batch starting at ``first`` keeps drop / line order after one ending at ``last``."""
    return last[0] < first[0] or (last[0] == first[0] and last[1] <= first[1])


def _scan_all(source: Path, n: int, near: bool, num_perm: int, shingle_size: int, workers: int,
              batch_rows: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Pass 1: every row's key digest (n, 2) and signature (num_perm, n); None where the rows are out of drop
    order or a record id repeats (no stage writes either: the in-memory form, which sorts, says what they give)."""
    sig = np.empty((num_perm, n), dtype=np.uint32) if near else None
    digests, ids, lo, last = [], [], 0, None
    scans = ordered_map(partial(_scan, near=near, num_perm=num_perm, shingle_size=shingle_size),
                        _read(source, batch_rows, _SCAN_COLUMNS), workers)
    with closing(scans):  # closed on a return: the pool and its batches go before the in-memory form runs
        for part in scans:
            if not part.ordered or (last is not None and not _follows(last, part.first)):
                return None
            rows = len(part.digests)
            if sig is not None:
                sig[:, lo:lo + rows] = part.sig
            digests.append(part.digests)
            ids.append(part.ids)
            lo, last = lo + rows, part.last
    if len(np.unique(np.concatenate(ids))) < n:
        return None
    return np.concatenate(digests), sig


def _first_occurrence(digests: np.ndarray) -> np.ndarray:
    """Per row, the index of the first row with its key (its own index when it is that row)."""
    order = np.lexsort((digests[:, 1], digests[:, 0]))  # stable: rows with one key stay in row order
    sorted_keys = digests[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (sorted_keys[1:] != sorted_keys[:-1]).any(axis=1)
    group_start = np.where(starts, np.arange(len(order)), 0)
    np.maximum.accumulate(group_start, out=group_start)
    first = np.empty(len(order), dtype=np.int64)
    first[order] = order[group_start]
    return first


def _candidate_sets(source: Path, batch_rows: int, shingle_size: int, docs: np.ndarray) -> ShingleSets:
    """The shingle sets of rows ``docs`` (sorted), their texts re-read a batch at a time and dropped after it."""
    sets = ShingleSets(shingle_size)
    lo = 0
    for batch in _read(source, batch_rows, _TEXT_COLUMNS):
        a, b = np.searchsorted(docs, [lo, lo + len(batch)])
        if b > a:
            sets.add(docs[a:b].tolist(), example_texts(batch.iloc[docs[a:b] - lo]))
        lo += len(batch)
    return sets


def _in_memory(source: Path, directory: Path, near_duplicates: bool, threshold: float, num_perm: int,
               shingle_size: int) -> DedupSummary:
    result = dedup_stage(files.read_records(source), near_duplicates, threshold, num_perm, shingle_size)
    files.write_records(directory, result.records, duplicates=result.duplicates)
    named = {r for method in ("exact", "near")
             for r in result.duplicates.loc[result.duplicates["method"] == method, "duplicate_of"].head(SAMPLE)}
    sample = result.records.loc[result.records["record_id"].isin(named), ["record_id", "prompt"]]
    return DedupSummary(len(result.records) + len(result.duplicates), len(result.records), result.exact,
                        result.near, result.duplicates, sample.reset_index(drop=True))


def _stacked(parts: list[pd.DataFrame], template: pd.DataFrame) -> pd.DataFrame:
    # Empty parts are left out: concatenating them could change a column's dtype.
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else template.iloc[0:0].reset_index(drop=True)


def dedup_to_artifact(source: Path, directory: Path, near_duplicates: bool = True, threshold: float = 0.8,
                      num_perm: int = 128, shingle_size: int = 5, workers: int | None = None,
                      batch_rows: int = BATCH_ROWS) -> DedupSummary:
    """``dedup_stage`` from the record artifact ``source`` to ``directory``'s records and duplicates files.

    The files hold the same rows, in the same order, with the same values as ``dedup_stage`` of the whole
    frame written by ``files.write_records``. Memory: a signature (``num_perm`` x 4 bytes) and ~100 bytes per
    row, the candidates' shingle sets, the duplicates, and a few batches (keys and signatures are computed
    ``workers`` batches at a time, default ``data_workers()``).
    """
    if near_duplicates:
        check_parameters(threshold, num_perm, shingle_size)  # before any row is read
    n = record_rows([source])
    if n == 0:
        return _in_memory(source, directory, near_duplicates, threshold, num_perm, shingle_size)
    workers = 1 if n <= batch_rows else data_workers() if workers is None else workers
    scanned = _scan_all(source, n, near_duplicates, num_perm, shingle_size, workers, batch_rows)
    if scanned is None:
        return _in_memory(source, directory, near_duplicates, threshold, num_perm, shingle_size)
    digests, sig = scanned
    first_of = _first_occurrence(digests)
    del digests, scanned
    index = np.arange(n)
    exact_dup = first_of != index
    pairs = [] if sig is None else cluster_near_duplicates(
        sig, partial(_candidate_sets, source, batch_rows, shingle_size), threshold, active=~exact_dup)
    del sig
    near_of = np.full(n, -1, dtype=np.int64)
    near_sim: dict[int, float] = {}
    for root, dup, sim in pairs:
        near_of[dup], near_sim[dup] = root, round(sim, 4)
    # Rows whose record_id a duplicate names, read as pass 2 reaches them (always before their duplicates).
    named = np.zeros(n, dtype=bool)
    named[first_of[exact_dup]] = True
    named[near_of[near_of >= 0]] = True
    exact_targets = first_of[exact_dup][:SAMPLE]
    in_sample = np.zeros(n, dtype=bool)
    in_sample[np.where(near_of[exact_targets] >= 0, near_of[exact_targets], exact_targets)] = True
    in_sample[[root for root, _, _ in pairs[:SAMPLE]]] = True

    id_of: dict[int, str] = {}
    exact_parts, near_parts, sample_parts = [], [], []
    exact_ids, near_ids, near_sims = [], [], []
    template, kept, lo = None, 0, 0
    with RecordsWriter(directory) as writer:
        for batch in record_batches(source, batch_rows):
            hi = lo + len(batch)
            template = batch if template is None else template
            record_ids = batch["record_id"].tolist()
            id_of.update((lo + i, record_ids[i]) for i in np.flatnonzero(named[lo:hi]).tolist())
            is_exact, is_near = exact_dup[lo:hi], near_of[lo:hi] >= 0
            exact_parts.append(batch[is_exact])
            exact_ids += [id_of[t] for t in first_of[lo:hi][is_exact].tolist()]
            near_parts.append(batch[is_near])
            near_ids += [id_of[t] for t in near_of[lo:hi][is_near].tolist()]
            near_sims += [near_sim[d] for d in index[lo:hi][is_near].tolist()]
            stays = batch[~(is_exact | is_near)]
            if len(stays):
                writer.write(stays)
            kept += len(stays)
            sample_parts.append(stays.loc[in_sample[lo:hi][~(is_exact | is_near)], ["record_id", "prompt"]])
            lo = hi
    # Built as exact_dedup / near_dedup build theirs, so each column's dtype is theirs too.
    exact = _stacked(exact_parts, template).assign(duplicate_of=exact_ids)
    near = (_stacked(near_parts, template).assign(duplicate_of=near_ids, similarity=near_sims) if near_duplicates
            else exact.iloc[0:0])
    duplicates = merged_duplicates(exact, near)
    _accounted("dedup", n, kept=kept, duplicates=len(duplicates))
    duplicates.to_parquet(Path(directory) / files.DUPLICATES_FILE, index=False)  # as files.write_records does
    return DedupSummary(n, kept, len(exact), len(near), duplicates,
                        pd.concat(sample_parts, ignore_index=True))
