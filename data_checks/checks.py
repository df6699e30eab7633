"""Blocking Dagster asset checks built from the Great Expectations suites.

A failing blocking check stops the run: nothing downstream of the checked
asset (and so no training) materializes. Each check builds GX Data Docs into
the artifact store and links them from its metadata.
"""

import json

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from data_checks.gate_results import run_suite, suite_check_result
from ft_assets.data import artifact_files as files
from ft_assets.data.dedup import dedup_key, example_keys
from ft_assets.data.suites import (
    clean_records_suite,
    deduped_records_suite,
    prepare_records,
    sft_split_suite,
    with_pii_column,
)
from ft_assets.lineage.artifacts import Artifact
from resources import ArtifactStore, GreatExpectationsResource

MIN_CLEAN_ROWS = 50
MIN_TRAIN_ROWS = 50
MIN_EVAL_ROWS = 10


@asset_check(asset="clean_records", blocking=True,
             description="GX suite: columns and types, non-null, unique ids, lengths, no PII left, enough rows")
def clean_records_gate(clean_records: Artifact, gx: GreatExpectationsResource,
                       artifact_store: ArtifactStore) -> AssetCheckResult:
    frame = prepare_records(files.read_records(clean_records.path))
    suite, docs = run_suite(gx, artifact_store, frame, "clean_records", clean_records_suite(MIN_CLEAN_ROWS),
                            clean_records)
    return suite_check_result(suite, docs, frame, files.read_quarantine(clean_records.path), rows=len(frame))


@asset_check(asset="deduped_records", blocking=True,
             description="GX suite: as clean, plus no duplicate left under the normalized example key")
def deduped_records_gate(deduped_records: Artifact, gx: GreatExpectationsResource,
                         artifact_store: ArtifactStore) -> AssetCheckResult:
    frame = prepare_records(files.read_records(deduped_records.path))
    frame["dedup_key"] = example_keys(frame)
    suite, docs = run_suite(gx, artifact_store, frame, "deduped_records", deduped_records_suite(MIN_CLEAN_ROWS),
                            deduped_records)
    return suite_check_result(suite, docs, frame, rows=len(frame))


def sft_frame(train: list[dict], evaluation: list[dict]) -> pd.DataFrame:
    """One row per example: split, last user and assistant turns, role order, shortest turn, cross-split overlap."""
    rows, histories = [], []
    for split, part in (("train", train), ("eval", evaluation)):
        for r in part:
            # The key is the whole conversation: chats that end alike after different histories do not overlap.
            histories.append(json.dumps([t for t in r["prompt"][:-1] if t["role"] != "system"]))
            turns = r["prompt"] + r["completion"]
            rows.append({"record_id": r["record_id"], "split": split, "user": r["prompt"][-1]["content"],
                         "assistant": r["completion"][-1]["content"], "roles": ",".join(t["role"] for t in turns),
                         "shortest_turn_chars": min(len(t["content"].strip()) for t in turns)})
    frame = pd.DataFrame(rows, columns=["record_id", "split", "user", "assistant", "roles", "shortest_turn_chars"])
    frame["key"] = [dedup_key(u, a, h) for u, a, h in zip(frame["user"], frame["assistant"], histories, strict=True)]
    both = set(frame.loc[frame["split"] == "train", "key"]) & set(frame.loc[frame["split"] == "eval", "key"])
    frame["in_both_splits"] = frame["key"].isin(both)
    return with_pii_column(frame, ("user", "assistant"))


@asset_check(asset="sft_dataset", blocking=True,
             description="GX suite: both splits large enough, chat role order, no empty turns, no train/eval overlap")
def sft_dataset_gate(sft_dataset: Artifact, gx: GreatExpectationsResource,
                     artifact_store: ArtifactStore) -> AssetCheckResult:
    train, evaluation = files.read_examples(sft_dataset.path, "train"), files.read_examples(sft_dataset.path, "eval")
    frame = sft_frame(train, evaluation)
    suite, docs = run_suite(gx, artifact_store, frame, "sft_dataset", sft_split_suite(MIN_TRAIN_ROWS, MIN_EVAL_ROWS),
                            sft_dataset)
    result = suite_check_result(suite, docs, frame, train_rows=len(train), eval_rows=len(evaluation))
    enough = len(train) >= MIN_TRAIN_ROWS and len(evaluation) >= MIN_EVAL_ROWS
    if suite.success and not enough:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR,
                                description=f"need >= {MIN_TRAIN_ROWS} train and >= {MIN_EVAL_ROWS} eval rows, "
                                            f"got {len(train)} / {len(evaluation)}",
                                metadata=result.metadata)
    return result
