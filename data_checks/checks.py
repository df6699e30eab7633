"""Blocking Dagster asset checks built from the Great Expectations suites.

A failing blocking check stops the run: nothing downstream of the checked
asset (and so no training) materializes.
"""


import json

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from data_checks.gx_suites import SuiteResult, clean_records_suite, sft_split_suite
from ft_assets.data.dedup import dedup_key
from ft_assets.lineage.artifacts import Artifact
from resources import GreatExpectationsResource

MIN_CLEAN_ROWS = 50
MIN_TRAIN_ROWS = 50
MIN_EVAL_ROWS = 10


def _result(suite: SuiteResult, **metadata) -> AssetCheckResult:
    failures = [f"{o.expectation}({', '.join(f'{k}={v}' for k, v in o.kwargs.items())}): "
                f"{o.unexpected_count if o.unexpected_count is not None else o.observed_value} unexpected, "
                f"e.g. {o.unexpected_examples[:3]}" for o in suite.failures()]
    return AssetCheckResult(
        passed=suite.success,
        severity=AssetCheckSeverity.ERROR,
        description="all expectations met" if suite.success else "; ".join(failures),
        metadata={"suite": suite.suite, "expectations": len(suite.outcomes), "failed": len(failures),
                  "results": MetadataValue.md(suite.markdown()), **metadata},
    )


@asset_check(asset="clean_records", blocking=True,
             description="GX suite: non-null, unique ids, lengths, no e-mails left, enough rows")
def clean_records_gate(clean_records: Artifact, gx: GreatExpectationsResource) -> AssetCheckResult:
    frame = pd.read_parquet(clean_records.path / "records.parquet")
    suite = gx.validate(frame, "clean_records", clean_records_suite(min_rows=MIN_CLEAN_ROWS))
    return _result(suite, rows=len(frame))


def sft_frame(train: list[dict], evaluation: list[dict]) -> pd.DataFrame:
    """One row per example with its split, and whether the same example sits in both splits."""
    rows = [{"record_id": r["record_id"], "split": split, "user": r["prompt"][-1]["content"],
             "assistant": r["completion"][0]["content"]}
            for split, part in (("train", train), ("eval", evaluation)) for r in part]
    frame = pd.DataFrame(rows, columns=["record_id", "split", "user", "assistant"])
    keys = [dedup_key(u, a) for u, a in zip(frame["user"], frame["assistant"], strict=False)]
    frame["key"] = keys
    both = set(frame.loc[frame["split"] == "train", "key"]) & set(frame.loc[frame["split"] == "eval", "key"])
    frame["in_both_splits"] = frame["key"].isin(both)
    return frame


@asset_check(asset="sft_dataset", blocking=True,
             description="GX suite: both splits present and large enough, no empty turns, no train/eval overlap")
def sft_dataset_gate(sft_dataset: Artifact, gx: GreatExpectationsResource) -> AssetCheckResult:
    import great_expectations.expectations as gxe

    def read(name: str) -> list[dict]:
        return [json.loads(line) for line in (sft_dataset.path / f"{name}.jsonl").read_text().splitlines() if line]

    train, evaluation = read("train"), read("eval")
    frame = sft_frame(train, evaluation)
    expectations = sft_split_suite(MIN_TRAIN_ROWS, MIN_EVAL_ROWS) + [
        gxe.ExpectColumnValuesToBeInSet(column="in_both_splits", value_set=[False]),
    ]
    suite = gx.validate(frame, "sft_dataset", expectations)
    enough = len(train) >= MIN_TRAIN_ROWS and len(evaluation) >= MIN_EVAL_ROWS
    result = _result(suite, train_rows=len(train), eval_rows=len(evaluation))
    if suite.success and not enough:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR,
                                description=f"need >= {MIN_TRAIN_ROWS} train and >= {MIN_EVAL_ROWS} eval rows, "
                                            f"got {len(train)} / {len(evaluation)}",
                                metadata=result.metadata)
    return result
