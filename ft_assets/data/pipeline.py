"""The data stages as plain functions, shared by the assets and by ``ftops data validate``.

Each stage returns its outputs and checks its own accounting (rows in = rows out + rows set aside)
before anything is published: a stage that lost rows raises ``AccountingError`` and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ft_assets.data.clean import CleanConfig, CleanResult, clean_records
from ft_assets.data.decontam import contaminated
from ft_assets.data.dedup import DedupResult, exact_dedup, merged_duplicates, near_dedup
from ft_assets.data.ingest import IngestLimits, IngestResult, IngestSummary, ingest_drops, ingest_to_files
from ft_assets.data.split import source_record_id, split_records

# Benchmark references shorter than this (a one-word prompt) would flag every train text containing that word.
MIN_REFERENCE_WORDS = 4


class AccountingError(AssertionError):
    """A stage's rows do not add up: something would be silently lost."""


def _accounted(stage: str, rows_in: int, **parts: int) -> None:
    if rows_in != sum(parts.values()):
        detail = " + ".join(f"{k} {v}" for k, v in parts.items())
        raise AccountingError(f"{stage} lost rows: {rows_in} in != {detail}")


def ingest_stage(paths: list[Path], field_map: dict[str, str] | None = None, limits: IngestLimits | None = None,
                 roots: list[Path] | None = None) -> IngestResult:
    result = ingest_drops(paths, field_map=field_map, limits=limits, roots=roots)
    _accounted("ingest", result.rows_seen, kept=len(result.records), quarantined=len(result.quarantine))
    return result


def ingest_to_artifact(paths: list[Path], directory: Path, field_map: dict[str, str] | None = None,
                       limits: IngestLimits | None = None, roots: list[Path] | None = None) -> IngestSummary:
    """The ingest stage streamed into a record artifact's files (memory: one batch, whatever the drop's size)."""
    from ft_assets.data import artifact_files as files

    summary = ingest_to_files(paths, directory / files.RECORDS_FILE, directory / files.QUARANTINE_FILE, field_map,
                              limits, roots)
    _accounted("ingest", summary.rows_seen, kept=summary.records, quarantined=summary.quarantined)
    return summary


def clean_stage(records: pd.DataFrame, config: CleanConfig | None = None) -> CleanResult:
    result = clean_records(records, config)
    _accounted("clean", len(records), kept=len(result.records), quarantined=len(result.quarantine))
    return result


@dataclass
class DedupStageResult:
    records: pd.DataFrame
    duplicates: pd.DataFrame  # exact then near duplicates; ``method``, ``similarity``, ``duplicate_of`` (kept)
    exact: int
    near: int


def dedup_stage(records: pd.DataFrame, near_duplicates: bool = True, threshold: float = 0.8, num_perm: int = 128,
                shingle_size: int = 5) -> DedupStageResult:
    """Exact duplicates (normalized conversation) then MinHash-LSH near duplicates; each names a row that stayed.

    Pass the frame without keeping a reference to it (``dedup_stage(read_records(path))``) and it is freed once
    exact dedup has copied the rows it keeps: at a million rows each copy is GBs.
    """
    rows_in = len(records)
    exact = exact_dedup(records)
    del records
    near = (near_dedup(exact.records, threshold, num_perm, shingle_size) if near_duplicates and len(exact.records)
            else DedupResult(exact.records, exact.duplicates.iloc[0:0]))
    duplicates = merged_duplicates(exact.duplicates, near.duplicates)
    _accounted("dedup", rows_in, kept=len(near.records), duplicates=len(duplicates))
    return DedupStageResult(near.records, duplicates, len(exact.duplicates), len(near.duplicates))


@dataclass
class SplitStageResult:
    train: list[dict]
    eval: list[dict]
    decontaminated: list[dict]  # train examples removed for sharing an n-gram with eval or a benchmark
    preference_rows: int  # set aside for preference_dataset
    train_records: int  # records behind the train examples (a chat gives one example per assistant reply)
    splits: dict[str, list[dict]] = field(default_factory=dict)


def split_stage(records: pd.DataFrame, eval_fraction: float = 0.12, salt: str = "", ngram: int = 13,
                benchmark_files: list[str] | None = None, system_prompts: dict[str, str] | None = None,
                every_assistant_turn: bool = True) -> SplitStageResult:
    """Train/eval split by content hash, then train examples sharing a word n-gram with eval/benchmarks removed."""
    preference = int((records["kind"] == "preference").sum())
    train, evaluation = split_records(records[records["kind"] == "sft"], eval_fraction, salt,
                                      system_prompts=system_prompts, every_assistant_turn=every_assistant_turn)
    train_records = len({source_record_id(r) for r in train})
    references = [(r["prompt"][-1]["content"], f"eval:{r['record_id']}") for r in evaluation]
    if benchmark_files:
        bench = ingest_drops([Path(f) for f in benchmark_files]).records
        references += [(p, f"benchmark:{rid}") for p, rid in zip(bench["prompt"], bench["record_id"], strict=True)
                       if len(p.split()) >= MIN_REFERENCE_WORDS]
    hits = contaminated([r["prompt"][-1]["content"] for r in train], [t for t, _ in references], ngram)
    removed = [{**train[i], "matched_ngram": gram, "matched": references[j][1]} for i, j, gram in hits]
    dropped = {i for i, _, _ in hits}
    train = [r for i, r in enumerate(train) if i not in dropped]
    _accounted("split", len(records), train=train_records, eval=len(evaluation), preference=preference)
    return SplitStageResult(train, evaluation, removed, preference, train_records,
                            {"train": train, "eval": evaluation, "decontaminated": removed})
