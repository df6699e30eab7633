"""Blocking Dagster asset checks built from the Great Expectations suites.

A failing blocking check stops the run: nothing downstream of the checked
asset (and so no training) materializes. Each check builds GX Data Docs into
the artifact store and links them from its metadata.
"""

import json

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from ft_assets.data import artifact_files as files
from ft_assets.data.dedup import dedup_key, example_keys
from ft_assets.data.records import example_rows, reason_examples
from ft_assets.data.suites import (
    SuiteResult,
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


def run_suite(gx: GreatExpectationsResource, artifact_store: ArtifactStore, frame: pd.DataFrame, suite_name: str,
              expectations: list, checked: Artifact) -> tuple[SuiteResult, str]:
    """Validate, with the Data Docs site published as an artifact of its own; returns (result, docs index path)."""
    with artifact_store.stage("data_docs") as staging:
        suite = gx.validate(frame, suite_name, expectations, docs_dir=str(staging))
        docs = artifact_store.publish(staging, {"suite": suite_name, "checked_version": checked.version,
                                                "checked_path": str(checked.path), "success": suite.success})
    return suite, str(docs.path / "index.html")


def failure_examples(suite: SuiteResult, frame: pd.DataFrame | None = None,
                     quarantine: pd.DataFrame | None = None) -> dict[str, object]:
    """Per failed expectation, the rows behind it; for a table-level failure (too few rows), why rows went:
    examples of each quarantine reason of the checked artifact."""
    out: dict[str, object] = {}
    for o in suite.failures():
        name = f"{o.expectation}({o.kwargs.get('column', '')})"
        rows = example_rows(frame, o.unexpected_record_ids) if frame is not None else []
        if rows:
            out[name] = rows
        elif o.expectation == "expect_table_row_count_to_be_between" and quarantine is not None and len(quarantine):
            out[name] = {"observed_rows": o.observed_value, "quarantined_by_reason": reason_examples(quarantine)}
        else:
            out[name] = [str(x)[:160] for x in o.unexpected_examples[:3]]
    return out


def suite_check_result(suite: SuiteResult, docs_index: str, frame: pd.DataFrame | None = None,
            quarantine: pd.DataFrame | None = None, **metadata) -> AssetCheckResult:
    failures = [f"{o.expectation}({', '.join(f'{k}={v}' for k, v in o.kwargs.items())}): "
                f"{o.unexpected_count if o.unexpected_count is not None else o.observed_value} unexpected, "
                f"e.g. {o.unexpected_examples[:3]}"
                + (f" in rows {', '.join(o.unexpected_record_ids[:5])}" if o.unexpected_record_ids else "")
                for o in suite.failures()]
    examples = {} if suite.success else failure_examples(suite, frame, quarantine)
    description = "all expectations met" if suite.success else "; ".join(failures)
    if examples:
        description += "\nexamples: " + json.dumps(examples, default=str)[:2000]
    return AssetCheckResult(
        passed=suite.success,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={"suite": suite.suite, "expectations": len(suite.outcomes), "failed": len(failures),
                  "results": MetadataValue.md(suite.markdown()), "data_docs": MetadataValue.path(docs_index),
                  "failure_examples": MetadataValue.json(examples), **metadata},
    )


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
