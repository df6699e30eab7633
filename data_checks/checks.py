"""Blocking Dagster asset checks built from the Great Expectations suites.

A failing blocking check stops the run: nothing downstream of the checked
asset (and so no training) materializes. Each check builds GX Data Docs into
the artifact store and links them from its metadata.
"""

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from data_checks.gate_results import run_suite, suite_check_result
from ft_assets.data import artifact_files as files
from ft_assets.data.suites import (
    clean_records_suite,
    deduped_records_suite,
    records_gate_frame,
    sft_frame,  # noqa: F401 - its home before it moved to the logic layer
    sft_frame_from_files,
    sft_split_suite,
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
    # Every row, with the derived columns built a batch at a time (the same as prepare_records of the whole).
    frame = records_gate_frame(clean_records.path)
    suite, docs = run_suite(gx, artifact_store, frame, "clean_records", clean_records_suite(MIN_CLEAN_ROWS),
                            clean_records)
    return suite_check_result(suite, docs, frame, files.read_quarantine(clean_records.path), rows=len(frame))


@asset_check(asset="deduped_records", blocking=True,
             description="GX suite: as clean, plus no duplicate left under the normalized example key")
def deduped_records_gate(deduped_records: Artifact, gx: GreatExpectationsResource,
                         artifact_store: ArtifactStore) -> AssetCheckResult:
    frame = records_gate_frame(deduped_records.path, keys=True)
    suite, docs = run_suite(gx, artifact_store, frame, "deduped_records", deduped_records_suite(MIN_CLEAN_ROWS),
                            deduped_records)
    return suite_check_result(suite, docs, frame, rows=len(frame))


@asset_check(asset="sft_dataset", blocking=True,
             description="GX suite: both splits large enough, chat role order, no empty turns, no train/eval overlap")
def sft_dataset_gate(sft_dataset: Artifact, gx: GreatExpectationsResource,
                     artifact_store: ArtifactStore) -> AssetCheckResult:
    frame = sft_frame_from_files(sft_dataset.path)
    n_train, n_eval = int((frame["split"] == "train").sum()), int((frame["split"] == "eval").sum())
    suite, docs = run_suite(gx, artifact_store, frame, "sft_dataset", sft_split_suite(MIN_TRAIN_ROWS, MIN_EVAL_ROWS),
                            sft_dataset)
    result = suite_check_result(suite, docs, frame, train_rows=n_train, eval_rows=n_eval)
    enough = n_train >= MIN_TRAIN_ROWS and n_eval >= MIN_EVAL_ROWS
    if suite.success and not enough:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR,
                                description=f"need >= {MIN_TRAIN_ROWS} train and >= {MIN_EVAL_ROWS} eval rows, "
                                            f"got {n_train} / {n_eval}",
                                metadata=result.metadata)
    return result
