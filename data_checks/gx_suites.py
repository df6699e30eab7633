"""Great Expectations suites for the data stages, and a runner that summarizes results.

No Dagster here: the suites are plain lists of GX expectations, so the
pre-flight command and tests can run them too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

EMAIL_REGEX = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"


@dataclass
class ExpectationOutcome:
    expectation: str
    kwargs: dict
    success: bool
    unexpected_count: int | None = None
    unexpected_examples: list = field(default_factory=list)
    observed_value: object = None


@dataclass
class SuiteResult:
    suite: str
    success: bool
    outcomes: list[ExpectationOutcome]

    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def markdown(self) -> str:
        lines = ["| expectation | column / args | ok | unexpected | examples |", "|---|---|---|---|---|"]
        for o in self.outcomes:
            args = ", ".join(f"{k}={v}" for k, v in o.kwargs.items() if k not in ("batch_id",))
            examples = "; ".join(repr(x)[:60] for x in o.unexpected_examples[:3])
            lines.append(f"| {o.expectation} | {args} | {'yes' if o.success else 'NO'} | "
                         f"{o.unexpected_count if o.unexpected_count is not None else o.observed_value} | {examples} |")
        return "\n".join(lines)


def clean_records_suite(min_rows: int = 50, max_prompt_chars: int = 1000) -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
        gxe.ExpectColumnValuesToNotBeNull(column="prompt"),
        gxe.ExpectColumnValuesToNotBeNull(column="completion"),
        gxe.ExpectColumnValuesToBeUnique(column="record_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1, max_value=max_prompt_chars),
        gxe.ExpectColumnValueLengthsToBeBetween(column="completion", min_value=1),
        gxe.ExpectColumnValuesToNotMatchRegex(column="prompt", regex=EMAIL_REGEX),
        gxe.ExpectColumnValuesToNotMatchRegex(column="completion", regex=EMAIL_REGEX),
    ]


def sft_split_suite(min_train_rows: int = 50, min_eval_rows: int = 10, eval_prompts: list[str] | None = None) -> list:
    """Checks on the train split (one row per example, ``split`` says which side)."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeUnique(column="record_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="user", min_value=1),
        gxe.ExpectColumnValueLengthsToBeBetween(column="assistant", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "eval"]),
        gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train", "eval"]),
        gxe.ExpectTableRowCountToBeBetween(min_value=min_train_rows + min_eval_rows),
    ]


def validate_frame(frame: pd.DataFrame, suite_name: str, expectations: list,
                   result_format: str = "COMPLETE") -> SuiteResult:
    """Run ``expectations`` on ``frame`` in an ephemeral GX context."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    batch_definition = (context.data_sources.add_pandas("ftops")
                        .add_dataframe_asset(suite_name)
                        .add_batch_definition_whole_dataframe("whole"))
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format=result_format)
    outcomes = []
    for r in result.results:
        details = r.result or {}
        kwargs = {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}
        outcomes.append(ExpectationOutcome(
            expectation=r.expectation_config.type, kwargs=kwargs, success=bool(r.success),
            unexpected_count=details.get("unexpected_count"),
            unexpected_examples=list(details.get("partial_unexpected_list") or [])[:10],
            observed_value=details.get("observed_value"),
        ))
    return SuiteResult(suite_name, bool(result.success), outcomes)
