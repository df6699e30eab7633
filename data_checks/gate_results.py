"""What every Great Expectations gate shares: validating with Data Docs published as an artifact, and turning a
suite's result into an ``AssetCheckResult`` with example rows per failure. Wiring, no checks (the check modules
import this, not each other)."""

import json

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from ft_assets.data.records import example_rows, reason_examples
from ft_assets.data.suites import SuiteResult
from ft_assets.lineage.artifacts import Artifact
from resources import ArtifactStore, GreatExpectationsResource


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
