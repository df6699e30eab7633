"""The clean and split stages streamed from artifact to artifact, a batch at a time.

The same per-row functions as ``pipeline.clean_stage`` / ``pipeline.split_stage`` (``clean_records``,
``is_eval``, ``turn_examples``, the decontamination index) run on each batch in order, so the files written
hold the same rows, in the same order, with the same quarantine reasons; memory holds a few batches (and,
for the split, the eval prompts decontamination compares against), not the dataset.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from ft_assets.data import artifact_files as files
from ft_assets.data.clean import CleanConfig, CleanResult, clean_records
from ft_assets.data.decontam import Decontaminator
from ft_assets.data.ingest import ingest_drops
from ft_assets.data.pipeline import MIN_REFERENCE_WORDS, _accounted
from ft_assets.data.records import quarantine_frame
from ft_assets.data.split import is_eval, side_examples, source_record_id, to_chat_example
from ft_assets.data.streaming import (
    BATCH_ROWS,
    RecordsWriter,
    data_workers,
    ordered_map,
    record_batches,
    record_dicts,
    record_rows,
)

SAMPLE_PER_REASON = 3


@dataclass
class CleanSummary:
    rows_in: int
    records: int
    quarantined: int
    pii_counts: dict[str, int] = field(default_factory=dict)
    html_stripped: int = 0
    filter_counts: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)  # per reason kind, most frequent first
    quarantine_sample: pd.DataFrame | None = None  # the first rows of each reason kind


def _clean_batch(batch: pd.DataFrame, config: CleanConfig) -> tuple[int, CleanResult]:
    return len(batch), clean_records(batch, config)


def clean_to_artifact(sources: list[Path], directory: Path, config: CleanConfig | None = None,
                      workers: int | None = None, batch_rows: int = BATCH_ROWS) -> CleanSummary:
    """``clean_records`` over the record artifacts ``sources`` (in order), written to ``directory``'s records and
    quarantine files; batches are cleaned ``workers`` at a time (default ``data_workers()``)."""
    config = config or CleanConfig()
    workers = data_workers() if workers is None else workers
    if record_rows(sources) <= batch_rows:
        workers = 1  # one batch: a pool would only add its start-up
    pii, filters, reasons = Counter(), Counter(), Counter()
    sample: list[dict] = []
    rows_in = kept = quarantined = html = 0
    batches = (b for s in sources for b in record_batches(s, batch_rows))
    with RecordsWriter(directory) as writer, (directory / files.QUARANTINE_FILE).open("w", encoding="utf-8") as qf:
        for n, result in ordered_map(partial(_clean_batch, config=config), batches, workers):
            rows_in += n
            if len(result.records) or not writer.rows:
                writer.write(result.records)
            kept += len(result.records)
            if len(result.quarantine):
                result.quarantine.to_json(qf, orient="records", lines=True, force_ascii=False)
                quarantined += len(result.quarantine)
                for row in result.quarantine.to_dict("records"):
                    kind = row["reason"].split(":", 1)[0]
                    reasons[kind] += 1
                    if reasons[kind] <= SAMPLE_PER_REASON:
                        sample.append(row)
            pii.update(result.pii_counts)
            filters.update(result.filter_counts)
            html += result.html_stripped
        if not quarantined:
            qf.write("\n")  # what write_quarantine writes for an empty quarantine
        if not rows_in:  # no rows at all: the empty frame the in-memory stage writes
            writer.write(clean_records(pd.concat([files.read_records(s) for s in sources], ignore_index=True),
                                       config).records)
    _accounted("clean", rows_in, kept=kept, quarantined=quarantined)
    return CleanSummary(rows_in, kept, quarantined, dict(pii), html, dict(filters), dict(reasons.most_common()),
                        quarantine_frame(sample))


@dataclass
class SplitSummary:
    train: int
    eval: int
    decontaminated: int
    preference_rows: int
    train_records: int
    first_train: dict = field(default_factory=dict)
    decontaminated_sample: list[dict] = field(default_factory=list)  # the first five removed


_SPLIT_COLUMNS = ["record_id", "kind", "prompt", "completion", "system", "history", "db_id"]


def _rows(source: Path, batch_rows: int):
    return record_dicts(source, batch_rows, _SPLIT_COLUMNS)


def split_to_artifact(source: Path, directory: Path, eval_fraction: float = 0.12, salt: str = "", ngram: int = 13,
                      benchmark_files: list[str] | None = None, system_prompts: dict[str, str] | None = None,
                      every_assistant_turn: bool = True, batch_rows: int = BATCH_ROWS) -> SplitSummary:
    """``split_stage`` from the record artifact ``source`` to ``directory``'s train / eval / decontaminated files.

    Pass 1 writes eval, keeps the eval prompts (the decontamination references) and notes each row's side (a
    byte a row: the content hash is most of this stage's work, so it runs once); pass 2 builds each batch's train
    examples, removes those sharing an n-gram with a reference, and writes the rest.
    """
    references: list[tuple[str, str]] = []
    n_eval = preference = 0
    in_train = bytearray()  # one per row, in the artifact's order (both passes read it the same way)
    with files.examples_path(directory, "eval").open("w", encoding="utf-8") as out:
        for rows in _rows(source, batch_rows):
            for row in rows:
                train_row = row["kind"] == "sft"
                if row["kind"] == "preference":
                    preference += 1
                elif train_row and is_eval(row["prompt"], row["completion"], eval_fraction, salt,
                                           row.get("history") or ""):
                    train_row = False
                    example = to_chat_example(row, system_prompts)
                    out.write(json.dumps(example, ensure_ascii=False) + "\n")
                    references.append((example["prompt"][-1]["content"], f"eval:{example['record_id']}"))
                    n_eval += 1
                in_train.append(train_row)
    if benchmark_files:
        bench = ingest_drops([Path(f) for f in benchmark_files]).records
        references += [(p, f"benchmark:{rid}") for p, rid in zip(bench["prompt"], bench["record_id"], strict=True)
                       if len(p.split()) >= MIN_REFERENCE_WORDS]
    index = Decontaminator([t for t, _ in references], ngram)
    summary = SplitSummary(0, n_eval, 0, preference, 0)
    train_ids: set[str] = set()
    with (files.examples_path(directory, "train").open("w", encoding="utf-8") as train_out,
          files.examples_path(directory, "decontaminated").open("w", encoding="utf-8") as removed_out):
        position = 0
        for rows in _rows(source, batch_rows):
            train = []
            for row in rows:
                if in_train[position]:
                    train += side_examples(row, "train", system_prompts, every_assistant_turn)
                position += 1
            train_ids.update(source_record_id(r) for r in train)
            hits = index.find([r["prompt"][-1]["content"] for r in train])
            removed = [{**train[i], "matched_ngram": gram, "matched": references[j][1]} for i, j, gram in hits]
            dropped = {i for i, _, _ in hits}
            for i, example in enumerate(train):
                if i not in dropped:
                    train_out.write(json.dumps(example, ensure_ascii=False) + "\n")
                    summary.train += 1
                    summary.first_train = summary.first_train or example
            removed_out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in removed)
            summary.decontaminated += len(removed)
            summary.decontaminated_sample += removed[: 5 - len(summary.decontaminated_sample)]
    if position != len(in_train):  # the two passes must see the same rows
        raise RuntimeError(f"{source} changed while it was split: {len(in_train)} rows, then {position}")
    summary.train_records = len(train_ids)
    _accounted("split", record_rows([source]), train=summary.train_records, eval=n_eval, preference=preference)
    return summary
